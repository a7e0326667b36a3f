"""``make bench``: every benchmark, one table with ratios, a JSON record and a chart.

    python bench/run_all.py [--name NAME] [--quick] [--repeats 3]

Runs, each in its own process so one cannot warm or starve the next:
  1. bench_models.py       encoder texts/s by batch size: CTranslate2 float32/int8 (with and without length
                           bucketing) and PyTorch fp32 when the interpreter in BENCH_TORCH_PYTHON (or this one)
                           has torch;
  2. bench_ticket_worker.py the ticket worker through the real broker vs the bare core (repeated);
  3. bench_log_worker.py   log lines/s of one worker process through the real broker (repeated);
  4. bench_log_parsing.py  template-mining accuracy (GA/PA) on the Loghub samples, when ../shared has them,
     header_robustness.py: the same messages behind 21 common header shapes (the GA the decoder loses), and
     value_robustness.py: their parameters refilled with values of 9 other shapes (the GA the miner loses);
  5. bench_cpu_backends.py int8 speed, BANKING77 accuracy and parity on MKL, oneDNN and oneDNN/AVX2, when
                           ../shared has BANKING77;
  6. bench_latency_curve.py ticket latency p50/p99 (short and long tickets) at 10/30/60/90% of capacity and
                           saturation throughput, adaptive vs fixed batching side by side in one run;
  7. bench_encoder_flops.py the encoder's FLOP/s against numpy's GEMM rate at its shapes, per CPU backend,
                           and where the ticket core's time goes;
  8. eval_live_escalation.py the live escalation rate on demo tickets against the bundle's budget, spending
                           unused budget (the default) and at the calibrated threshold alone.
Figures are medians of the repeats; the table shows min-max. Writes bench/results/<name>.json and
bench/results/<name>.png (throughput vs batch size, worker latency percentiles).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SHARED = REPO.parent / "shared" / "data"


def run(cmd: list[str], *, timeout: float) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, timeout=timeout)


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = {"avx", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "sse4_2", "amx_int8"}
                return sorted(set(line.split(":", 1)[1].split()) & wanted)
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("streamer", "ctranslate2", "tokenizers", "numpy", "aiokafka", "faust-streaming", "orjson"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "-"
    from streamer.kafka.local import KAFKA_VERSION

    out["kafka"] = KAFKA_VERSION
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def chart(models: dict[str, Any], tickets: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    backends = sorted({r["backend"] for r in models.get("rows", [])})
    for backend in backends:
        rows = sorted((r for r in models["rows"] if r["backend"] == backend), key=lambda r: r["batch"])
        left.plot([r["batch"] for r in rows], [r["texts_per_s"] for r in rows], marker="o", label=backend)
    left.set_xscale("log", base=2)
    left.set_xlabel("batch size")
    left.set_ylabel("texts/s")
    left.set_title("Encoder throughput vs batch size")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    if tickets:
        labels = ["p50", "p99"]
        for i, run_ in enumerate(tickets):
            values = [run_["latency_ms"]["p50"], run_["latency_ms"]["p99"]]
            right.bar([x + i * 0.25 for x in range(2)], values, width=0.25, label=f"run {i + 1}")
        right.set_xticks([x + 0.25 for x in range(2)], labels)
        right.set_ylabel("ms")
        right.set_title(f"Ticket worker latency (produce to enriched) at {tickets[0]['latency_rate_per_s']:.0f}/s")
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=time.strftime("bench-%Y%m%d-%H%M%S"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the harness)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    torch_py = os.environ.get("BENCH_TORCH_PYTHON", py)
    started = time.monotonic()
    quick = args.quick

    models_json = RESULTS / f"{args.name}.models.json"
    from streamer.models.sources import resolve_source

    weights = resolve_source().path  # found here, so an interpreter with torch needs no weights package
    run(
        [
            torch_py,
            "bench/bench_models.py",
            "--source",
            str(weights),
            "--texts",
            "64" if quick else "128",
            "--repeats",
            "1" if quick else str(args.repeats),
            "--batch-sizes",
            "1,8,64" if quick else "1,8,32,64,128",
            "--json",
            str(models_json),
        ],
        timeout=900,
    )
    models = json.loads(models_json.read_text())

    tickets = []
    for i in range(1 if quick else args.repeats):
        out = RESULTS / f"{args.name}.tickets.{i}.json"
        run(
            [
                py,
                "bench/bench_ticket_worker.py",
                "--tickets",
                "300" if quick else "2000",
                "--latency-seconds",
                "5" if quick else "15",
                "--json",
                str(out),
            ],
            timeout=900,
        )
        tickets.append(json.loads(out.read_text()))

    logs = []
    for i in range(1 if quick else args.repeats):
        out = RESULTS / f"{args.name}.logs.{i}.json"
        run(
            [
                py,
                "bench/bench_log_worker.py",
                "--lines",
                "20000" if quick else "100000",
                "--bare",
                "0",
                "--json",
                str(out),
            ],
            timeout=900,
        )
        logs.append(json.loads(out.read_text()))

    parsing: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    if (SHARED / "loghub").is_dir():
        out = RESULTS / f"{args.name}.parsing.json"
        run([py, "bench/bench_log_parsing.py", "--no-drain3", "--json", str(out)], timeout=600)
        parsing = json.loads(out.read_text())
        out = RESULTS / f"{args.name}.header-robustness.json"
        run([py, "bench/header_robustness.py", "--json", str(out)], timeout=600)
        headers = json.loads(out.read_text())
        out = RESULTS / f"{args.name}.value-robustness.json"
        run([py, "bench/value_robustness.py", "--json", str(out)], timeout=600)
        values = json.loads(out.read_text())

    cpu_backends: dict[str, Any] | None = None
    if (SHARED / "banking77" / "train.csv").is_file() and not quick:
        out = RESULTS / f"{args.name}.cpu-backends.json"
        run([py, "bench/bench_cpu_backends.py", "--json", str(out)], timeout=1200)
        cpu_backends = json.loads(out.read_text())["backends"]

    curve_json = RESULTS / f"{args.name}.latency-curve.json"
    run(
        [py, "bench/bench_latency_curve.py", "--json", str(curve_json)]
        + (["--seconds", "5", "--backlog", "400", "--levels", "0.1,0.6"] if quick else []),
        timeout=1800,
    )
    curve: dict[str, Any] = json.loads(curve_json.read_text())

    flops: dict[str, Any] | None = None
    if not quick:
        out = RESULTS / f"{args.name}.encoder-flops.json"
        run([py, "bench/bench_encoder_flops.py", "--json", str(out)], timeout=1800)
        flops = json.loads(out.read_text())

    live_json = RESULTS / f"{args.name}.live-escalation.json"
    run([py, "bench/eval_live_escalation.py", "--json", str(live_json)], timeout=900)
    live_escalation: dict[str, Any] = json.loads(live_json.read_text())

    def model_rate(backend: str, batch: int) -> float | None:
        for r in models.get("rows", []):
            if r["backend"] == backend and r["batch"] == batch:
                return float(r["texts_per_s"])
        return None

    int8 = model_rate("ct2-int8", 64)
    torch64 = model_rate("torch-fp32", 64)
    summary = {
        "ct2_int8_b64_texts_per_s": int8,
        "torch_fp32_b64_texts_per_s": torch64,
        "ratio_ct2_int8_to_torch_fp32": (int8 / torch64) if int8 and torch64 else None,
        "ticket_bare_per_s": spread([t["bare_tickets_per_s"] for t in tickets]),
        "ticket_e2e_per_s": spread([t["e2e_tickets_per_s"] for t in tickets]),
        "ratio_e2e_to_bare": spread([t["ratio_e2e_to_bare"] for t in tickets]),
        "ticket_latency_p50_ms": spread([t["latency_ms"]["p50"] for t in tickets]),
        "ticket_latency_p99_ms": spread([t["latency_ms"]["p99"] for t in tickets]),
        "ticket_worker_rss_mb": spread([t["worker_peak_rss_mb"] for t in tickets]),
        "log_lines_per_s": spread([float(lg["lines_per_s"]) for lg in logs]),
        "log_ga_avg": parsing.get("average", {}).get("ga") if parsing else None,
        "log_pa_avg": parsing.get("average", {}).get("pa") if parsing else None,
        "header_worst_ga_gap": min(min(row.values()) for row in headers["gap"].values()) if headers else None,
        "value_shape_ga_gap": (
            {k: statistics.fmean(row.values()) for k, row in values["gap"].items()} if values else None
        ),
    }
    record = {
        "name": args.name,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_flags": cpu_flags(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "versions": versions(),
        "settings": {"repeats": args.repeats, "quick": quick, "torch_python": torch_py},
        "summary": summary,
        "models": models,
        "tickets": tickets,
        "logs": logs,
        "parsing": parsing,
        "header_robustness": headers,
        "value_robustness": values,
        "cpu_backends": cpu_backends,
        "latency_curve": curve,
        "encoder_flops": flops,
        "live_escalation": live_escalation,
        "elapsed_s": time.monotonic() - started,
    }
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    png = RESULTS / f"{args.name}.png"
    has_chart = chart(models, tickets, png)

    print("\n" + "=" * 78)
    print(f"{'measure':<46}{'median (min-max)':>32}")
    print("-" * 78)
    if int8:
        print(f"{'CTranslate2 int8 texts/s, batch 64':<46}{int8:>32.1f}")
    if torch64:
        print(f"{'PyTorch fp32 texts/s, batch 64':<46}{torch64:>32.1f}")
        print(f"{'ratio CT2 int8 / PyTorch fp32 (target >= 3)':<46}{summary['ratio_ct2_int8_to_torch_fp32']:>32.2f}")
    else:
        print(f"{'PyTorch fp32':<46}{'not installed here':>32}")
    print(f"{'ticket core alone, tickets/s':<46}{fmt(summary['ticket_bare_per_s']):>32}")
    print(f"{'ticket worker end to end, tickets/s':<46}{fmt(summary['ticket_e2e_per_s']):>32}")
    print(f"{'ratio end-to-end / bare (target >= 0.85)':<46}{fmt(summary['ratio_e2e_to_bare'], 2):>32}")
    print(f"{'ticket latency p50 ms':<46}{fmt(summary['ticket_latency_p50_ms'], 0):>32}")
    print(f"{'ticket latency p99 ms':<46}{fmt(summary['ticket_latency_p99_ms'], 0):>32}")
    print(f"{'ticket worker peak RSS MB':<46}{fmt(summary['ticket_worker_rss_mb'], 0):>32}")
    print(f"{'log lines/s, one worker (target >= 20,000)':<46}{fmt(summary['log_lines_per_s'], 0):>32}")
    if parsing:
        ga_pa = f"{summary['log_ga_avg']:.3f} / {summary['log_pa_avg']:.3f}"
        print(f"{'template mining GA / PA, Loghub average':<46}{ga_pa:>32}")
    if headers:
        gap = f"{summary['header_worst_ga_gap']:.3f}"
        print(f"{'GA lost behind 21 header shapes, worst system':<46}{gap:>32}")
    for shape, lost in (summary["value_shape_ga_gap"] or {}).items():
        print(f"{'GA lost, parameters refilled: ' + shape:<46}{lost:>32.3f}")
    for backend, fig in (cpu_backends or {}).items():
        line = f"{fig['texts_per_s_batch32']:.0f} texts/s, acc {fig['banking77_accuracy']:.4f}"
        print(f"{'int8 on ' + backend + ', batch 32 / BANKING77':<46}{line:>32}")
    for row in curve["rows"]:
        label = f"{row['mode']} batching, {int(row['level'] * 100)}% load: p50/p99 ms"
        figure = f"{row['all']['p50']:.0f} / {row['all']['p99']:.0f} at {row['achieved_per_s']:.0f}/s"
        print(f"{label:<46}{figure:>32}")
    for mode, rate in curve["saturation_mean_per_s"].items():
        print(f"{mode + ' batching, saturation tickets/s':<46}{rate:>32.1f}")
    for backend, fig in (flops or {}).get("backends", {}).items():
        for ct in ("int8", "float32"):
            line = f"{fig[ct]['forward_efficiency']:.2f} (core {fig[ct]['core_efficiency']:.2f})"
            print(f"{'encoder FLOP/s / GEMM rate, ' + backend + ' ' + ct:<46}{line:>32}")
    budget = live_escalation["budget"]
    for row in live_escalation["runs"]:
        line = f"{row['spending']['rate']:.2%} (calibrated only {row['calibrated']['rate']:.2%})"
        print(f"{f'escalation rate, budget {budget:.0%}, demo seed ' + str(row['seed']):<46}{line:>32}")
    print("-" * 78)
    print(f"wrote {path.relative_to(REPO)}" + (f" and {png.relative_to(REPO)}" if has_chart else ""))
    print(f"took {record['elapsed_s'] / 60:.1f} min; load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
