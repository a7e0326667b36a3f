"""Escalation on BANKING77 with intents the head never saw: out-of-scope recall and kept accuracy.

    python bench/eval_escalation.py [--seeds 0,1,2] [--unknown 10] [--json out.json]

Per seed: 10 intents are drawn as unknown; a stratified 20% of the training file (same seed) is the test
split; the head (``train_head``, the build default: logistic regression, neighbour vote auto, escalation
score at the default budget) is trained on the other 80% without the unknown intents. Reported, next to
the baseline of the fixed policy (confidence < 0.55, margin < 0.10, out-of-scope flag) and of ranking by
confidence alone in the same run:

- ``oos_recall@3%``: unknown-intent test rows escalated when 3% of in-scope rows are, threshold from the
  calibration split (the bundle's own policy at a 3% budget);
- ``kept@10%``: accuracy on in-scope test rows kept when the budget is 10% of in-scope traffic;
- the same with the threshold taken from the test rows themselves (oracle), which isolates ranking quality.

``--negatives FILE ...`` adds texts known to be out of scope (e.g. log lines, another head's texts) to the
made-up unknown examples of the fit, to compare with leaving held-out classes out alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.models.convert import convert_checkpoint
from streamer.models.encoder import Encoder
from streamer.models.evaluate import escalation_metrics
from streamer.models.heads import stratified_split, train_head
from streamer.models.sources import resolve_source

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"


def kept_in_scope(ranking: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float]:
    """(escalated share, accuracy kept) of in-scope rows escalated at ``ranking >= threshold``."""
    esc = ranking >= threshold
    return float(esc.mean()), float(correct[~esc].mean())


def run_seed(
    emb: np.ndarray, labels: list[str], seed: int, n_unknown: int, negatives: dict[str, np.ndarray]
) -> dict[str, Any]:
    classes = sorted(set(labels))
    unknown_classes = set(np.random.default_rng(seed).choice(classes, n_unknown, replace=False).tolist())
    train_idx, test_idx = stratified_split(labels, 0.2, seed=seed)
    train_idx = np.array([i for i in train_idx if labels[i] not in unknown_classes])
    t0 = time.perf_counter()
    head = train_head(
        "intent", emb[train_idx], [labels[i] for i in train_idx], kind="logreg", negatives=negatives or None
    )
    train_s = time.perf_counter() - t0
    index = {c: i for i, c in enumerate(head.labels)}
    unknown = np.array([labels[i] in unknown_classes for i in test_idx])
    true = np.array([index.get(labels[i], -1) for i in test_idx], dtype=np.int64)
    out = head.predict(emb[test_idx])
    assert head.escalation is not None and out.escalation_score is not None
    inside = ~unknown
    correct = (out.probs.argmax(axis=1) == true)[inside]
    result: dict[str, Any] = {
        "seed": seed,
        "unknown_intents": sorted(unknown_classes),
        "train": len(train_idx),
        "test_in_scope": int(inside.sum()),
        "test_unknown": int(unknown.sum()),
        "train_s": round(train_s, 1),
        "fit": head.escalation.report,
        "weights": dict(
            zip(head.escalation.to_json()["features"], np.round(head.escalation.weights, 3).tolist(), strict=True)
        ),
    }
    score = out.escalation_score
    conf_rank = 1.0 - out.confidence
    for name, rate in (("budget_3", 0.03), ("budget_10", 0.10)):
        m = escalation_metrics(head, out, true, unknown, rate)
        result[name] = {
            "in_scope_accuracy": round(m["in_scope_accuracy"], 4),
            "oos_recall": round(m["oos_recall"], 4),
            "in_scope_escalated": round(m["in_scope_escalated"], 4),
            "accuracy_kept_all_rows": round(m["policy"]["accuracy_kept"], 4),
            "in_scope_accuracy_kept": round(m["policy"]["in_scope_accuracy_kept"], 4),
        }
    result["oracle"] = {
        "score_oos_recall@3%": escalation_metrics(head, out, true, unknown)["oracle_oos_recall"]["0.03"],
        "confidence_oos_recall@3%": float((conf_rank[unknown] > np.quantile(conf_rank[inside], 0.97)).mean()),
        "score_kept@10%": kept_in_scope(score[inside], correct, float(np.quantile(score[inside], 0.9)))[1],
        "confidence_kept@10%": kept_in_scope(conf_rank[inside], correct, float(np.quantile(conf_rank[inside], 0.9)))[1],
    }
    fixed = (out.confidence < 0.55) | (out.margin < 0.10) | out.oos
    result["fixed_policy"] = {
        "oos_recall": round(float(fixed[unknown].mean()), 4),
        "in_scope_escalated": round(float(fixed[inside].mean()), 4),
        "in_scope_accuracy_kept": round(float(correct[~fixed[inside]].mean()), 4),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--source", default=None, help="weights package or HF dir (default: MiniLM)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--unknown", type=int, default=10, help="intents held out as unknown (default 10)")
    ap.add_argument("--negatives", type=Path, nargs="*", default=[], help="text files of out-of-scope lines")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with args.data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    labels = [r["category"] for r in rows]
    src = resolve_source(args.source)
    with tempfile.TemporaryDirectory() as tmp:
        convert_checkpoint(src.path, Path(tmp) / "ct2")
        enc = Encoder(Path(tmp) / "ct2", src.path / "tokenizer.json", device="cpu", compute_type="int8")
        emb = enc.encode(texts)
        negatives = {
            f"file:{p.name}": enc.encode([x for x in p.read_text(errors="replace").splitlines()[:1000] if x.strip()])
            for p in args.negatives
        }
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = run_seed(emb, labels, seed, args.unknown, negatives)
        print(json.dumps(r), flush=True)
        runs.append(r)

    def mean(path: tuple[str, str]) -> float:
        return float(np.mean([r[path[0]][path[1]] for r in runs]))

    print()
    print(f"BANKING77, {args.unknown} intents unknown, seeds {args.seeds}, source {src.path.name}")
    print("| measure | escalation score | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    table = [
        ("oos_recall, budget 3% (calibrated threshold)", ("budget_3", "oos_recall"), None),
        ("in-scope escalated, budget 3%", ("budget_3", "in_scope_escalated"), None),
        (
            "oos_recall, 3% in-scope (oracle threshold) vs confidence",
            ("oracle", "score_oos_recall@3%"),
            ("oracle", "confidence_oos_recall@3%"),
        ),
        ("in-scope kept accuracy, budget 10%", ("budget_10", "in_scope_accuracy_kept"), None),
        ("in-scope escalated, budget 10%", ("budget_10", "in_scope_escalated"), None),
        (
            "kept accuracy, 10% in-scope (oracle) vs confidence",
            ("oracle", "score_kept@10%"),
            ("oracle", "confidence_kept@10%"),
        ),
        (
            "fixed policy: oos_recall / in-scope escalated",
            ("fixed_policy", "oos_recall"),
            ("fixed_policy", "in_scope_escalated"),
        ),
    ]
    for name, ours, base in table:
        a = mean(ours)
        b = mean(base) if base else None
        ratio = f"{a / b:.2f}" if b else ""
        print(f"| {name} | {a:.4f} | {'' if b is None else f'{b:.4f}'} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"source": str(src.path), "runs": runs}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
