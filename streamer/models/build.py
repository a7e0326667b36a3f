"""Build a bundle: convert base weights, train or describe heads on the shared embedding, write the
manifest last so a half-written directory never passes as a bundle."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import platform
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamer.models import bundle as bundle_mod
from streamer.models.convert import convert_checkpoint
from streamer.models.data import read_examples, read_texts
from streamer.models.encoder import DEFAULT_MAX_LENGTH, Encoder, FloatArray
from streamer.models.errors import DataError, ModelError
from streamer.models.escalation import DEFAULT_RATE
from streamer.models.heads import (
    DEFAULT_SEED,
    DEFAULT_VAL_FRACTION,
    Head,
    load_zero_shot_yaml,
    train_head,
    zero_shot_head,
)
from streamer.models.sources import WeightsSource, resolve_source

EMBED_CHUNK = 256


WEIGHT_TYPES = ("float32", "int8", "float16")
"""How a bundle may store its encoder weights (see :func:`build_bundle`)."""


@dataclass(frozen=True)
class HeadSpec:
    """One head to build: trained from ``train`` files (concatenated) or zero-shot from a YAML file."""

    name: str
    train: tuple[Path, ...] = ()
    zero_shot: Path | None = None
    text_col: str = "text"
    label_col: str = "label"
    classifier: Literal["logreg", "mlp"] = "logreg"
    l2: float | None = None
    knn_weight: float | None = None
    """Share of the nearest-neighbour vote; ``None`` chooses it on the calibration split."""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.train) == (self.zero_shot is not None):
            raise ModelError(f"head {self.name!r}: give training files or a zero-shot YAML, not both or neither")


def merge_specs(specs: Sequence[HeadSpec]) -> list[HeadSpec]:
    """Fold repeated trained heads of the same name into one whose training files are concatenated."""
    merged: dict[str, HeadSpec] = {}
    for spec in specs:
        prev = merged.get(spec.name)
        if prev is None:
            merged[spec.name] = spec
        elif prev.zero_shot is None and spec.zero_shot is None:
            merged[spec.name] = HeadSpec(
                spec.name,
                prev.train + spec.train,
                None,
                prev.text_col,
                prev.label_col,
                prev.classifier,
                prev.l2,
                prev.knn_weight,
                prev.options,
            )
        else:
            raise ModelError(f"head {spec.name!r} is given twice and one of them is zero-shot")
    return list(merged.values())


def build_bundle(
    out_dir: str | Path,
    name: str,
    version: str,
    heads: Sequence[HeadSpec],
    *,
    source: str | Path | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    compute_type: str = "int8",
    weights: str = "float32",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    escalate_rate: float | None = DEFAULT_RATE,
    oos_examples: Sequence[Path] = (),
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build a bundle directory ``out_dir`` and return its path.

    ``compute_type`` is used to embed the training data; it should match how the bundle will mostly run
    (int8 on CPU) so heads are fitted to the embeddings they will see. ``weights`` is how the model is
    stored: float32 (default) lets each worker pick int8 on CPU or float16 on GPU from one artefact;
    ``int8`` makes it four times smaller for fleets that only run int8 on CPU; ``float16`` halves it for
    GPU fleets. CTranslate2 converts stored weights to another compute type at load when asked.
    ``escalate_rate`` is the escalation budget: trained heads get an escalation score and the threshold that
    escalates that share of their calibration split (``None``: no score; the worker falls back to fixed
    confidence cut-offs). Held-out classes left out in turn serve as unknown intents when fitting it;
    ``oos_examples`` (files of texts, one per line or with a ``text`` column) add texts known to be out of
    scope for every trained head, such as another input's texts.
    """
    if weights not in WEIGHT_TYPES:
        raise ModelError(f"weights must be one of {', '.join(WEIGHT_TYPES)}, not {weights!r}")
    out = Path(out_dir)
    if out.exists() and not force:
        raise ModelError(f"{out} exists; pass force=True to replace it")
    specs = merge_specs(heads)
    if not specs:
        raise ModelError("a bundle needs at least one head")
    src: WeightsSource = resolve_source(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 would make the bundle unreadable to a worker running as another user; mkdir
    # gives what the umask allows, like every other folder.
    staging = out.parent / f".{out.name}.{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        conversion = convert_checkpoint(
            src.path, staging / bundle_mod.MODEL_DIR, quantization=None if weights == "float32" else weights
        )
        if max_length > conversion.max_positions:
            raise ModelError(f"max_length {max_length} exceeds the model's {conversion.max_positions} positions")
        shutil.copy2(src.path / "tokenizer.json", staging / bundle_mod.TOKENIZER)
        encoder = Encoder(
            staging / bundle_mod.MODEL_DIR,
            staging / bundle_mod.TOKENIZER,
            max_length=max_length,
            device="cpu",
            compute_type=compute_type,
        )
        data = {s.name: _embed_head_data(s, encoder, progress) for s in specs if s.zero_shot is None}
        negatives = {
            f"file:{p.name}": embed_texts(encoder, read_texts(p), desc=f"embed {p.name}", progress=progress)
            for p in oos_examples
        }
        built: list[Head] = []
        for spec in specs:
            built.append(_build_head(spec, encoder, val_fraction, seed, escalate_rate, data, negatives))
        bundle_mod.save_heads(staging / bundle_mod.HEADS, built)
        manifest = {
            "format": bundle_mod.FORMAT,
            "format_version": bundle_mod.FORMAT_VERSION,
            "name": name,
            "version": version,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {
                "package": src.package,
                "version": src.package_version,
                # the weights' license (model card) governs use; the package's covers its packaging code
                "license": src.model_license or src.package_license,
                "package_license": src.package_license,
                "local_path": None if src.package else str(src.path),
                "finetune": _finetune_report(src.path),
            },
            "base_model": src.base_model,
            "encoder": {
                "max_length": max_length,
                "dim": conversion.dim,
                "pooling": "mean",
                "normalize": True,
                "layers": conversion.num_layers,
                "vocab_size": conversion.vocab_size,
                "weights": weights,
            },
            "heads": {h.name: bundle_mod.head_manifest(h) for h in built},
            "build": {
                "embed_compute_type": compute_type,
                "val_fraction": val_fraction,
                "seed": seed,
                "escalate_rate": escalate_rate,
                "oos_examples": [p.name for p in oos_examples],
                "conversion_seconds": round(conversion.seconds, 3),
                "heads": [_spec_json(s) for s in specs],
                "versions": _versions(),
            },
            "files": bundle_mod.hash_tree(staging),
        }
        (staging / bundle_mod.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def embed_texts(encoder: Encoder, texts: Sequence[str], *, desc: str, progress: bool) -> FloatArray:
    """Embed in chunks so a progress bar (tqdm, stderr) can follow long training files."""
    from tqdm import tqdm

    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), EMBED_CHUNK):
            chunk = texts[start : start + EMBED_CHUNK]
            out[start : start + len(chunk)] = encoder.encode(chunk)
            bar.update(len(chunk))
    return out


