"""Sentence encoder: fast tokenizer → CTranslate2 encoder → mean pooling → L2 normalisation.

Texts are sorted by token length and cut into sub-batches whose padding waste is bounded, because padded
positions cost as much compute as real ones; results are returned in the caller's order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ctranslate2
import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from streamer.models.convert import InputLayout
from streamer.models.errors import ModelError

logger = logging.getLogger(__name__)

Device = Literal["cpu", "cuda", "auto"]
Pooling = Literal["mean", "cls"]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

DEFAULT_MAX_LENGTH = 256
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_PADDING = 0.25


def resolve_device(device: Device, compute_type: str | None) -> tuple[str, str]:
    """Pick the device and compute type actually used.

    ``auto`` takes CUDA when CTranslate2 sees a GPU. CUDA requested but absent falls back to CPU with one
    warning, so a GPU config still runs (slower) on a CPU host instead of failing at start-up. The default
    compute type is int8 on CPU (fastest from batch 8 up, cosine ≥ 0.99 to float32) and float16 on CUDA.
    """
    if device not in ("cpu", "cuda", "auto"):
        raise ModelError(f"device must be cpu, cuda or auto, not {device!r}")
    has_cuda = ctranslate2.get_cuda_device_count() > 0
    chosen = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
    if chosen == "cuda" and not has_cuda:
        logger.warning("CUDA requested but no CUDA device is visible to CTranslate2; falling back to CPU")
        chosen = "cpu"
        if compute_type in ("float16", "int8_float16", "bfloat16", "int8_bfloat16"):
            compute_type = None
    if compute_type is None:
        compute_type = "float16" if chosen == "cuda" else "int8"
    return chosen, compute_type


def plan_batches(
    lengths: Sequence[int] | IntArray,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_padding: float = DEFAULT_MAX_PADDING,
    min_batch: int = 8,
) -> list[IntArray]:
    """Group indices into sub-batches, longest first.

    A sub-batch holds at most ``batch_size`` items; once it holds ``min_batch`` items it is closed before the
    share of padded positions would exceed ``max_padding``. ``max_padding=1`` disables the bound (plain
    sorted chunks); the order inside and across groups is by descending length.
    """
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    groups: list[IntArray] = []
    start = 0
    total = 0
    for pos, idx in enumerate(order):
        n = pos - start
        if n:
            longest = int(lens[order[start]])
            waste = 1.0 - (total + int(lens[idx])) / ((n + 1) * longest)
            if n >= batch_size or (n >= min_batch and waste > max_padding):
                groups.append(order[start:pos])
                start, total = pos, 0
        total += int(lens[idx])
    if len(order):
        groups.append(order[start:])
    return groups


@dataclass(frozen=True)
class EncoderInfo:
    """Runtime facts about a loaded encoder, for logs and metrics."""

    device: str
    compute_type: str
    dim: int
    max_length: int
    pooling: str


class Encoder:
    """Embed texts with a CTranslate2 BERT encoder.

    Args:
        model_dir: CTranslate2 model directory (``model.bin``, ``config.json``, vocabulary).
        tokenizer_path: HF ``tokenizer.json``; its own padding/truncation settings are replaced.
        max_length: tokens kept per text, special tokens included (default 256, as the model was trained).
        device: ``cpu``, ``cuda`` or ``auto`` (default ``auto``).
        compute_type: CTranslate2 compute type; default int8 on CPU, float16 on CUDA.
        intra_threads: threads per batch (0: CTranslate2's default, 4 threads).
        inter_threads: batches run in parallel (default 1).
        batch_size: most texts per forward pass (default 64).
        max_padding: bound on the share of padded positions in a sub-batch (default 0.25).
        bucketing: sort by length and split to bound padding (default on); off keeps arrival order.
        pooling: ``mean`` over real tokens (sentence-transformers' choice for MiniLM) or ``cls``.
        normalize: L2-normalise embeddings so a dot product is a cosine (default on).
    """

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer_path: str | Path,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        device: Device = "auto",
        compute_type: str | None = None,
        intra_threads: int = 0,
        inter_threads: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_padding: float = DEFAULT_MAX_PADDING,
        bucketing: bool = True,
        pooling: Pooling = "mean",
        normalize: bool = True,
    ) -> None:
        if max_length < 2:
            raise ModelError("max_length must leave room for [CLS] and [SEP]")
        if batch_size < 1:
            raise ModelError("batch_size must be positive")
        if pooling not in ("mean", "cls"):
            raise ModelError(f"pooling must be mean or cls, not {pooling!r}")
        self.device, self.compute_type = resolve_device(device, compute_type)
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_padding = max_padding
        self.bucketing = bucketing
        self.pooling = pooling
        self.normalize = normalize
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self._layout = InputLayout.read(Path(model_dir))
        self._model = ctranslate2.Encoder(
            str(model_dir),
            device=self.device,
            compute_type=self.compute_type,
            intra_threads=intra_threads,
            inter_threads=inter_threads,
        )
        self.dim = int(self._forward(self.tokenize([""]))[0].shape[-1])

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(self.device, self.compute_type, self.dim, self.max_length, self.pooling)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, without padding."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> FloatArray:
        """Embed ``texts``; returns ``(len(texts), dim)`` float32 in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        if self.bucketing:
            groups = plan_batches(lengths, self.batch_size, self.max_padding)
        else:
            step = self.batch_size
            groups = [np.arange(s, min(s + step, len(ids))) for s in range(0, len(ids), step)]
        for group in groups:
            hidden, lens = self._forward([ids[i] for i in group])
            out[group] = self._pool(hidden, lens)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out

    def _forward(self, batch: list[list[int]]) -> tuple[FloatArray, IntArray]:
        """Pad ``batch`` into a dense int32 array (cheaper to hand over than nested lists) and run it."""
        lens = np.fromiter((len(x) for x in batch), dtype=np.int32, count=len(batch))
        dense = np.zeros((len(batch), int(lens.max())), dtype=np.int32)
        for row, seq in enumerate(batch):
            dense[row, : len(seq)] = seq
        # token_type_ids default to 0, which is what single-segment BERT inputs use; models that keep their
        # absolute positions in that slot (MPNet) get the positions instead.
        second: list[list[int]] | None = None
        if self._layout.positions_as_second_input:
            offset = self._layout.position_offset
            second = [list(range(offset, offset + dense.shape[1]))] * len(batch)
        output = self._model.forward_batch(
            ctranslate2.StorageView.from_array(dense), ctranslate2.StorageView.from_array(lens), second
        )
        hidden = output.last_hidden_state
        if self.device != "cpu":
            # float16/bfloat16 outputs: widen on the GPU (bfloat16 has no numpy dtype), then copy to host.
            hidden = hidden.to(ctranslate2.DataType.float32).to_device(ctranslate2.Device.cpu)
        array = np.asarray(hidden)
        return array.astype(np.float32, copy=False), lens.astype(np.int64)

    def _pool(self, hidden: FloatArray, lens: IntArray) -> FloatArray:
        if self.pooling == "cls":
            return hidden[:, 0, :]
        mask = (np.arange(hidden.shape[1])[None, :] < lens[:, None]).astype(np.float32)
        summed = np.einsum("bld,bl->bd", hidden, mask)
        pooled: FloatArray = summed / lens[:, None].astype(np.float32)
        return pooled
