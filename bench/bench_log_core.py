"""Throughput of the pure log core on one core: decode, template mining, extraction, burst counting.

    python bench/bench_log_core.py [--n 50000] [--seed 7] [--runs 3] [--batch 500] [--baseline main] [--loghub DIR]
                                   [--cpu]

Input is a realistic mix from ``streamer.demo.demo_log_lines`` (JSON shipper records and nginx,
syslog, postgres and ISO text lines, stack traces, bursts), encoded to bytes as they would arrive
from Kafka; without the demo module a small built-in generator stands in. Each stage is timed over
the whole input, fresh state per run; the table shows the median of ``--runs`` runs. ``redact`` is the log
path's redaction alone (gate, IP-only path, full search when it declines). The last row is
the complete ``triage_logs`` (adds PII redaction, output records and a stub incident model) in
batches of ``--batch``, for comparison: redaction is the most expensive step of log triage.

``--baseline REF`` measures the ``streamer`` package of git revision REF in the same run: each run
alternates a child process on REF's code and one on this tree's, on the same input, so a busy machine
slows both alike; the table then shows both and their ratio.

``--loghub DIR`` replaces the mix with the raw lines of every ``<S>/<S>_2k.log`` under DIR (Loghub
samples), repeated or cut to ``--n`` lines: real systems' headers, block ids and addresses.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
_ROOT = sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv else str(REPO)
sys.path.insert(0, _ROOT)

import streamer.logs.triage as _log_triage  # noqa: E402
from streamer.events import RawEvent, Source  # noqa: E402
from streamer.logs import (  # noqa: E402
    BurstDetector,
    LogRecord,
    LogTriageState,
    TemplateMiner,
    decode_log,
    extract_log_entities,
    headline,
    ip_entities,
    triage_logs,
)

T0 = 1_795_860_000_000
# ``--cpu`` times with this process's CPU time: on a shared, busy machine it counts the work, not the wait.
_clock = time.process_time if "--cpu" in sys.argv else time.perf_counter


def _fallback_lines(n: int, seed: int) -> Iterator[dict[str, Any] | str]:
    rng = random.Random(seed)
    for _ in range(n):
        roll = rng.random()
        if roll < 0.4:
            yield {
                "timestamp": "2026-11-28T10:00:00.123Z",
                "level": rng.choice(["INFO", "INFO", "WARN", "ERROR"]),
                "service": rng.choice(["checkout-api", "auth-service"]),
                "message": f"Order ORD-{rng.randint(10**5, 10**6)} created for customer C-{rng.randint(100, 999)}",
                "trace_id": f"{rng.getrandbits(64):016x}",
            }
        elif roll < 0.7:
            yield (
                f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.0.{rng.randint(1, 254)} - - [28/Nov/2026:10:00:00 +0000] "
                f'"GET /api/v1/items/{rng.randint(1, 9999)} HTTP/1.1" 200 {rng.randint(100, 9000)} "-" "curl/8.0"'
            )
        elif roll < 0.9:
            pid, ip, port = rng.randint(100, 9999), rng.randint(1, 254), rng.randint(1024, 65535)
            yield f"Nov 28 10:00:00 bastion-1 sshd[{pid}]: Failed password for root from 10.0.0.{ip} port {port} ssh2"
        else:
            yield f"2026-11-28T10:00:00Z ERROR [payments] Payment gateway timeout after {rng.randint(1000, 9000)} ms"


def loghub_input(n: int, root: str) -> list[RawEvent]:
    """``n`` raw Loghub lines (all systems in turn, repeated when fewer), as text values without a key."""
    lines: list[str] = []
    for path in sorted(Path(root).glob("*/*_2k.log")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        raise SystemExit(f"no <S>/<S>_2k.log under {root}")
    return [RawEvent(lines[i % len(lines)].encode(), Source("ops.logs.v1", 0, i, T0 + i * 50), None) for i in range(n)]


def make_input(n: int, seed: int) -> list[RawEvent]:
    try:
        from streamer.demo import demo_log_lines

        lines: Iterator[dict[str, Any] | str] = demo_log_lines(n, seed)
    except ImportError:
        lines = _fallback_lines(n, seed)
    raws = []
    for i, line in enumerate(lines):
        if isinstance(line, dict):
            value, key = orjson.dumps(line), str(line.get("service", "unknown")).encode()
        else:
            value, key = line.encode(), None
        raws.append(RawEvent(value, Source("ops.logs.v1", 0, i, T0 + i * 50), key))
    return raws


class StubIncidentModel:
    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        return [("unclassified", 0.5)] * len(templates)


def run_stages(raws: Sequence[RawEvent]) -> dict[str, float]:
    """Seconds per stage over the whole input."""
    t0 = _clock()
    records = [r for r in (decode_log(raw) for raw in raws) if isinstance(r, LogRecord)]
    t1 = _clock()
    miner = TemplateMiner()
    templates = [miner.add(headline(r.message), r.time_ms) for r in records]
    t2 = _clock()
    for r in records:
        extract_log_entities(r.message, r.fields)
        ip_entities(r.message)
    t3 = _clock()
    bursts = BurstDetector()
    for r, t in zip(records, templates, strict=True):
        if r.time_ms is not None:
            bursts.observe(r.service, t.id, r.time_ms, r.severity)
    t4 = _clock()
    for r in records:
        _log_triage._redacted(r.message)
    t5 = _clock()
    _forget_redactions()  # the triage row starts as cold as it would without this stage
    return {"decode": t1 - t0, "template": t2 - t1, "extract": t3 - t2, "bursts": t4 - t3, "redact": t5 - t4}


def _forget_redactions() -> None:
    seen = getattr(_log_triage, "_SEEN", None)
    if seen is not None:
        seen.clear()


def run_triage(raws: Sequence[RawEvent], batch: int) -> float:
    records = [r for r in (decode_log(raw) for raw in raws) if isinstance(r, LogRecord)]
    state, model = LogTriageState(), StubIncidentModel()
    t0 = _clock()
    for i in range(0, len(records), batch):
        triage_logs(records[i : i + batch], state, model)
    return _clock() - t0


def measure(n: int, seed: int, batch: int, loghub: str | None = None) -> dict[str, float]:
    """One run: seconds per stage, the core and the full triage over ``n`` lines."""
    raws = loghub_input(n, loghub) if loghub else make_input(n, seed)
    stages = run_stages(raws)
    core = sum(v for k, v in stages.items() if k != "redact")
    return {**stages, "core": core, "triage": run_triage(raws, batch), "n": float(len(raws))}


def _child(root: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--root", root, "--n", str(args.n), "--seed", str(args.seed)]
    cmd += ["--batch", str(args.batch), *(["--loghub", args.loghub] if args.loghub else [])]
    cmd += ["--cpu"] if args.cpu else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _baseline_tree(ref: str, into: Path) -> str:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "streamer"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return str(into)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="log lines (default 50000)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the generated mix (default 7)")
    ap.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    ap.add_argument("--batch", type=int, default=500, help="batch size of the triage_logs row (default 500)")
    ap.add_argument("--baseline", default=None, help="git revision measured alongside, run by run (e.g. main)")
    ap.add_argument("--loghub", default=None, help="use the raw lines of the Loghub samples under this folder")
    ap.add_argument("--cpu", action="store_true", help="time CPU seconds of the process instead of wall-clock")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.n, args.seed, args.batch, args.loghub)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        base_root = _baseline_tree(args.baseline, Path(tmp)) if args.baseline else None
        runs: list[dict[str, float]] = []
        base_runs: list[dict[str, float]] = []
        for _ in range(args.runs):
            if base_root is not None:
                base_runs.append(_child(base_root, args))
                runs.append(_child(str(REPO), args))
            else:
                runs.append(measure(args.n, args.seed, args.batch, args.loghub))
    n = runs[0]["n"]

    def med(rs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    names = ("decode", "template", "extract", "bursts")
    label = {
        "core": "core: decode+template+extract+bursts",
        "redact": "redaction alone (the log path's)",
        "triage": "triage_logs (adds redaction, outputs)",
    }
    print(
        f"{int(n)} {'Loghub' if args.loghub else 'demo mix'} lines, median of {args.runs} runs, one core"
        + (f", baseline {args.baseline} run by run" if base_runs else "")
        + (", CPU time" if args.cpu else "")
    )
    head = f"{'stage':<38} {'us/line':>8} {'lines/s':>10}"
    if base_runs:
        head += f" | {'baseline lines/s':>16} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for key in (*names, "core", "redact", "triage"):
        if key == "core":
            print("-" * len(head))
        secs = med(runs, key)
        row = f"{label.get(key, key):<38} {secs / n * 1e6:8.2f} {n / secs:10.0f}"
        if base_runs:
            base = med(base_runs, key)
            row += f" | {n / base:16.0f} {base / secs:6.2f}"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
