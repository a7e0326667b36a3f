"""One escalation score per text, and the thresholds that spend a chosen escalation budget.

The score combines what a head sees of a text: its calibrated confidence and margin, and where the text
lies among the training examples (distance to the nearest ones, density relative to theirs, whether they
agree with the predicted label). Each signal is turned into a risk (larger: more likely wrong) and the
score is a logistic regression over them with non-negative weights, so it never falls when a risk rises.

It is fitted on the calibration split: in-scope examples (positive when the head gets them wrong) and
out-of-scope ones made honestly, since unknown intents are not available at build time:

- held-out classes left out in turn: the classes are dealt into folds; for each fold the examples of its
  classes are scored by the head as if those classes did not exist (their probability columns removed and
  renormalised, their training examples removed from the neighbour search);
- other texts the builder passes in (other heads' training texts, generic text).

Thresholds are quantiles of the in-scope calibration scores: the one for rate ``r`` escalates a share ``r``
of in-scope traffic (unknown intents come on top, which is the point).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NEIGHBOURS = 10
"""Training examples looked at per text (the same count as the neighbour vote)."""
FEATURES = (
    "low_confidence",
    "small_margin",
    "neighbour_disagreement",
    "neighbour_distance",
    "nearest_distance",
    "density_ratio",
)
"""Risk signals in the order of ``EscalationScorer.weights``; each one grows as the head is less safe."""
RATES = (0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)
"""Escalation rates whose thresholds every scorer stores, so a deployment can pick another budget."""
DEFAULT_RATE = 0.08
"""The budget a bundle is built for unless told otherwise: 8% of in-scope traffic escalated."""
LEAVE_OUT_FOLDS = 5
MIN_CLASSES_LEFT_OUT = 3
"""Heads with fewer classes cannot leave classes out (two would leave one, which is always right)."""
L2 = 1e-3


def nearest(query: FloatArray, exemplars: FloatArray, n: int = NEIGHBOURS) -> tuple[FloatArray, IntArray]:
    """Cosine similarities and indices of the ``n`` most similar exemplars per row, most similar first."""
    sims = np.asarray(query, dtype=np.float32) @ exemplars.T
    return top_of(sims, n)


def top_of(sims: FloatArray, n: int = NEIGHBOURS) -> tuple[FloatArray, IntArray]:
    """The ``n`` largest entries of each row of a similarity matrix, sorted descending."""
    m = min(n, sims.shape[1])
    top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
    vals = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(top, order, axis=1).astype(np.int64)


def exemplar_radius(exemplars: FloatArray, n: int = NEIGHBOURS, chunk: int = 2048) -> FloatArray:
    """Mean cosine distance of each exemplar to its ``n`` nearest other exemplars (its local spacing)."""
    ex = np.asarray(exemplars, dtype=np.float32)
    out = np.zeros(len(ex), dtype=np.float32)
    for start in range(0, len(ex), chunk):
        sims = ex[start : start + chunk] @ ex.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -2.0  # not its own neighbour
        vals, _ = top_of(sims, n)
        out[start : start + len(sims)] = 1.0 - vals.mean(axis=1)
    return out


def risk_features(
    probs: npt.NDArray[Any],
    sims: FloatArray,
    idx: IntArray,
    exemplar_labels: IntArray,
    radius: FloatArray,
) -> FloatArray:
    """The :data:`FEATURES` of each row: probabilities ``(n, k)`` and its neighbours from :func:`nearest`."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape[1] > 1:
        two = -np.partition(-probs, 1, axis=1)[:, :2]
        conf, margin = two[:, 0], two[:, 0] - two[:, 1]
    else:
        conf = margin = probs[:, 0]
    pred = probs.argmax(axis=1)
    agree = (exemplar_labels[idx] == pred[:, None]).mean(axis=1)
    distance = 1.0 - sims.mean(axis=1)
    density = distance / np.maximum(radius[idx].mean(axis=1), np.float32(1e-6))
    out: FloatArray = np.stack(
        [1.0 - conf, 1.0 - margin, 1.0 - agree, distance, 1.0 - sims[:, 0], density], axis=1
    ).astype(np.float32)
    return out


@dataclass
class EscalationScorer:
    """``sigmoid(features @ weights + bias)`` with ``weights >= 0``, and its thresholds per rate."""

    weights: F64
    bias: float
    thresholds: dict[str, float]
    """In-scope calibration quantiles: ``thresholds["0.08"]`` escalates 8% of in-scope texts."""
    rate: float = DEFAULT_RATE
    """The budget the bundle was built for."""
    report: dict[str, Any] = field(default_factory=dict)

    def score(self, features: npt.NDArray[Any]) -> FloatArray:
        z = np.asarray(features, dtype=np.float64) @ self.weights + self.bias
        out: FloatArray = (1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))).astype(np.float32)
        return out

    def threshold(self, rate: float | None = None) -> float:
        """Score at or above which a text escalates, for ``rate`` (default: the built budget).

        Between stored rates the threshold is interpolated linearly in the rate; outside them it is clamped.
        """
        want = self.rate if rate is None else rate
        if not 0.0 <= want <= 1.0:
            raise ValueError(f"an escalation rate is a share in [0, 1], got {want}")
        points = sorted((float(r), t) for r, t in self.thresholds.items())
        rates = np.array([p[0] for p in points])
        values = np.array([p[1] for p in points])
        return float(np.interp(want, rates, values))

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "weights": [float(w) for w in self.weights],
            "bias": self.bias,
            "rate": self.rate,
            "threshold": self.threshold(),
            "thresholds": dict(self.thresholds),
            "report": self.report,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EscalationScorer:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"escalation features {data.get('features')} differ from this runtime's {FEATURES}")
        return cls(
            weights=np.asarray(data["weights"], dtype=np.float64),
            bias=float(data["bias"]),
            thresholds={str(k): float(v) for k, v in data["thresholds"].items()},
            rate=float(data["rate"]),
            report=dict(data.get("report", {})),
        )


