"""Encoder throughput: PyTorch fp32 (when importable) vs CTranslate2 float32 and int8, one process.

    python bench/bench_models.py [--texts 256] [--repeats 3] [--batch-sizes 1,8,32,64,128] [--json out.json]

Run it with an interpreter that has torch + transformers to get the PyTorch baseline (it is skipped
otherwise). Every backend embeds the same texts (BANKING77 queries when the file is there, plus synthesized
multi-sentence tickets, interleaved) with the same pooling (mean over real tokens, L2-normalised). Numbers
are medians over repeats (backends take turns); latency percentiles are per batch within a repeat.
"+RSS MB" is the resident memory a backend added when it was loaded. CTranslate2 rows run
with and without length bucketing (sorting a batch by length and splitting it to bound padding);
PyTorch pads each batch to its longest text, as a plain HF pipeline does.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.models.convert import convert_checkpoint
from streamer.models.encoder import Encoder
from streamer.models.sources import resolve_source

BANKING77 = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"

_OPENERS = [
    "Hello support team,",
    "Hi,",
    "Good morning,",
    "Dear customer service,",
    "To whom it may concern,",
]
_SENTENCES = [
    "I ordered a replacement card two weeks ago and it still has not arrived at my home address.",
    "Yesterday the mobile app showed a pending transaction of 49.99 EUR that I never made.",
    "Our finance department noticed that the March invoice lists three seats although we only have two.",
    "When I try to log in from the web portal I get an error saying my session has expired.",
    "The transfer to my savings account was marked as completed but the money is not there.",
    "I already contacted you by phone last Friday and was promised a call back within 24 hours.",
    "Could you please check whether the exchange rate applied to my payment in dollars was correct?",
    "This is the third time this month that the payment page times out during checkout.",
    "We have a team of twelve people depending on this integration for our daily reporting.",
    "The confirmation email mentions a reference number that your chat agent could not find.",
    "I would like to understand why my direct debit was declined even though my balance was sufficient.",
    "Please also tell me how I can prevent this from happening again in the future.",
    "The error message reads 'internal error 502, please try again later' every single time.",
    "My colleague has the same problem on a different laptop and a different network.",
    "I am getting quite frustrated because nobody seems to take responsibility for the issue.",
]
_CLOSERS = ["Thanks in advance.", "Kind regards, Maria", "Best, Tom", "Looking forward to your answer.", ""]


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Half short queries (BANKING77 or short sentences), half long tickets of 4-10 sentences, interleaved."""
    rng = random.Random(seed)
    if BANKING77.is_file():
        with BANKING77.open(newline="", encoding="utf-8") as fh:
            short = [r["text"] for r in csv.DictReader(fh)]
    else:
        short = [s.split(",")[0] for s in _SENTENCES]
    out: list[str] = []
    for i in range(n):
        if i % 2 == 0:
            out.append(rng.choice(short))
        else:
            body = " ".join(rng.sample(_SENTENCES, rng.randint(4, 10)))
            out.append(f"{rng.choice(_OPENERS)} {body} {rng.choice(_CLOSERS)}".strip())
    return out


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(fn: Callable[[Sequence[str]], Any], texts: list[str], batch: int, repeats: int) -> dict[str, float]:
    rates: list[float] = []
    latencies: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            t0 = time.perf_counter()
            fn(texts[i : i + batch])
            latencies.append(time.perf_counter() - t0)
        rates.append(len(texts) / (time.perf_counter() - start))
    return {
        "texts_per_s": statistics.median(rates),
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def torch_backend(model_dir: Path, max_length: int, threads: int) -> Callable[[Sequence[str]], Any] | None:
    try:
        import torch
        import transformers
    except ImportError:
        return None
    torch.set_num_threads(threads)
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()

    def encode(texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=256, help="texts per repeat (default 256)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,8,32,64,128")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--source", default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    texts = make_texts(args.texts)
    src = resolve_source(args.source)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {"texts": len(texts), "repeats": args.repeats, "threads": args.threads, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "ct2"
        convert_checkpoint(src.path, model_dir)
        enc_probe = Encoder(model_dir, src.path / "tokenizer.json", device="cpu", max_length=args.max_length)
        lengths = [len(i) for i in enc_probe.tokenize(texts)]
        results["token_length"] = {
            "mean": float(np.mean(lengths)),
            "p50": float(np.median(lengths)),
            "max": int(max(lengths)),
        }
        del enc_probe
        print(f"{len(texts)} texts, tokens mean {np.mean(lengths):.0f} / max {max(lengths)}", file=sys.stderr)

        backends: list[tuple[str, Callable[[], Callable[[Sequence[str]], Any] | None]]] = []
        for ct in ("float32", "int8"):
            for bucketing in (True, False):

                def load(ct: str = ct, bucketing: bool = bucketing) -> Callable[[Sequence[str]], Any]:
                    enc = Encoder(
                        model_dir,
                        src.path / "tokenizer.json",
                        device="cpu",
                        compute_type=ct,
                        max_length=args.max_length,
                        intra_threads=args.threads,
                        bucketing=bucketing,
                        batch_size=128,
                    )
                    return enc.encode

                backends.append((f"ct2-{ct}{'' if bucketing else '-nobucket'}", load))
        if not args.no_torch:
            backends.insert(0, ("torch-fp32", lambda: torch_backend(src.path, args.max_length, args.threads)))

        loaded: list[tuple[str, Callable[[Sequence[str]], Any], float, float]] = []
        for name, loader in backends:
            gc.collect()
            before = rss_mb()
            t0 = time.perf_counter()
            fn = loader()
            load_s = time.perf_counter() - t0
            if fn is None:
                print(f"{name}: skipped (torch/transformers not importable)", file=sys.stderr)
                continue
            fn(texts[:8])
            loaded.append((name, fn, load_s, rss_mb() - before))
        results["rss_mb_all_loaded"] = rss_mb()
        # Backends take turns batch size by batch size, repeat by repeat, so load from other processes
        # on a shared host hits them alike and the ratios stay meaningful.
        for batch in sizes:
            samples: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in loaded}
            for _name, fn, *_ in loaded:
                fn(texts[:batch])  # warm-up at this batch shape
            for _ in range(args.repeats):
                for name, fn, _load_s, _rss in loaded:
                    samples[name].append(measure(fn, texts, batch, 1))
            for name, _fn, load_s, load_rss in loaded:
                ms = samples[name]
                row = {
                    "backend": name,
                    "batch": batch,
                    "texts_per_s": statistics.median(m["texts_per_s"] for m in ms),
                    "p50_ms": statistics.median(m["p50_ms"] for m in ms),
                    "p99_ms": statistics.median(m["p99_ms"] for m in ms),
                    "load_s": load_s,
                    "load_rss_mb": load_rss,
                }
                rows.append(row)
                print(f"{name:<22} b={batch:<4} {row['texts_per_s']:7.1f} texts/s", file=sys.stderr, flush=True)
    base = {r["batch"]: r["texts_per_s"] for r in rows if r["backend"] == "torch-fp32"}
    for r in rows:
        r["vs_torch"] = r["texts_per_s"] / base[r["batch"]] if r["batch"] in base else None
    header = (
        f"{'backend':<22}{'batch':>6}{'texts/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'+RSS MB':>8}{'load s':>8}{'vs torch':>9}"
    )
    print(header)
    for r in rows:
        ratio = f"{r['vs_torch']:.2f}x" if r["vs_torch"] else "-"
        print(
            f"{r['backend']:<22}{r['batch']:>6}{r['texts_per_s']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['load_rss_mb']:>8.0f}{r['load_s']:>8.2f}{ratio:>9}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
