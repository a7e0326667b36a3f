"""Classification heads on the shared sentence embedding.

Inference is numpy only: one or two matrix products, a temperature-scaled softmax and a distance to class
centroids. Training is numpy too (L-BFGS for logistic regression, Adam for the small MLP), so building a
bundle needs nothing beyond the runtime's own dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import yaml

from streamer.models import escalation as esc
from streamer.models.errors import DataError

FloatArray = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HeadKind = Literal["logreg", "mlp", "zeroshot"]

DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 0
DEFAULT_OOS_QUANTILE = 0.99
DEFAULT_ZERO_SHOT_SCALE = 20.0
DEFAULT_L2 = {"logreg": 1e-5, "mlp": 1e-4}
"""Chosen on BANKING77 (bench/eval_banking77.py): unit-norm inputs need weak L2 for confident logits."""
ESCALATION_SHARES = (0.05, 0.1, 0.2)
KNN_K = 10
KNN_SCALE = 20.0
"""Neighbour votes are weighted ``exp(KNN_SCALE * (cosine - 1))``: a neighbour at cosine 0.9 counts 0.14."""
KNN_WEIGHTS = (0.0, 0.25, 0.5)
"""Shares of the nearest-neighbour vote tried on the held-out split; the one with the lowest log-loss is kept."""


@dataclass(frozen=True)
class HeadOutput:
    """Per-example predictions of one head.

    ``confidence`` is the calibrated top probability, ``margin`` top1 minus top2 probability, ``oos_score``
    the cosine distance to the nearest class centroid (higher: further from everything seen in training);
    ``oos`` marks scores above the head's stored threshold.
    """

    labels: list[str]
    probs: FloatArray
    top: list[str]
    confidence: FloatArray
    margin: FloatArray
    oos_score: FloatArray
    oos: npt.NDArray[np.bool_]
    escalation_score: FloatArray | None = None
    """The head's escalation score in [0, 1] (see ``streamer.models.escalation``); ``None`` without one."""
    embeddings: FloatArray | None = None
    """The embeddings the head was applied to (shared, not copied), for near-duplicate checks."""


