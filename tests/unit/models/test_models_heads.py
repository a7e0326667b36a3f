"""Head training, zero-shot prototypes, calibration and out-of-scope scores on synthetic embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.models.errors import DataError
from streamer.models.heads import (
    Head,
    expected_calibration_error,
    fit_temperature,
    knn_probs,
    load_zero_shot_yaml,
    nll,
    softmax,
    stratified_split,
    train_head,
    train_logreg,
    zero_shot_head,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(per_class: int, classes: int = 3, dim: int = 16, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((classes, dim)))
    x = np.repeat(centers, per_class, axis=0) + noise * rng.standard_normal((classes * per_class, dim))
    labels = [f"c{i}" for i in range(classes) for _ in range(per_class)]
    return _unit(x), labels, centers


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_trained_head_separates_tiny_data(kind: str) -> None:
    x, labels, centers = _clusters(per_class=6)
    head = train_head("intent", x, labels, kind=kind)  # type: ignore[arg-type]
    assert head.labels == ["c0", "c1", "c2"]
    out = head.predict(x)
    assert out.top == labels
    assert out.probs.shape == (18, 3) and out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)
    assert np.all(out.margin >= 0) and np.all(out.margin <= out.confidence)
    assert head.metrics["held_out_examples"] == 3 and head.temperature > 0
    assert set(head.confidence_cutoffs) == {"0.05", "0.1", "0.2"}
    # far from every class centroid -> higher out-of-scope score than the training points
    far = _unit(-centers.sum(0, keepdims=True))
    assert head.predict(far).oos_score[0] > out.oos_score.max()


def test_logreg_gradient_reaches_optimum() -> None:
    x, labels, _ = _clusters(per_class=20, noise=0.8, seed=3)
    y = np.array([int(v[1:]) for v in labels])
    w, b = train_logreg(x, y, 3, l2=1e-2)
    logits = x.astype(np.float64) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[y]
    grad_w = x.T @ (p - onehot) / len(y) + 1e-2 * w
    assert np.abs(grad_w).max() < 1e-4


def test_stratified_split_is_deterministic_and_stratified() -> None:
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 2 + ["d"]
    keep, held = stratified_split(labels, 0.2, seed=1)
    keep2, held2 = stratified_split(labels, 0.2, seed=1)
    assert keep.tolist() == keep2.tolist() and held.tolist() == held2.tolist()
    assert sorted(keep.tolist() + held.tolist()) == list(range(len(labels)))
    counts = {c: sum(labels[i] == c for i in held) for c in "abcd"}
    assert counts == {"a": 10, "b": 2, "c": 1, "d": 0}
    assert stratified_split(labels, 0.2, seed=2)[1].tolist() != held.tolist()


def test_higher_temperature_lowers_max_probability() -> None:
    logits = np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32) * 4
    head = Head(
        "h",
        "logreg",
        list("abcde"),
        [(np.eye(5, dtype=np.float32), np.zeros(5, np.float32))],
        np.eye(5, dtype=np.float32),
    )
    previous = None
    for t in (0.5, 1.0, 2.0, 4.0):
        head.temperature = t
        conf = head.predict(logits).confidence
        if previous is not None:
            assert np.all(conf <= previous + 1e-6)
        previous = conf


def test_temperature_fixes_overconfidence() -> None:
    """Labels drawn from softmax(z); the model reports softmax(3z): T≈3 restores calibration."""
    rng = np.random.default_rng(42)
    z = rng.standard_normal((4000, 4)) * 1.5
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random((4000, 1)) > np.cumsum(p_true, axis=1)).sum(1)
    logits = 3.0 * z
    t = fit_temperature(logits, y)
    assert 2.6 < t < 3.4
    assert nll(logits, y, t) < nll(logits, y)
    ece_raw = expected_calibration_error(softmax(logits), y)
    ece_cal = expected_calibration_error(softmax(logits / t), y)
    assert ece_cal <= ece_raw and ece_cal < 0.03 < ece_raw


def test_ece_of_perfect_calibration_is_small() -> None:
    probs = np.array([[0.8, 0.2]] * 10, dtype=np.float32)
    y = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-6)


def test_zero_shot_head_uses_label_prototypes() -> None:
    basis = np.eye(4, dtype=np.float32)
    vocab = {"refund please": 0, "money back": 0, "cannot log in": 1, "password reset": 1, "thanks": 2}

    def encode(texts: list[str]) -> np.ndarray:
        return _unit(np.stack([basis[vocab.get(t, 3)] + 0.01 for t in texts]))

    head = zero_shot_head(
        "topic",
        {"billing": ["refund please", "money back"], "login": ["cannot log in", "password reset"]},
        encode,
        scale=10.0,
    )
    out = head.predict(encode(["money back", "password reset", "thanks"]))
    assert out.top[:2] == ["billing", "login"] and head.kind == "zeroshot"
    assert out.oos.tolist() == [False, False, True]


def test_zero_shot_yaml(fixtures_dir: Path, tmp_path: Path) -> None:
    labels, options = load_zero_shot_yaml(fixtures_dir / "sentiment.yaml")
    assert list(labels) == ["negative", "neutral", "positive"] and options == {"scale": 20}
    flat = tmp_path / "flat.yaml"
    flat.write_text(
        "refund:\n  description: wants money back\n  examples: [give me my money back]\n"
        "login: [cannot sign in, password reset]\nscale: 15\n"
    )
    labels, options = load_zero_shot_yaml(flat)
    assert labels == {
        "refund": ["wants money back", "give me my money back"],
        "login": ["cannot sign in", "password reset"],
    }
    assert options == {"scale": 15}
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  only: [one]\n")
    with pytest.raises(DataError, match="at least two"):
        load_zero_shot_yaml(bad)


def test_head_needs_two_labels() -> None:
    x, _, _ = _clusters(per_class=4)
    with pytest.raises(DataError):
        train_head("h", x, ["same"] * len(x))


def _two_blobs_per_class(per_blob: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Class a around +e0 and -e0, class b around +e1 and -e1: no linear boundary separates them."""
    rng = np.random.default_rng(seed)
    dim = 8
    centers = {"a": [np.eye(dim)[0], -np.eye(dim)[0]], "b": [np.eye(dim)[1], -np.eye(dim)[1]]}
    xs, labels = [], []
    for label, blobs in centers.items():
        for center in blobs:
            xs.append(center + 0.15 * rng.standard_normal((per_blob, dim)))
            labels += [label] * per_blob
    return _unit(np.concatenate(xs)), labels


