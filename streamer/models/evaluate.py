"""Quality metrics of a head on labelled data, as a JSON-able dict.

Selective accuracy answers the operational question: if the least confident 5/10/20% of traffic is
escalated to a large model, how accurate is what the small model keeps?
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.models.bundle import Bundle
from streamer.models.data import read_examples
from streamer.models.errors import DataError
from streamer.models.heads import ESCALATION_SHARES, expected_calibration_error

ECE_BINS = 15


def macro_f1(pred: npt.NDArray[np.int64], true: npt.NDArray[np.int64], k: int) -> float:
    """Unweighted mean of per-class F1 over classes that occur in ``true`` or ``pred``."""
    scores = []
    for c in range(k):
        tp = int(np.sum((pred == c) & (true == c)))
        fp = int(np.sum((pred == c) & (true != c)))
        fn = int(np.sum((pred != c) & (true == c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def selective_accuracy(
    confidence: npt.NDArray[Any], correct: npt.NDArray[np.bool_], escalate: float
) -> dict[str, float]:
    """Accuracy on the examples kept when the ``escalate`` share with the lowest confidence is removed."""
    n = len(correct)
    drop = round(n * escalate)
    order = np.argsort(confidence, kind="stable")
    kept = order[drop:]
    return {
        "escalated": drop / n if n else 0.0,
        "accuracy_kept": float(correct[kept].mean()) if len(kept) else 0.0,
        "confidence_cutoff": float(confidence[order[drop]]) if drop < n else 1.0,
    }


def classification_metrics(
    probs: npt.NDArray[Any], true: npt.NDArray[np.int64], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE (15 bins), selective accuracy at 5/10/20% escalation.

    ``true`` uses -1 for labels the head does not know; they count as errors.
    """
    pred = probs.argmax(axis=1).astype(np.int64)
    conf = probs.max(axis=1)
    correct = pred == true
    return {
        "examples": len(true),
        "accuracy": float(correct.mean()),
        "macro_f1": macro_f1(pred, true, len(labels)),
        "ece": expected_calibration_error(probs, true, bins=ECE_BINS),
        "mean_confidence": float(conf.mean()),
        "selective": {str(s): selective_accuracy(conf, correct, s) for s in ESCALATION_SHARES},
    }


def evaluate(
    bundle: Bundle,
    data_file: str | Path,
    head: str,
    *,
    text_col: str = "text",
    label_col: str = "label",
) -> dict[str, Any]:
    """Score ``head`` of ``bundle`` on a labelled file; see :func:`classification_metrics`."""
    if head not in bundle.heads:
        raise DataError(f"bundle {bundle.model_version} has no head {head!r}; heads: {sorted(bundle.heads)}")
    texts, gold = read_examples(Path(data_file), text_col, label_col)
    h = bundle.heads[head]
    index = {c: i for i, c in enumerate(h.labels)}
    true = np.fromiter((index.get(g, -1) for g in gold), dtype=np.int64, count=len(gold))
    out = h.predict(bundle.embed(texts))
    metrics = classification_metrics(out.probs, true, h.labels)
    metrics["unknown_labels"] = sorted({g for g in gold if g not in index})
    metrics["oos_flagged"] = float(out.oos.mean())
    metrics["bundle"] = bundle.model_version
    metrics["head"] = head
    metrics["data"] = str(data_file)
    return metrics
