"""Model bundles: one directory with everything a worker needs to embed and classify, verified on load.

Layout::

    manifest.json   format version, provenance, encoder settings, heads, sha256 of every other file
    model/          CTranslate2 encoder (model.bin float32, config.json, vocabulary.json)
    tokenizer.json  HF fast tokenizer
    heads.npz       head weights and class centroids (no pickles)

Weights are stored in float32 so the compute type (int8 on CPU, float16 on CUDA) is chosen at load time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.models.encoder import Device, Encoder, FloatArray
from streamer.models.errors import BundleError
from streamer.models.escalation import EscalationScorer
from streamer.models.heads import Head, HeadOutput

FORMAT = "streamer-model-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_DIR = "model"
TOKENIZER = "tokenizer.json"
HEADS = "heads.npz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
    }


def save_heads(path: Path, heads: Iterable[Head]) -> None:
    """Write head arrays to one ``.npz``; labels and scalars go to the manifest."""
    arrays: dict[str, FloatArray] = {}
    for head in heads:
        for i, (w, b) in enumerate(head.layers):
            arrays[f"{head.name}/W{i}"] = np.ascontiguousarray(w, dtype=np.float32)
            arrays[f"{head.name}/b{i}"] = np.ascontiguousarray(b, dtype=np.float32)
        arrays[f"{head.name}/centroids"] = np.ascontiguousarray(head.centroids, dtype=np.float32)
        if _keeps_exemplars(head) and head.exemplars is not None and head.exemplar_labels is not None:
            # float16 halves the file; cosine similarities move by ~1e-3, far below the vote's resolution.
            arrays[f"{head.name}/exemplars"] = np.ascontiguousarray(head.exemplars, dtype=np.float16)
            arrays[f"{head.name}/exemplar_labels"] = np.ascontiguousarray(head.exemplar_labels, dtype=np.int32)
            if head.exemplar_radius is not None:
                arrays[f"{head.name}/exemplar_radius"] = np.ascontiguousarray(head.exemplar_radius, dtype=np.float32)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _keeps_exemplars(head: Head) -> bool:
    return head.knn_weight > 0 or head.escalation is not None


def head_manifest(head: Head) -> dict[str, Any]:
    """The manifest entry of a head (everything but its arrays)."""
    entry = {
        "labels": head.labels,
        "kind": "zeroshot" if head.kind == "zeroshot" else "trained",
        "classifier": head.kind,
        "layers": len(head.layers),
        "temperature": head.temperature,
        "knn_weight": head.knn_weight,
        "exemplars": 0 if head.exemplars is None or not _keeps_exemplars(head) else len(head.exemplars),
        "thresholds": {"oos_score": head.oos_threshold, "confidence": head.confidence_cutoffs},
        "metrics": head.metrics,
        "settings": head.settings,
    }
    if head.escalation is not None:
        entry["escalation"] = head.escalation.to_json()
    return entry


def _load_heads(root: Path, entries: dict[str, Any]) -> dict[str, Head]:
    path = root / HEADS
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read head arrays ({exc})", str(path)) from exc
    heads: dict[str, Head] = {}
    with data:
        for name, entry in entries.items():
            try:
                layers = [
                    (data[f"{name}/W{i}"].astype(np.float32), data[f"{name}/b{i}"].astype(np.float32))
                    for i in range(int(entry["layers"]))
                ]
                centroids = data[f"{name}/centroids"].astype(np.float32)
                thresholds = entry.get("thresholds", {})
                head = Head(
                    name=name,
                    kind=entry["classifier"],
                    labels=list(entry["labels"]),
                    layers=layers,
                    centroids=centroids,
                    temperature=float(entry["temperature"]),
                    oos_threshold=float(thresholds.get("oos_score", 1.0)),
                    confidence_cutoffs={str(k): float(v) for k, v in thresholds.get("confidence", {}).items()},
                    metrics=dict(entry.get("metrics", {})),
                    settings=dict(entry.get("settings", {})),
                )
                if float(entry.get("knn_weight", 0.0)) > 0 or "escalation" in entry:
                    head.knn_weight = float(entry.get("knn_weight", 0.0))
                    head.exemplars = data[f"{name}/exemplars"].astype(np.float32)
                    head.exemplar_labels = data[f"{name}/exemplar_labels"].astype(np.int64)
                if "escalation" in entry:
                    head.escalation = EscalationScorer.from_json(entry["escalation"])
                    head.exemplar_radius = data[f"{name}/exemplar_radius"].astype(np.float32)
            except (KeyError, ValueError, TypeError) as exc:
                raise BundleError(f"{path}: head {name!r} is incomplete ({exc})", str(path)) from exc
            if layers[-1][0].shape[1] != len(head.labels):
                raise BundleError(
                    f"{path}: head {name!r} has {len(head.labels)} labels but {layers[-1][0].shape[1]} outputs",
                    str(path),
                )
            heads[name] = head
    return heads


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and check the manifest's format and version (no file hashing)."""
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing", str(path))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})", str(path)) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a {FORMAT} manifest", str(path))
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r} is not supported (this runtime reads {FORMAT_VERSION})",
            str(path),
        )
    return manifest


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    """Check that every file the manifest lists exists and has its recorded sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{root / MANIFEST}: no file hashes recorded", str(root / MANIFEST))
    for rel in (f"{MODEL_DIR}/model.bin", TOKENIZER, HEADS):
        if rel not in files:
            raise BundleError(f"{root / MANIFEST}: required file {rel} is not listed", str(root / rel))
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle file {rel} is missing from {root}", str(path))
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle file {rel} is corrupt: sha256 {actual[:12]}… differs from the manifest's "
                f"{str(expected)[:12]}…",
                str(path),
            )


@dataclass
class Bundle:
    """A loaded bundle: one encoder and the heads that share its embeddings."""

    path: Path
    manifest: dict[str, Any]
    encoder: Encoder
    heads: dict[str, Head]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def model_version(self) -> str:
        """``name@version``, the tag every output of this bundle carries."""
        return f"{self.name}@{self.version}"

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Unit-norm embeddings, ``(len(texts), dim)`` float32."""
        return self.encoder.encode(texts)

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> dict[str, HeadOutput]:
        """Embed ``texts`` once and apply every head (or those named in ``heads``)."""
        return self.predict_embeddings(self.embed(texts), heads)

    def predict_embeddings(self, embeddings: FloatArray, heads: Sequence[str] | None = None) -> dict[str, HeadOutput]:
        names = list(self.heads) if heads is None else list(heads)
        unknown = [n for n in names if n not in self.heads]
        if unknown:
            raise KeyError(f"unknown head(s) {unknown}; bundle has {sorted(self.heads)}")
        return {n: self.heads[n].predict(embeddings) for n in names}