def test_neighbour_vote_is_chosen_where_a_linear_head_cannot_separate() -> None:
    x, labels = _two_blobs_per_class(40)
    test_x, test_labels = _two_blobs_per_class(20, seed=1)
    linear = train_head("xor", x, labels, knn_weight=0.0, escalate_rate=None)
    auto = train_head("xor", x, labels)
    assert linear.exemplars is None and linear.knn_weight == 0.0
    assert auto.knn_weight > 0 and auto.settings["knn_weight"] == auto.knn_weight
    assert auto.exemplars is not None and len(auto.exemplars) == len(labels)  # refit: every example
    acc_linear = np.mean(np.array(linear.predict(test_x).top) == np.array(test_labels))
    acc_auto = np.mean(np.array(auto.predict(test_x).top) == np.array(test_labels))
    assert acc_linear < 0.8 and acc_auto > 0.95
    probs = auto.predict(test_x).probs
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_neighbour_vote_is_left_out_where_it_does_not_help() -> None:
    x, labels, _ = _clusters(per_class=30, noise=0.05)
    head = train_head("easy", x, labels, escalate_rate=None)
    # Separable clusters: the linear head alone is already certain, and the log-loss cannot improve.
    assert head.knn_weight == 0.0 and head.exemplars is None


def test_knn_probs_weights_near_neighbours_most() -> None:
    exemplars = _unit(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    labels = np.array([0, 0, 1])
    probs = knn_probs(_unit(np.array([[1.0, 0.05], [0.05, 1.0]])), exemplars, labels, 2, n_neighbours=2)
    assert probs[0].argmax() == 0 and probs[0, 0] > 0.99
    assert probs[1].argmax() == 1 and probs[1, 1] > 0.9
