"""The escalation score and its budget: monotone in every risk, thresholds that spend the budget, classes
left out as unknown intents, and evaluation with an unknown label."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.models import escalation as esc
from streamer.models.evaluate import escalation_metrics
from streamer.models.heads import train_head


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(classes: int, per_class: int, dim: int = 24, noise: float = 0.12, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((classes, dim)))
    x = np.repeat(centers, per_class, axis=0) + noise * rng.standard_normal((classes * per_class, dim))
    return _unit(x), [f"c{i}" for i in range(classes) for _ in range(per_class)], centers


def test_score_never_falls_when_a_risk_rises() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((400, len(esc.FEATURES))).astype(np.float32)
    # one risk predicts errors, one is anti-correlated noise a free fit would give a negative weight
    wrong = x[:, 0] + 0.2 * rng.standard_normal(400) > 0.7
    x[:, 2] = 1.0 - x[:, 0] + 0.05 * rng.standard_normal(400)
    scorer = esc.fit_scorer(x, wrong, np.zeros((0, len(esc.FEATURES)), dtype=np.float32))
    assert (scorer.weights >= 0).all() and scorer.weights[0] > 0
    base = scorer.score(x)
    for j in range(len(esc.FEATURES)):
        bumped = x.copy()
        bumped[:, j] += 0.1
        assert (scorer.score(bumped) >= base - 1e-7).all(), esc.FEATURES[j]


def test_thresholds_spend_the_budget_on_calibration_traffic() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((1000, len(esc.FEATURES))).astype(np.float32)
    wrong = x[:, 0] > 0.9
    unknown = (rng.random((300, len(esc.FEATURES))) + 0.5).astype(np.float32)
    scorer = esc.fit_scorer(x, wrong, unknown, rate=0.08)
    scores = scorer.score(x)
    for rate in (0.03, 0.08, 0.2):
        assert (scores >= scorer.threshold(rate)).mean() == pytest.approx(rate, abs=0.005)
    assert scorer.threshold() == scorer.threshold(0.08)
    # between stored rates: in between thresholds; a larger budget never raises the threshold
    assert scorer.threshold(0.15) >= scorer.threshold(0.18) >= scorer.threshold(0.2)
    assert scorer.report["calibration_escalated"] == pytest.approx(0.08, abs=0.005)
    assert scorer.report["calibration_unknown_recall"] > 0.5
    with pytest.raises(ValueError):
        scorer.threshold(1.5)
    again = esc.EscalationScorer.from_json(scorer.to_json())
    assert np.array_equal(again.score(x), scores) and again.threshold(0.05) == scorer.threshold(0.05)


def test_leave_classes_out_scores_each_class_as_unknown() -> None:
    x, labels, _ = _clusters(6, 30)
    y = np.array([int(lab[1:]) for lab in labels])
    keep = np.arange(len(y)) % 5 != 0
    radius = esc.exemplar_radius(x[keep])
    probs = np.eye(6, dtype=np.float32)[y[~keep]] * 0.9 + 0.1 / 6
    rows = esc.leave_classes_out(probs, y[~keep], x[~keep], x[keep], y[keep], radius, 6)
    assert rows.shape == (int((~keep).sum()), len(esc.FEATURES))
    sims, idx = esc.nearest(x[~keep], x[keep])
    known = esc.risk_features(probs, sims, idx, y[keep], radius)
    nearest_distance = esc.FEATURES.index("nearest_distance")
    # with its own class gone a text is further from everything seen than when its class is known
    assert rows[:, nearest_distance].mean() > known[:, nearest_distance].mean() + 0.1
    assert esc.leave_classes_out(probs[:, :2], y[~keep] % 2, x[~keep], x[keep], y[keep] % 2, radius, 2).shape[0] == 0


def test_trained_head_escalates_unknown_clusters_within_budget() -> None:
    x, labels, _ = _clusters(9, 60)
    known = [i for i, lab in enumerate(labels) if lab not in ("c7", "c8")]
    test_x, test_labels, _ = _clusters(9, 20, seed=0)
    head = train_head("intent", x[known], [labels[i] for i in known], escalate_rate=0.05, knn_weight=0.0)
    assert head.escalation is not None and head.exemplar_radius is not None
    assert head.escalation.report["unknown"]["leave_classes_out"] > 0
    # every training example is scored once, by a head that did not see it
    assert head.escalation.report["in_scope"] == len(known)
    one_split = train_head(
        "intent", x[known], [labels[i] for i in known], escalate_rate=0.05, knn_weight=0.0, escalation_folds=1
    )
    assert one_split.escalation is not None and one_split.escalation.report["in_scope"] < len(known) / 3
    out = head.predict(test_x)
    assert out.escalation_score is not None and out.escalation_score.shape == (len(test_x),)
    index = {c: i for i, c in enumerate(head.labels)}
    true = np.array([index.get(lab, -1) for lab in test_labels], dtype=np.int64)
    unknown = np.array([lab in ("c7", "c8") for lab in test_labels])
    m = escalation_metrics(head, out, true, unknown)
    assert m["unknown_examples"] == 40 and m["in_scope_examples"] == 140
    assert m["in_scope_escalated"] <= 0.15  # a 5% budget, on fresh noise
    assert m["oos_recall"] > 0.8
    assert m["policy"]["rule"] == "escalation_score" and m["policy"]["rate"] == 0.05
    # a kept unknown row counts as a mistake, an escalated one does not
    kept = ~(out.escalation_score >= head.escalation.threshold())
    correct = ~unknown & (out.probs.argmax(axis=1) == true)
    assert m["policy"]["accuracy_kept"] == pytest.approx(correct[kept].mean())
    # a bigger budget escalates at least as much of both
    wide = escalation_metrics(head, out, true, unknown, rate=0.3)
    assert wide["in_scope_escalated"] >= m["in_scope_escalated"] and wide["oos_recall"] >= m["oos_recall"]


def test_extra_negatives_are_counted_and_a_head_without_budget_has_no_score() -> None:
    x, labels, _ = _clusters(4, 40)
    far = _unit(np.random.default_rng(5).standard_normal((30, x.shape[1])))
    head = train_head("intent", x, labels, negatives={"file:generic.txt": far}, knn_weight=0.0)
    assert head.escalation is not None and head.escalation.report["unknown"]["file:generic.txt"] == 30
    plain = train_head("intent", x, labels, escalate_rate=None, knn_weight=0.0)
    assert plain.escalation is None and plain.predict(x[:3]).escalation_score is None