@dataclass(frozen=True)
class _HeadData:
    texts: list[str]
    labels: list[str]
    embeddings: FloatArray


def _embed_head_data(spec: HeadSpec, encoder: Encoder, progress: bool) -> _HeadData:
    texts: list[str] = []
    labels_: list[str] = []
    for path in spec.train:
        t, lab = read_examples(path, spec.text_col, spec.label_col)
        texts.extend(t)
        labels_.extend(lab)
    if len(set(labels_)) < 2:
        raise DataError(f"head {spec.name!r}: training data has fewer than two labels")
    return _HeadData(texts, labels_, embed_texts(encoder, texts, desc=f"embed {spec.name}", progress=progress))


def _build_head(
    spec: HeadSpec,
    encoder: Encoder,
    val_fraction: float,
    seed: int,
    escalate_rate: float | None,
    data: dict[str, _HeadData],
    negatives: dict[str, FloatArray],
) -> Head:
    if spec.zero_shot is not None:
        labels, options = load_zero_shot_yaml(spec.zero_shot)
        return zero_shot_head(spec.name, labels, encoder.encode, **options)
    own = data[spec.name]
    return train_head(
        spec.name,
        own.embeddings,
        own.labels,
        kind=spec.classifier,
        l2=spec.l2,
        val_fraction=val_fraction,
        seed=seed,
        knn_weight=spec.knn_weight,
        escalate_rate=escalate_rate,
        negatives=negatives,
    )


def _spec_json(spec: HeadSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "train": [p.name for p in spec.train],
        "zero_shot": spec.zero_shot.name if spec.zero_shot else None,
        "text_col": spec.text_col,
        "label_col": spec.label_col,
        "classifier": "zeroshot" if spec.zero_shot else spec.classifier,
        "knn_weight": "auto" if spec.knn_weight is None else spec.knn_weight,
    }


def _finetune_report(path: Path) -> Any:
    report = path / "finetune.json"
    return json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("ctranslate2", "tokenizers", "numpy", "safetensors"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out
