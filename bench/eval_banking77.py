"""BANKING77 intent accuracy of the model runtime: frozen or fine-tuned encoder, several heads.

    python bench/eval_banking77.py [--data ../shared/data/banking77/train.csv] [--source DIR] [--json out.json]

BANKING77 ships here as its training file only, so a stratified 20% test split is carved with a fixed seed
(``stratified_split(labels, 0.2, seed=0)``: 8005 train / 1998 test). Heads are trained on the 80% (which
``train_head`` splits again 80/20 for calibration) and scored on the 20%. The last step builds a real bundle
with ``build_bundle`` and scores it with ``evaluate``, the path ``streamer models build/eval`` takes.
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

from streamer.models.build import HeadSpec, build_bundle
from streamer.models.bundle import load_bundle
from streamer.models.convert import convert_checkpoint
from streamer.models.encoder import Encoder
from streamer.models.evaluate import classification_metrics, evaluate
from streamer.models.heads import class_centroids, knn_probs, softmax, stratified_split, train_head
from streamer.models.sources import resolve_source

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"
LOGHUB = DEFAULT_DATA.parents[1] / "loghub"
DEFAULT_OOS = [LOGHUB / "Linux" / "Linux_2k.log", LOGHUB / "OpenSSH" / "OpenSSH_2k.log"]


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "ece": round(m["ece"], 4),
        "selective_kept_at_5": round(m["selective"]["0.05"]["accuracy_kept"], 4),
        "selective_kept_at_10": round(m["selective"]["0.1"]["accuracy_kept"], 4),
        "selective_kept_at_20": round(m["selective"]["0.2"]["accuracy_kept"], 4),
    }


def split_variance(
    emb: np.ndarray, labels: list[str], y: np.ndarray, classes: list[str], seeds: list[int]
) -> dict[str, Any]:
    """The build-default head on the 20% split of each seed, with the mean and range of each figure."""
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        train_idx, test_idx = stratified_split(labels, 0.2, seed=seed)
        head = train_head("intent", emb[train_idx], [labels[i] for i in train_idx], kind="logreg")
        per_seed[str(seed)] = summarize(classification_metrics(head.predict(emb[test_idx]).probs, y[test_idx], classes))
        print(f"  seed {seed}: {json.dumps(per_seed[str(seed)])}", flush=True)
    spread = {
        key: {
            "mean": round(float(np.mean([m[key] for m in per_seed.values()])), 4),
            "min": min(m[key] for m in per_seed.values()),
            "max": max(m[key] for m in per_seed.values()),
        }
        for key in ("accuracy", "selective_kept_at_10", "selective_kept_at_20")
    }
    return {"per_seed": per_seed, "spread": spread}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--source", default=None, help="weights package or HF dir (e.g. a fine-tuned encoder)")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--max-lengths", default="256", help="comma-separated, e.g. 32,64,256")
    ap.add_argument("--poolings", default="mean", help="comma-separated: mean,cls")
    ap.add_argument(
        "--heads",
        default="logreg,logreg-knn,mlp,centroid,knn,ensemble",
        help="also: logreg-norefit (logreg-knn: the build default, neighbour share chosen on held-out data)",
    )
    ap.add_argument("--no-bundle", action="store_true", help="skip the end-to-end build_bundle + evaluate")
    ap.add_argument(
        "--split-seeds",
        default="",
        help="also score the build-default head (logreg + neighbour vote, auto share) on the 20%% splits of these "
        "seeds, e.g. 0,1,2,3,4, to show how much one split's luck moves the figures; only meaningful for an "
        "encoder not fine-tuned on this data (its training split would overlap the other seeds' test sets)",
    )
    ap.add_argument(
        "--oos-files",
        type=Path,
        nargs="*",
        default=[p for p in DEFAULT_OOS if p.is_file()],
        help="text files whose lines are out of scope for banking intents (default: two loghub logs)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    oos_texts = [
        line.strip() for path in args.oos_files for line in path.read_text(errors="replace").splitlines()[:500]
    ]

    with args.data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    labels = [r["category"] for r in rows]
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels])
    ytr, yte = y[train_idx], y[test_idx]
    print(f"split: {len(train_idx)} train / {len(test_idx)} test, {len(classes)} classes, seed 0", flush=True)

    src = resolve_source(args.source)
    results: dict[str, Any] = {
        "source": str(src.path),
        "split": {"train": len(train_idx), "test": len(test_idx), "seed": 0, "fraction": 0.2},
        "compute_type": args.compute_type,
        "runs": [],
    }
    wanted = args.heads.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "ct2"
        convert_checkpoint(src.path, model_dir)
        for pooling in args.poolings.split(","):
            for max_length in (int(v) for v in args.max_lengths.split(",")):
                enc = Encoder(
                    model_dir,
                    src.path / "tokenizer.json",
                    device="cpu",
                    compute_type=args.compute_type,
                    max_length=max_length,
                    pooling=pooling,  # type: ignore[arg-type]
                )
                t0 = time.perf_counter()
                emb = enc.encode(texts)
                embed_s = time.perf_counter() - t0
                xtr, xte = emb[train_idx], emb[test_idx]
                ltr = [labels[i] for i in train_idx]
                run: dict[str, Any] = {"pooling": pooling, "max_length": max_length, "embed_s": round(embed_s, 1)}
                probs_by: dict[str, np.ndarray] = {}
                for kind in ("logreg", "mlp"):
                    if kind in wanted or (kind == "logreg" and "ensemble" in wanted):
                        t0 = time.perf_counter()
                        head = train_head(kind, xtr, ltr, kind=kind, knn_weight=0.0)  # type: ignore[arg-type]
                        out = head.predict(xte)
                        probs_by[kind] = out.probs
                        run[kind] = summarize(classification_metrics(out.probs, yte, classes))
                        run[kind]["train_s"] = round(time.perf_counter() - t0, 1)
                        run[kind]["temperature"] = round(head.temperature, 3)
                        run[kind]["oos_flagged_test"] = round(float(out.oos.mean()), 4)
                        if oos_texts:
                            probe = head.predict(enc.encode(oos_texts))
                            cut = head.confidence_cutoffs["0.1"]
                            run[kind]["oos_probe"] = {
                                "texts": len(oos_texts),
                                "flagged_oos": round(float(probe.oos.mean()), 4),
                                "below_10pct_confidence_cut": round(float((probe.confidence < cut).mean()), 4),
                                "flagged_either": round(float((probe.oos | (probe.confidence < cut)).mean()), 4),
                            }
                if "logreg-knn" in wanted:
                    head = train_head("auto", xtr, ltr, kind="logreg")
                    run["logreg_knn"] = summarize(classification_metrics(head.predict(xte).probs, yte, classes))
                    run["logreg_knn"]["knn_weight"] = head.knn_weight
                if "logreg-norefit" in wanted:
                    head = train_head("norefit", xtr, ltr, kind="logreg", refit=False, knn_weight=0.0)
                    out = head.predict(xte)
                    run["logreg_norefit"] = summarize(classification_metrics(out.probs, yte, classes))
                    run["logreg_norefit"]["temperature"] = round(head.temperature, 3)
                if "centroid" in wanted:
                    cent = class_centroids(xtr, ytr, len(classes))
                    run["centroid"] = summarize(classification_metrics(softmax(20 * xte @ cent.T), yte, classes))
                if "knn" in wanted or "ensemble" in wanted:
                    probs_by["knn"] = knn_probs(xte, xtr, ytr, len(classes))
                    run["knn"] = summarize(classification_metrics(probs_by["knn"], yte, classes))
                if "ensemble" in wanted:
                    ens = 0.5 * probs_by["logreg"] + 0.5 * probs_by["knn"]
                    run["ensemble_logreg_knn"] = summarize(classification_metrics(ens, yte, classes))
                if args.split_seeds:
                    run["split_seeds"] = split_variance(
                        emb, labels, y, classes, [int(v) for v in args.split_seeds.split(",")]
                    )
                print(json.dumps(run), flush=True)
                results["runs"].append(run)

        if not args.no_bundle:
            train_csv, test_csv = Path(tmp) / "train.csv", Path(tmp) / "test.csv"
            for path, idx in ((train_csv, train_idx), (test_csv, test_idx)):
                with path.open("w", newline="", encoding="utf-8") as fh:
                    w = csv.writer(fh)
                    w.writerow(["text", "category"])
                    w.writerows([texts[i], labels[i]] for i in idx)
            t0 = time.perf_counter()
            out_dir = build_bundle(
                Path(tmp) / "bundle",
                "banking77",
                "eval",
                [HeadSpec("intent", (train_csv,), label_col="category")],
                source=args.source,
                progress=False,
            )
            build_s = time.perf_counter() - t0
            bundle = load_bundle(out_dir, device="cpu", compute_type=args.compute_type)
            m = evaluate(bundle, test_csv, "intent", label_col="category")
            results["bundle"] = {**summarize(m), "build_s": round(build_s, 1)}
            results["bundle"]["held_out_calibration"] = bundle.heads["intent"].metrics
            print("bundle end-to-end:", json.dumps(results["bundle"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