@dataclass
class Head:
    """A classifier over embeddings: ``softmax(mlp(x) / temperature)`` plus an out-of-scope score.

    ``layers`` are ``(W, b)`` pairs with ReLU between them: one pair is multinomial logistic regression (and
    a zero-shot head, whose ``W`` is scaled label prototypes), two pairs a one-hidden-layer MLP.
    """

    name: str
    kind: HeadKind
    labels: list[str]
    layers: list[tuple[FloatArray, FloatArray]]
    centroids: FloatArray
    temperature: float = 1.0
    oos_threshold: float = 1.0
    confidence_cutoffs: dict[str, float] = field(default_factory=dict)
    """Held-out confidence below which a given share of examples falls, e.g. ``{"0.1": 0.62}``: the cut that
    escalates 10% of traffic."""
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    exemplars: FloatArray | None = None
    """Unit embeddings of the training examples, for the nearest-neighbour vote (``None``: no vote)."""
    exemplar_labels: IntArray | None = None
    knn_weight: float = 0.0
    """Share of the probability that comes from the ``KNN_K`` nearest training examples. Neighbours catch
    phrasings a linear boundary averages away; the share is chosen on held-out data when training."""
    escalation: esc.EscalationScorer | None = None
    """The fitted escalation score and its thresholds per rate (needs ``exemplars``)."""
    exemplar_radius: FloatArray | None = None
    """Each exemplar's mean distance to its nearest others, for the density signal of the score."""

    def logits(self, embeddings: FloatArray) -> FloatArray:
        """Uncalibrated logits, ``(n, k)``."""
        h = np.asarray(embeddings, dtype=np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def oos_scores(self, embeddings: FloatArray) -> FloatArray:
        """1 - cosine similarity to the nearest class centroid (embeddings are unit vectors)."""
        sims = np.asarray(embeddings, dtype=np.float32) @ self.centroids.T
        out: FloatArray = (1.0 - sims.max(axis=1)).astype(np.float32)
        return out

    def neighbour_probs(self, embeddings: FloatArray) -> FloatArray:
        """Similarity-weighted votes of the nearest training examples, ``(n, k)``, rows summing to 1."""
        if self.exemplars is None or self.exemplar_labels is None:
            raise ValueError(f"head {self.name!r} stores no exemplars")
        return knn_probs(embeddings, self.exemplars, self.exemplar_labels, len(self.labels))

    def predict(self, embeddings: FloatArray) -> HeadOutput:
        probs = softmax(self.logits(embeddings) / np.float32(self.temperature))
        scoring = self.escalation is not None and self.exemplar_radius is not None
        score: FloatArray | None = None
        if (self.knn_weight > 0 or scoring) and len(embeddings):
            if self.exemplars is None or self.exemplar_labels is None:
                raise ValueError(f"head {self.name!r} stores no exemplars")
            sims, idx = esc.nearest(embeddings, self.exemplars, KNN_K)  # one search serves vote and score
            if self.knn_weight > 0:
                w = np.float32(self.knn_weight)
                probs = (1 - w) * probs + w * _votes(sims, idx, self.exemplar_labels, len(self.labels))
            if self.escalation is not None and self.exemplar_radius is not None:
                feats = esc.risk_features(probs, sims, idx, self.exemplar_labels, self.exemplar_radius)
                score = self.escalation.score(feats)
        elif scoring:
            score = np.zeros(0, dtype=np.float32)
        order = np.argsort(-probs, axis=1)
        top1 = probs[np.arange(len(probs)), order[:, 0]]
        top2 = probs[np.arange(len(probs)), order[:, 1]] if probs.shape[1] > 1 else np.zeros_like(top1)
        oos = self.oos_scores(embeddings)
        return HeadOutput(
            labels=list(self.labels),
            probs=probs,
            top=[self.labels[i] for i in order[:, 0]],
            confidence=top1,
            margin=(top1 - top2).astype(np.float32),
            oos_score=oos,
            oos=oos > self.oos_threshold,
            escalation_score=score,
            embeddings=embeddings,
        )


def softmax(logits: npt.NDArray[Any]) -> FloatArray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def _log_softmax(logits: F64) -> F64:
    z = logits - logits.max(axis=1, keepdims=True)
    out: F64 = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def nll(logits: npt.NDArray[Any], y: IntArray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``y`` under ``softmax(logits / temperature)``."""
    lp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-lp[np.arange(len(y)), y].mean())


def stratified_split(
    labels: Sequence[str] | IntArray, fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[IntArray, IntArray]:
    """Indices ``(keep, held_out)``: about ``fraction`` of every class held out, at least one example of a
    class with two or more, none of a singleton class. Deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(labels)
    held: list[IntArray] = []
    for value in np.unique(arr):
        idx = np.flatnonzero(arr == value)
        rng.shuffle(idx)
        n = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(len(idx) * fraction)))
        held.append(idx[:n])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(arr)), held_out)
    return keep.astype(np.int64), held_out.astype(np.int64)


def fit_temperature(logits: npt.NDArray[Any], y: IntArray) -> float:
    """Temperature minimising held-out NLL (golden-section search over log T in [-3, 3])."""
    lo, hi = -3.0, 3.0
    phi = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = nll(logits, y, float(np.exp(a))), nll(logits, y, float(np.exp(b)))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - phi * (hi - lo)
            fa = nll(logits, y, float(np.exp(a)))
        else:
            lo, a, fa = a, b, fb
            b = lo + phi * (hi - lo)
            fb = nll(logits, y, float(np.exp(b)))
    return float(np.exp((lo + hi) / 2.0))