def load_bundle(
    path: str | Path,
    *,
    device: Device = "auto",
    compute_type: str | None = None,
    verify: bool = True,
    intra_threads: int = 0,
    inter_threads: int = 1,
    batch_size: int = 64,
    bucketing: bool = True,
) -> Bundle:
    """Load a bundle directory; with ``verify`` (default) every file's sha256 is checked first.

    Raises :class:`BundleError` naming the file on a missing or corrupt file or an unsupported format.
    ``compute_type`` defaults to int8 on CPU and float16 on CUDA (see :func:`resolve_device`).
    """
    root = Path(path)
    manifest = read_manifest(root)
    if verify:
        verify_files(root, manifest)
    enc = manifest.get("encoder", {})
    heads = _load_heads(root, manifest.get("heads", {}))
    try:
        encoder = Encoder(
            root / MODEL_DIR,
            root / TOKENIZER,
            max_length=int(enc.get("max_length", 256)),
            pooling=enc.get("pooling", "mean"),
            normalize=bool(enc.get("normalize", True)),
            device=device,
            compute_type=compute_type,
            intra_threads=intra_threads,
            inter_threads=inter_threads,
            batch_size=batch_size,
            bucketing=bucketing,
        )
    except (RuntimeError, ValueError, OSError) as exc:  # CTranslate2/tokenizers report load failures so
        raise BundleError(f"{root}: cannot load encoder ({exc})", str(root / MODEL_DIR)) from exc
    for head in heads.values():
        if head.layers[0][0].shape[0] != encoder.dim:
            raise BundleError(
                f"head {head.name!r} expects dim {head.layers[0][0].shape[0]}, encoder gives {encoder.dim}",
                str(root / HEADS),
            )
    return Bundle(root, manifest, encoder, heads)