def fit_monotone_logistic(x: npt.NDArray[Any], y: npt.NDArray[Any], weight: npt.NDArray[Any]) -> tuple[F64, float]:
    """Weighted logistic regression with non-negative coefficients (projected gradient on standardised
    features, step 1/L), returned on the original feature scale."""
    x64 = np.asarray(x, dtype=np.float64)
    mu, sd = x64.mean(axis=0), x64.std(axis=0) + 1e-9
    z = (x64 - mu) / sd
    wts = np.asarray(weight, dtype=np.float64) / float(np.sum(weight))
    yy = np.asarray(y, dtype=np.float64)
    lipschitz = 0.25 * float(np.linalg.eigvalsh(z.T @ (z * wts[:, None])).max()) + L2 + 1e-9
    w = np.zeros(z.shape[1])
    b = 0.0
    for _ in range(3000):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w + b, -50, 50)))
        r = (p - yy) * wts
        w_new = np.maximum(w - (z.T @ r + L2 * w) / lipschitz, 0.0)
        b_new = b - float(r.sum()) / 0.25
        done = float(np.abs(w_new - w).max()) < 1e-7 and abs(b_new - b) < 1e-7
        w, b = w_new, b_new
        if done:
            break
    scaled = w / sd
    return scaled, float(b - scaled @ mu)


def leave_classes_out(
    probs: FloatArray,
    y_held: IntArray,
    held: FloatArray,
    exemplars: FloatArray,
    exemplar_labels: IntArray,
    radius: FloatArray,
    k: int,
    *,
    folds: int = LEAVE_OUT_FOLDS,
    seed: int = 0,
) -> FloatArray:
    """Features of held-out examples scored as if their class were unknown (see the module docstring).

    Every class is left out once; returns one feature row per held-out example (empty when the head has
    fewer than :data:`MIN_CLASSES_LEFT_OUT` classes).
    """
    if k < MIN_CLASSES_LEFT_OUT or len(held) == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    folds = min(folds, k - 1)
    order = np.random.default_rng(seed).permutation(k)
    sims = np.asarray(held, dtype=np.float32) @ exemplars.T
    rows: list[FloatArray] = []
    for f in range(folds):
        gone = order[f::folds]
        sel = np.isin(y_held, gone)
        if not sel.any():
            continue
        rest = np.setdiff1d(np.arange(k), gone)
        p = probs[sel][:, rest]
        p = p / np.maximum(p.sum(axis=1, keepdims=True), np.float32(1e-12))
        s = sims[sel].copy()
        s[:, np.isin(exemplar_labels, gone)] = -2.0
        top_s, top_i = top_of(s)
        # labels as indices into ``rest`` so agreement compares like with like
        remap = np.full(k, -1, dtype=np.int64)
        remap[rest] = np.arange(len(rest))
        rows.append(risk_features(p, top_s, top_i, remap[exemplar_labels], radius))
    return np.concatenate(rows) if rows else np.zeros((0, len(FEATURES)), dtype=np.float32)


def fit_scorer(
    in_scope: FloatArray,
    wrong: npt.NDArray[np.bool_],
    unknown: FloatArray,
    *,
    rate: float = DEFAULT_RATE,
    sources: Mapping[str, int] | None = None,
) -> EscalationScorer:
    """Fit the score: in-scope rows (target: the head was wrong) against made-up unknown rows (target 1).

    The unknown rows carry as much total weight as the in-scope ones, so that the few errors of a good head
    do not drown the out-of-scope signal. Thresholds are in-scope quantiles at :data:`RATES` and ``rate``.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the escalation rate must be in (0, 1), got {rate}")
    x = np.concatenate([in_scope, unknown]) if len(unknown) else in_scope
    y = np.concatenate([wrong.astype(np.float64), np.ones(len(unknown))])
    w = np.concatenate([np.ones(len(in_scope)), np.full(len(unknown), len(in_scope) / max(len(unknown), 1))])
    if y.min() == y.max():  # nothing to separate (a perfect head and no negatives): rank by confidence
        weights, bias = np.eye(len(FEATURES))[0] * 10.0, -5.0
    else:
        weights, bias = fit_monotone_logistic(x, y, w)
    scorer = EscalationScorer(weights=weights, bias=bias, thresholds={}, rate=rate)
    scores_in = scorer.score(in_scope)
    rates = sorted({*RATES, rate})
    scorer.thresholds = {str(r): float(np.quantile(scores_in, 1.0 - r)) for r in rates}
    thr = scorer.threshold()
    scorer.report = {
        "in_scope": len(in_scope),
        "in_scope_wrong": int(wrong.sum()),
        "unknown": dict(sources or {"leave_classes_out": len(unknown)}),
        "calibration_escalated": float((scores_in >= thr).mean()),
        "calibration_unknown_recall": float((scorer.score(unknown) >= thr).mean()) if len(unknown) else None,
        "calibration_accuracy_kept": float((~wrong[scores_in < thr]).mean()) if (scores_in < thr).any() else None,
    }
    return scorer