def _lbfgs(
    fun: Callable[[F64], tuple[float, F64]], x0: F64, max_iter: int = 500, memory: int = 10, tol: float = 1e-5
) -> F64:
    """Minimise a smooth convex function: L-BFGS two-loop recursion with Armijo backtracking."""
    x = x0.copy()
    f, g = fun(x)
    s_hist: list[F64] = []
    y_hist: list[F64] = []
    for _ in range(max_iter):
        q = g.copy()
        alphas: list[float] = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = float(s @ q) / float(yv @ s)
            alphas.append(a)
            q -= a * yv
        gamma = float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1]) if s_hist else 1.0
        r = gamma * q
        for (s, yv), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            r += s * (a - float(yv @ r) / float(yv @ s))
        d = -r
        slope = float(g @ d)
        if slope >= 0:
            d, slope = -g, -float(g @ g)
            s_hist.clear()
            y_hist.clear()
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s_new, y_new = x_new - x, g_new - g
        if float(s_new @ y_new) > 1e-12:
            s_hist.append(s_new)
            y_hist.append(y_new)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(f - f_new) <= 1e-10 * max(1.0, abs(f)) or float(np.abs(g_new).max()) < tol
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x


def train_logreg(
    x: FloatArray, y: IntArray, k: int, *, l2: float = 1e-4, max_iter: int = 500
) -> tuple[FloatArray, FloatArray]:
    """Multinomial logistic regression: mean cross-entropy + ``l2/2 * ||W||²`` (bias not penalised)."""
    x64 = np.asarray(x, dtype=np.float64)
    n, d = x64.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0

    def fun(theta: F64) -> tuple[float, F64]:
        w, b = theta[: d * k].reshape(d, k), theta[d * k :]
        lp = _log_softmax(x64 @ w + b)
        loss = -float((lp * onehot).sum()) / n + 0.5 * l2 * float((w * w).sum())
        diff = (np.exp(lp) - onehot) / n
        grad = np.concatenate([(x64.T @ diff + l2 * w).ravel(), diff.sum(axis=0)])
        return loss, grad

    theta = _lbfgs(fun, np.zeros(d * k + k), max_iter=max_iter)
    return theta[: d * k].reshape(d, k).astype(np.float32), theta[d * k :].astype(np.float32)


