"""Optional: fine-tune the base encoder on labelled texts (needs the ``finetune`` extra: torch, transformers).

Frozen MiniLM embeddings give about 91% intent accuracy on a BANKING77 split; 4-6 epochs of plain
classification fine-tuning on two CPU cores give about 92%, and MPNet with its top 4 of 12 layers trained
about 93% in 15 minutes (README, "Models"; bench/eval_banking77.py). The result is an ordinary
HF directory (safetensors), which :func:`streamer.models.convert.convert_checkpoint` turns into a CTranslate2 model
like the base weights, so the worker never needs torch.

The stratified held-out split that :func:`streamer.models.heads.train_head` later uses for calibration is
excluded here (same fraction, same seed, same label order), so calibration still sees unseen examples.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.models.errors import ModelError
from streamer.models.heads import DEFAULT_SEED, DEFAULT_VAL_FRACTION, stratified_split
from streamer.models.sources import from_directory

try:  # torch is a build-time extra, never a runtime dependency
    import torch
    import transformers
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None
    transformers = None

_COPY = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyper-parameters; defaults fit BANKING77-sized data (8k texts) in about 10 minutes on 2 cores."""

    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 2e-3
    warmup: float = 0.1
    scale: float = 30.0
    label_smoothing: float = 0.1
    max_length: int = 128
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SEED
    threads: int = 0
    group_by_length: bool = True
    """Batch texts of similar length together (shuffled in groups of 50 batches): padding halves the speed
    of short-text data otherwise."""
    train_layers: int = 0
    """Train only the top N transformer layers (0: all). The embeddings and lower layers stay frozen, so
    backpropagation stops early: what makes a 12-layer encoder trainable on a few CPU cores."""


def available() -> bool:
    """True when torch and transformers are importable."""
    return torch is not None and transformers is not None


def finetune(
    source_dir: Path,
    texts: Sequence[str],
    labels: Sequence[str],
    out_dir: Path,
    settings: FinetuneSettings | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Fine-tune the BERT or MPNet encoder in ``source_dir`` with a cosine-softmax classifier over mean-pooled,
    normalised embeddings (the same pooling the runtime uses) and write an HF directory to ``out_dir``."""
    if not available():
        raise ModelError("fine-tuning needs the 'finetune' extra (torch, transformers)")
    cfg = settings or FinetuneSettings()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    keep, held = stratified_split(labels, cfg.val_fraction, cfg.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source_dir))
    model = transformers.AutoModel.from_pretrained(str(source_dir))
    model.train()
    trainable = _freeze_below(model, cfg.train_layers)
    dim = model.config.hidden_size
    head = torch.nn.Linear(dim, len(classes), bias=False)
    torch.nn.init.normal_(head.weight, std=0.02)
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": cfg.lr},
            {"params": head.parameters(), "lr": cfg.head_lr},
        ],
        weight_decay=0.01,
    )
    train_texts = [texts[i] for i in keep]
    train_y = torch.tensor([index[labels[i]] for i in keep])
    steps_per_epoch = math.ceil(len(train_texts) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(total * cfg.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rng = np.random.default_rng(cfg.seed)
    bar = _progress(total, progress)
    lengths = np.array(
        [len(ids) for ids in tokenizer(train_texts, truncation=True, max_length=cfg.max_length)["input_ids"]]
    )
    for _epoch in range(cfg.epochs):
        for idx in _batches(lengths, cfg.batch_size, rng, cfg.group_by_length):
            batch = tokenizer(
                [train_texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=cfg.max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            emb = torch.nn.functional.normalize(pooled, dim=-1)
            logits = cfg.scale * emb @ torch.nn.functional.normalize(head.weight, dim=-1).T
            loss = loss_fn(logits, train_y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update(1)
    if bar is not None:
        bar.close()
    _save(model, source_dir, out_dir)
    report = {
        "settings": asdict(cfg),
        "train_examples": len(keep),
        "excluded_held_out": len(held),
        "labels": len(classes),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out_dir / "finetune.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _freeze_below(model: Any, train_layers: int) -> list[Any]:
    """Freeze all but the top ``train_layers`` encoder layers; returns the parameters left to train."""
    layers = model.encoder.layer
    if train_layers <= 0 or train_layers >= len(layers):
        return [p for p in model.parameters() if p.requires_grad]
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = [p for layer in layers[len(layers) - train_layers :] for p in layer.parameters()]
    for param in trainable:
        param.requires_grad_(True)
    return trainable


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group_by_length: bool) -> list[np.ndarray]:
    order = rng.permutation(len(lengths))
    if group_by_length:
        mega = batch_size * 50
        order = np.concatenate(
            [
                chunk[np.argsort(-lengths[chunk], kind="stable")]
                for chunk in np.split(order, range(mega, len(order), mega))
            ]
        )
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _save(model: Any, source_dir: Path, out_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    for name in _COPY:
        if (source_dir / name).is_file():
            shutil.copy2(source_dir / name, out_dir / name)
    # A card of its own, so the bundle manifest names the fine-tuned model and keeps the base's license.
    base = from_directory(source_dir)
    name = f"{base.base_model or source_dir.name}-finetuned"
    front = [f"license: {base.model_license}"] if base.model_license else []
    front.append(f"base_model: {name}")
    (out_dir / "README.md").write_text(
        "---\n" + "\n".join(front) + f"\n---\n# {name}\n\nFine-tuned from {base.base_model} "
        "(see finetune.json) with streamer.models.finetune.\n",
        encoding="utf-8",
    )


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="fine-tune", unit="step")
