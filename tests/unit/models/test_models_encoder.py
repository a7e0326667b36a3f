"""Batch planning, device selection and encoder behaviour."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from streamer.models.encoder import Encoder, plan_batches, resolve_device
from streamer.models.errors import ModelError


@pytest.mark.parametrize("seed", range(5))
def test_plan_batches_covers_every_index_once_and_bounds_padding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 200, size=500)
    groups = plan_batches(lengths, batch_size=32, max_padding=0.2, min_batch=8)
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(500))
    for g in groups:
        assert 1 <= len(g) <= 32
        lens = lengths[g]
        assert list(lens) == sorted(lens, reverse=True)
        waste = 1 - lens.sum() / (len(g) * lens.max())
        assert waste <= 0.2 or len(g) <= 8


def test_plan_batches_without_bound_is_sorted_chunks() -> None:
    groups = plan_batches([3, 1, 2, 5, 4], batch_size=2, max_padding=1.0)
    assert [g.tolist() for g in groups] == [[3, 4], [0, 2], [1]]
    assert plan_batches([], batch_size=4) == []


def test_cuda_requested_without_gpu_falls_back_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ctranslate2.get_cuda_device_count", lambda: 0)
    with caplog.at_level(logging.WARNING, logger="streamer.models.encoder"):
        assert resolve_device("cuda", None) == ("cpu", "int8")
        assert resolve_device("cuda", "float16") == ("cpu", "int8")
    assert len([r for r in caplog.records if "falling back to CPU" in r.message]) == 2
    caplog.clear()
    assert resolve_device("auto", None) == ("cpu", "int8")
    assert resolve_device("cpu", "float32") == ("cpu", "float32")
    assert not caplog.records


def test_auto_prefers_cuda_when_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ctranslate2.get_cuda_device_count", lambda: 1)
    assert resolve_device("auto", None) == ("cuda", "float16")
    assert resolve_device("cpu", None) == ("cpu", "int8")
    with pytest.raises(ModelError):
        resolve_device("tpu", None)  # type: ignore[arg-type]


def test_order_is_restored_and_results_do_not_depend_on_batching(ct2_model: Path, weights_dir: Path) -> None:
    texts = [("word " * n).strip() + f" ticket {n}" for n in (1, 40, 3, 90, 7, 15, 2, 60, 5, 33)]
    tok = weights_dir / "tokenizer.json"
    one_by_one = Encoder(ct2_model, tok, device="cpu", compute_type="float32", batch_size=1)
    bucketed = Encoder(ct2_model, tok, device="cpu", compute_type="float32", batch_size=4, max_padding=0.1)
    plain = Encoder(ct2_model, tok, device="cpu", compute_type="float32", batch_size=4, bucketing=False)
    ref = one_by_one.encode(texts)
    for enc in (bucketed, plain):
        got = enc.encode(texts)
        assert got.shape == (10, 384) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    assert one_by_one.encode([]).shape == (0, 384)


def test_max_length_truncates(ct2_model: Path, weights_dir: Path) -> None:
    enc = Encoder(ct2_model, weights_dir / "tokenizer.json", device="cpu", max_length=16)
    ids = enc.tokenize(["word " * 100, "short"])
    assert len(ids[0]) == 16 and ids[0][0] == 101 and ids[0][-1] == 102
    assert len(ids[1]) == 3
    assert enc.info.max_length == 16 and enc.info.compute_type == "int8"
    with pytest.raises(ModelError):
        Encoder(ct2_model, weights_dir / "tokenizer.json", device="cpu", max_length=1)