def train_mlp(
    x: FloatArray,
    y: IntArray,
    k: int,
    *,
    hidden: int = 512,
    l2: float = 1e-4,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
    dropout: float = 0.1,
    seed: int = DEFAULT_SEED,
) -> list[tuple[FloatArray, FloatArray]]:
    """One hidden ReLU layer trained with Adam on mini-batches (input dropout, decoupled weight decay)."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    params = [
        (rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d)).astype(np.float32),
        np.zeros(hidden, dtype=np.float32),
        (rng.standard_normal((hidden, k)) * np.sqrt(1.0 / hidden)).astype(np.float32),
        np.zeros(k, dtype=np.float32),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    steps = 0
    total = epochs * max(1, -(-n // batch_size))
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            if dropout > 0:
                xb = xb * (rng.random(xb.shape) >= dropout) / np.float32(1.0 - dropout)
            w1, b1, w2, b2 = params
            pre = xb @ w1 + b1
            h = np.maximum(pre, 0.0)
            probs = softmax(h @ w2 + b2)
            probs[np.arange(len(idx)), y[idx]] -= 1.0
            g_out = probs / np.float32(len(idx))
            g_h = (g_out @ w2.T) * (pre > 0)
            grads = [xb.T @ g_h, g_h.sum(axis=0), h.T @ g_out, g_out.sum(axis=0)]
            steps += 1
            rate = lr * 0.5 * (1.0 + np.cos(np.pi * steps / total))
            for i, (p, gp) in enumerate(zip(params, grads, strict=True)):
                m[i] = 0.9 * m[i] + 0.1 * gp
                v[i] = 0.999 * v[i] + 0.001 * gp * gp
                m_hat = m[i] / (1 - 0.9**steps)
                v_hat = v[i] / (1 - 0.999**steps)
                p -= (rate * (m_hat / (np.sqrt(v_hat) + 1e-8) + (l2 * p if i % 2 == 0 else 0.0))).astype(np.float32)
    return [(params[0], params[1]), (params[2], params[3])]


def knn_probs(
    query: FloatArray, exemplars: FloatArray, labels: IntArray, k: int, n_neighbours: int = KNN_K
) -> FloatArray:
    """Votes of the ``n_neighbours`` most similar exemplars (unit vectors), weighted by similarity."""
    sims, top = esc.nearest(query, exemplars, n_neighbours)
    return _votes(sims, top, labels, k)


def _votes(sims: FloatArray, top: IntArray, labels: IntArray, k: int) -> FloatArray:
    rows = np.arange(len(sims))[:, None]
    weights = np.exp(np.float32(KNN_SCALE) * (sims - 1.0))
    votes = np.zeros((len(sims), k), dtype=np.float32)
    np.add.at(votes, (np.broadcast_to(rows, top.shape), labels[top]), weights)
    out: FloatArray = votes / np.maximum(votes.sum(axis=1, keepdims=True), np.float32(1e-30))
    return out


def class_centroids(embeddings: FloatArray, y: IntArray, k: int) -> FloatArray:
    """Unit-norm mean embedding per class."""
    cent = np.zeros((k, embeddings.shape[1]), dtype=np.float64)
    np.add.at(cent, y, embeddings.astype(np.float64))
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    return cent.astype(np.float32)


def train_head(
    name: str,
    embeddings: FloatArray,
    labels: Sequence[str],
    *,
    kind: Literal["logreg", "mlp"] = "logreg",
    l2: float | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    oos_quantile: float = DEFAULT_OOS_QUANTILE,
    refit: bool = True,
    knn_weight: float | None = None,
    escalate_rate: float | None = esc.DEFAULT_RATE,
    negatives: Mapping[str, FloatArray] | None = None,
    escalation_folds: int = 5,
) -> Head:
    """Train a head, calibrate it on a stratified held-out split, then (``refit``) retrain on all data.

    The temperature and the out-of-scope threshold are fitted on the held-out split, where the model's
    confidence is honest. With ``refit`` the weights are then retrained on every example with the same
    settings and the fitted temperature is kept: small support datasets need every example, and the
    temperature transfers because the loss and regularisation, which set the logit scale, are unchanged.
    ``metrics`` report the held-out numbers of the model trained without that split.
    ``knn_weight`` blends in the nearest training examples' votes; ``None`` picks the share from
    :data:`KNN_WEIGHTS` with the lowest held-out log-loss.
    ``escalate_rate`` (``None``: none) fits the escalation score on the held-out split, with held-out classes
    left out in turn and the embeddings of ``negatives`` (name: texts that are not this head's business) as
    unknown examples, and stores the thresholds for that budget; the training examples are then kept as
    exemplars. Without a score and a neighbour vote, the head carries no exemplars. ``escalation_folds`` > 1
    also scores the rest of the data in that many folds minus one (each by a head trained without it), so
    the score and its thresholds rest on every example rather than on the held-out split alone.
    """
    if len(labels) != len(embeddings):
        raise DataError(f"head {name!r}: {len(labels)} labels for {len(embeddings)} embeddings")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"head {name!r} needs at least two labels, got {classes}")
    index = {c: i for i, c in enumerate(classes)}
    y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    k = len(classes)
    reg = l2 if l2 is not None else DEFAULT_L2[kind]

    def fit(x: FloatArray, yy: IntArray) -> list[tuple[FloatArray, FloatArray]]:
        if kind == "logreg":
            return [train_logreg(x, yy, k, l2=reg)]
        return train_mlp(x, yy, k, l2=reg, seed=seed)

    keep, held = stratified_split(labels, val_fraction, seed)
    settings: dict[str, Any] = {
        "kind": kind,
        "l2": reg,
        "val_fraction": val_fraction,
        "seed": seed,
        "oos_quantile": oos_quantile,
        "refit": refit,
        "train_examples": len(labels),
        "escalate_rate": escalate_rate,
        "escalation_folds": escalation_folds,
    }
    emb = np.asarray(embeddings, dtype=np.float32)
    if len(held) == 0:
        layers = fit(emb, y)
        settings["knn_weight"] = knn_weight or 0.0
        head = Head(name, kind, classes, layers, class_centroids(emb, y, k), settings=settings)
        if knn_weight:
            head.knn_weight, head.exemplars, head.exemplar_labels = knn_weight, emb, y
        return head

    head = val_head = Head(name, kind, classes, fit(emb[keep], y[keep]), class_centroids(emb[keep], y[keep], k))
    val_logits = head.logits(emb[held])
    temperature = fit_temperature(val_logits, y[held])
    val_oos = head.oos_scores(emb[held])
    threshold = float(np.quantile(val_oos, oos_quantile))
    probs_raw = softmax(val_logits)
    probs = softmax(val_logits / np.float32(temperature))
    weight = 0.0
    if knn_weight != 0:  # a fixed share of 0 needs no neighbour search
        neighbours = knn_probs(emb[held], emb[keep], y[keep], k)
        weight, probs = _choose_knn_weight(probs, neighbours, y[held], knn_weight)
    settings["knn_weight"] = weight
    pred = probs.argmax(axis=1)
    metrics = {
        "held_out_examples": len(held),
        "accuracy": float((pred == y[held]).mean()),
        "nll_uncalibrated": nll(val_logits, y[held]),
        "nll": _mean_nll(probs, y[held]),
        "ece_uncalibrated": expected_calibration_error(probs_raw, y[held]),
        "ece": expected_calibration_error(probs, y[held]),
    }
    if refit:
        head = Head(name, kind, classes, fit(emb, y), class_centroids(emb, y, k))
    head.temperature = temperature
    if weight > 0:
        head.knn_weight = weight
        head.exemplars = emb if refit else emb[keep]
        head.exemplar_labels = y if refit else y[keep]
    head.oos_threshold = threshold
    if escalate_rate is not None:
        keep_radius = esc.exemplar_radius(emb[keep])
        sims, idx = esc.nearest(emb[held], emb[keep])
        in_scope = [esc.risk_features(probs, sims, idx, y[keep], keep_radius)]
        wrong = [probs.argmax(axis=1) != y[held]]
        unknown = [esc.leave_classes_out(probs, y[held], emb[held], emb[keep], y[keep], keep_radius, k, seed=seed)]
        # The rest of the data, scored fold by fold by heads that did not see it: a budget is a quantile,
        # and small datasets leave too few held-out examples to place it.
        for part in _folds(y[keep], escalation_folds - 1, seed):
            scored, rest = keep[part], np.setdiff1d(np.arange(len(y)), keep[part])
            fold_head = Head(name, kind, classes, fit(emb[rest], y[rest]), class_centroids(emb[rest], y[rest], k))
            p = softmax(fold_head.logits(emb[scored]) / np.float32(temperature))
            f_sims, f_idx = esc.nearest(emb[scored], emb[rest])
            if weight > 0:
                p = ((1 - weight) * p + weight * _votes(f_sims, f_idx, y[rest], k)).astype(np.float32)
            radius = esc.exemplar_radius(emb[rest])
            in_scope.append(esc.risk_features(p, f_sims, f_idx, y[rest], radius))
            wrong.append(p.argmax(axis=1) != y[scored])
            unknown.append(esc.leave_classes_out(p, y[scored], emb[scored], emb[rest], y[rest], radius, k, seed=seed))
        sources = {"leave_classes_out": sum(len(u) for u in unknown)}
        for source, neg in (negatives or {}).items():
            if len(neg) == 0:
                continue
            neg_probs = softmax(val_head.logits(neg) / np.float32(temperature))
            n_sims, n_idx = esc.nearest(neg, emb[keep])
            if weight > 0:
                neg_probs = (1 - weight) * neg_probs + weight * _votes(n_sims, n_idx, y[keep], k)
            unknown.append(esc.risk_features(neg_probs, n_sims, n_idx, y[keep], keep_radius))
            sources[source] = len(neg)
        head.escalation = esc.fit_scorer(
            np.concatenate(in_scope),
            np.concatenate(wrong),
            np.concatenate(unknown),
            rate=escalate_rate,
            sources=sources,
        )
        head.exemplars = emb if refit else emb[keep]
        head.exemplar_labels = y if refit else y[keep]
        head.exemplar_radius = esc.exemplar_radius(head.exemplars) if refit else keep_radius
    conf = probs.max(axis=1)
    head.confidence_cutoffs = {str(q): float(np.quantile(conf, q)) for q in ESCALATION_SHARES}
    head.metrics = metrics
    head.settings = settings
    return head


def _folds(labels: IntArray, n: int, seed: int) -> list[IntArray]:
    """``n`` disjoint stratified parts of ``range(len(labels))`` (each class dealt round-robin)."""
    if n < 1:
        return []
    rng = np.random.default_rng(seed + 1)
    parts: list[list[int]] = [[] for _ in range(n)]
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        rng.shuffle(idx)
        for i, j in enumerate(idx):
            parts[i % n].append(int(j))
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts if p]


def _mean_nll(probs: npt.NDArray[Any], y: IntArray) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(y)), y].astype(np.float64), 1e-12)).mean())


def _choose_knn_weight(
    probs: FloatArray, neighbours: FloatArray, y: IntArray, fixed: float | None
) -> tuple[float, FloatArray]:
    """The neighbour share (``fixed``, or the best of :data:`KNN_WEIGHTS` by log-loss) and the blend."""
    candidates = (fixed,) if fixed is not None else KNN_WEIGHTS
    best: tuple[float, float, FloatArray] | None = None
    for w in candidates:
        blend = ((1 - w) * probs + w * neighbours).astype(np.float32)
        loss = _mean_nll(blend, y)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, w, blend)
    assert best is not None
    return best[1], best[2]


def expected_calibration_error(probs: npt.NDArray[Any], y: IntArray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of ``|accuracy - confidence| * share``."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += abs(float(correct[sel].mean()) - float(conf[sel].mean())) * float(sel.mean())
    return total


_ZERO_SHOT_OPTIONS = ("scale", "oos_threshold")


def load_zero_shot_yaml(path: Path) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Read label descriptions for a zero-shot head, plus optional ``scale`` and ``oos_threshold``.

    Accepted shapes (labels under ``labels:`` or at the top level), per label: a description string, a list
    ``[description, example, ...]``, or ``{description: ..., examples: [...]}``.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of labels to descriptions")
    raw = data["labels"] if isinstance(data.get("labels"), dict) else data
    labels: dict[str, list[str]] = {}
    for name, value in raw.items():
        if name in _ZERO_SHOT_OPTIONS or (raw is data and name == "labels"):
            continue
        if isinstance(value, dict):
            desc = value.get("description")
            items = ([desc] if desc else []) + list(value.get("examples") or [])
        else:
            items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(t, str) and t for t in items):
            raise DataError(f"{path}: label {name!r} needs a description or a list of phrases")
        labels[str(name)] = items
    if len(labels) < 2:
        raise DataError(f"{path}: a zero-shot head needs at least two labels")
    options = {k: data[k] for k in _ZERO_SHOT_OPTIONS if k in data}
    return labels, options


def zero_shot_head(
    name: str,
    label_texts: Mapping[str, Sequence[str]],
    encode: Callable[[Sequence[str]], FloatArray],
    *,
    scale: float = DEFAULT_ZERO_SHOT_SCALE,
    oos_threshold: float = 0.8,
) -> Head:
    """A head without training data: each label's prototype is the normalised mean embedding of its
    description and example phrases; logits are ``scale * cosine``. ``scale`` plays the role of an inverse
    temperature (there is no held-out data to fit one); ``oos_threshold`` is a cosine distance."""
    classes = list(label_texts)
    texts = [t for c in classes for t in label_texts[c]]
    owner = np.fromiter((i for i, c in enumerate(classes) for _ in label_texts[c]), dtype=np.int64)
    protos = class_centroids(encode(texts), owner, len(classes))
    w = (protos.T * np.float32(scale)).astype(np.float32)
    return Head(
        name,
        "zeroshot",
        classes,
        [(w, np.zeros(len(classes), dtype=np.float32))],
        protos,
        temperature=1.0,
        oos_threshold=oos_threshold,
        settings={"kind": "zeroshot", "scale": scale, "phrases": len(texts)},
    )
