"""Optional fine-tuning (``finetune`` extra): runs only where torch and transformers are installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamer.models.convert import convert_checkpoint
from streamer.models.finetune import FinetuneSettings, available, finetune


def test_reports_missing_extra_clearly(tiny_bert: Path, tmp_path: Path) -> None:
    if available():
        pytest.skip("torch is installed here")
    from streamer.models.errors import ModelError

    with pytest.raises(ModelError, match="finetune"):
        finetune(tiny_bert, ["a", "b"], ["x", "y"], tmp_path / "out")


def test_finetune_writes_a_convertible_checkpoint(tiny_bert: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    source = tmp_path / "tiny"
    shutil.copytree(tiny_bert, source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    texts = ["hello world", "my card is late", "refund my card", "hello", "late card", "refund"] * 3
    labels = ["greet", "late", "refund", "greet", "late", "refund"] * 3
    out = finetune(source, texts, labels, tmp_path / "ft", FinetuneSettings(epochs=1, batch_size=4), progress=False)
    report = json.loads((out / "finetune.json").read_text())
    assert report["train_examples"] + report["excluded_held_out"] == len(texts)
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "base_model: tiny-finetuned" in card
    convert_checkpoint(out, tmp_path / "ct2")
    assert (tmp_path / "ct2" / "model.bin").stat().st_size > 0


def test_training_only_the_top_layer_leaves_the_rest_untouched(tiny_mpnet: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from safetensors.numpy import load_file

    texts = ["hello world", "my card is late", "refund my card", "hello", "late card", "refund"] * 3
    labels = ["greet", "late", "refund", "greet", "late", "refund"] * 3
    settings = FinetuneSettings(epochs=2, batch_size=4, train_layers=1, lr=1e-2)
    out = finetune(tiny_mpnet, texts, labels, tmp_path / "ft", settings, progress=False)
    before, after = load_file(str(tiny_mpnet / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = {name for name in before if name in after and not np.array_equal(before[name], after[name])}
    assert changed and all(name.startswith("encoder.layer.1.") for name in changed), sorted(changed)
    convert_checkpoint(out, tmp_path / "ct2")  # an MPNet checkpoint again, ready for a bundle
    assert (tmp_path / "ct2" / "streamer_encoder.json").is_file()
