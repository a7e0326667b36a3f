"""Quality metrics of a head on labelled data, as a JSON-able dict.

Selective accuracy answers the operational question: if the least confident 5/10/20% of traffic is
escalated to a large model, how accurate is what the small model keeps? With rows of an unknown intent
(``oos_label``), :func:`escalation_metrics` also says how many of them the bundle's own policy escalates
and at what cost in in-scope escalations.
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
from streamer.models.heads import ESCALATION_SHARES, Head, HeadOutput, expected_calibration_error

ECE_BINS = 15
FALLBACK_MIN_CONFIDENCE = 0.55
FALLBACK_MIN_MARGIN = 0.10
"""The worker's fixed cut-offs (``STREAMER_ESCALATE_MIN_CONFIDENCE``/``_MARGIN`` defaults) for a head
without an escalation score."""
ORACLE_SHARES = (0.01, 0.03, 0.05, 0.1)
"""In-scope escalation shares at which the out-of-scope recall of the head's ranking is reported."""


def policy_escalates(
    head: Head, out: HeadOutput, rate: float | None = None
) -> tuple[npt.NDArray[np.bool_], dict[str, Any]]:
    """What the worker escalates with this head and no settings overrides: the escalation score at the
    budget's threshold (``rate``: another budget), else the fixed confidence and margin cut-offs and the
    out-of-scope flag. Returns the mask and a description of the rule."""
    if head.escalation is not None and out.escalation_score is not None:
        threshold = head.escalation.threshold(rate)
        rule = {"rule": "escalation_score", "rate": head.escalation.rate if rate is None else rate}
        return out.escalation_score >= threshold, {**rule, "threshold": threshold}
    mask = (out.confidence < FALLBACK_MIN_CONFIDENCE) | (out.margin < FALLBACK_MIN_MARGIN) | out.oos
    return mask, {"rule": "fixed", "min_confidence": FALLBACK_MIN_CONFIDENCE, "min_margin": FALLBACK_MIN_MARGIN}


def escalation_metrics(
    head: Head, out: HeadOutput, true: npt.NDArray[np.int64], unknown: npt.NDArray[np.bool_], rate: float | None = None
) -> dict[str, Any]:
    """In-scope accuracy, and what the bundle's policy does with in-scope and unknown-intent rows.

    ``true`` holds label indices (any value on ``unknown`` rows). A kept unknown row counts as wrong in
    ``accuracy_kept``; ``oracle`` gives the unknown rows' recall when the head's ranking (its escalation
    score, else confidence) escalates 1/3/5/10% of in-scope rows, thresholds taken from these rows.
    """
    inside = ~unknown
    pred = out.probs.argmax(axis=1)
    correct = inside & (pred == true)
    escalate, rule = policy_escalates(head, out, rate)
    kept = ~escalate
    ranking = out.escalation_score if out.escalation_score is not None else 1.0 - out.confidence
    oracle: dict[str, float | None] = {}
    for share in ORACLE_SHARES:
        if inside.any() and unknown.any():
            cut = float(np.quantile(ranking[inside], 1.0 - share))
            oracle[str(share)] = float((ranking[unknown] > cut).mean())
        else:
            oracle[str(share)] = None
    recall = float(escalate[unknown].mean()) if unknown.any() else None
    inside_escalated = float(escalate[inside].mean()) if inside.any() else 0.0
    return {
        "in_scope_examples": int(inside.sum()),
        "unknown_examples": int(unknown.sum()),
        "in_scope_accuracy": float(correct[inside].mean()) if inside.any() else 0.0,
        "oos_recall": recall,
        "in_scope_escalated": inside_escalated,
        "policy": {
            **rule,
            "escalated": float(escalate.mean()) if len(escalate) else 0.0,
            "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
            "in_scope_accuracy_kept": float(correct[kept & inside].mean()) if (kept & inside).any() else None,
            "oos_recall": recall,
            "in_scope_escalated": inside_escalated,
        },
        "oracle_oos_recall": oracle,
    }


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
    oos_label: str | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """Score ``head`` of ``bundle`` on a labelled file; see :func:`classification_metrics`.

    Rows labelled ``oos_label`` are unknown intents: the classification metrics are then taken over the
    other rows, and :func:`escalation_metrics` is added under ``escalation`` (``rate``: another budget).
    """
    if head not in bundle.heads:
        raise DataError(f"bundle {bundle.model_version} has no head {head!r}; heads: {sorted(bundle.heads)}")
    texts, gold = read_examples(Path(data_file), text_col, label_col)
    h = bundle.heads[head]
    index = {c: i for i, c in enumerate(h.labels)}
    true = np.fromiter((index.get(g, -1) for g in gold), dtype=np.int64, count=len(gold))
    out = h.predict(bundle.embed(texts))
    unknown = np.array([g == oos_label for g in gold], dtype=bool)
    if oos_label is not None and oos_label in index:
        raise DataError(f"--oos-label {oos_label!r} is one of the head's own labels")
    if oos_label is not None and unknown.all():
        raise DataError(f"{data_file}: every row is labelled {oos_label!r}; in-scope rows are needed too")
    metrics = classification_metrics(out.probs[~unknown], true[~unknown], h.labels)
    metrics["unknown_labels"] = sorted({g for g in gold if g not in index and g != oos_label})
    if oos_label is not None:
        metrics["oos_label"] = oos_label
        metrics["escalation"] = escalation_metrics(h, out, true, unknown, rate)
    metrics["oos_flagged"] = float(out.oos.mean())
    metrics["bundle"] = bundle.model_version
    metrics["head"] = head
    metrics["data"] = str(data_file)
    return metrics
