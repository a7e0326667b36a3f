"""The live escalation rate against the bundle's budget: the worker's processor on demo tickets, with the
threshold spending unused budget (the default) and at the calibrated threshold alone, side by side.

    python bench/eval_live_escalation.py [--tickets 2000] [--seeds 7,1,2] [--batch 32] [--json out.json]

Demo tickets are easier than the calibration split, so the calibrated threshold escalates less than the
budget; ``STREAMER_ESCALATE_SPEND_WINDOW`` lowers it (never below the calibrated threshold of twice the
budget) until recent traffic spends the budget. Per seed and mode: tickets escalated for the intent model's
doubt, the rate after the spender's warm-up, the final threshold, and whether every ticket the calibrated
threshold escalates is still escalated. No Kafka: ``streamer demo --tickets N`` shows the same through the
real worker ("escalated for the intent model's doubt").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.demo.tickets import demo_tickets
from streamer.events import RawEvent, Source
from streamer.pipeline.tickets import TicketProcessor
from streamer.runtime import load_ticket_runtime
from streamer.settings import load_settings
from streamer.topics import TICKETS
from streamer.triage.escalation import MODEL_REASONS


def doubted(processor: TicketProcessor, tickets: list[dict[str, Any]], batch: int) -> list[str]:
    """Ids of the tickets escalated for the intent model's doubt, in order."""
    out: list[str] = []
    codes = {r.value for r in MODEL_REASONS}
    for start in range(0, len(tickets), batch):
        raws = [
            RawEvent(orjson.dumps(t), Source(TICKETS, 0, start + i), key=str(t["id"]).encode())
            for i, t in enumerate(tickets[start : start + batch])
        ]
        for record in processor(raws).outputs:
            if record.topic.endswith("support.tickets.enriched.v1"):
                doc = record.value
                if {r["code"] for r in doc["triage"]["escalation"]["reasons"]} & codes:
                    out.append(str(doc["id"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=2000)
    ap.add_argument("--seeds", default="7,1,2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    settings = load_settings()
    spending = load_ticket_runtime(settings)
    calibrated = load_ticket_runtime(settings.model_copy(update={"escalate_spend_window": 0}), spending.bundle)
    spender = spending.processor.spender
    budget = spending.processor.policy.budget
    if spender is None or budget is None:
        raise SystemExit("the bundle has no escalation budget (or STREAMER_ESCALATE_SPEND_WINDOW=0): nothing to spend")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        tickets = list(demo_tickets(args.tickets, seed=seed))
        warm = {str(t["id"]) for t in tickets[spender.warmup + args.batch :]}
        runs = {}
        for name, runtime in (("spending", load_ticket_runtime(settings, spending.bundle)), ("calibrated", calibrated)):
            ids = doubted(runtime.processor, tickets, args.batch)
            runs[name] = {
                "escalated": len(ids),
                "rate": len(ids) / len(tickets),
                "rate_after_warmup": len(warm & set(ids)) / len(warm),
                "threshold": runtime.processor.escalation_threshold,
                "ids": set(ids),
            }
        kept_all = runs["calibrated"]["ids"] <= runs["spending"]["ids"]
        rows.append(
            {
                "seed": seed,
                "kept_every_calibrated_escalation": kept_all,
                **{name: {k: v for k, v in run.items() if k != "ids"} for name, run in runs.items()},
            }
        )
    print(
        f"{args.tickets} demo tickets per seed, batches of {args.batch}, budget {budget:.0%}, "
        f"window {spender.window} (warm-up {spender.warmup}); threshold ceiling {spender.ceiling:.3f}, "
        f"floor {spender.floor:.3f}"
    )
    print("| seed | spending: rate / after warm-up / threshold | calibrated: rate / threshold | ratio | superset |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        s, c = r["spending"], r["calibrated"]
        print(
            f"| {r['seed']} | {s['rate']:.2%} / {s['rate_after_warmup']:.2%} / {s['threshold']:.3f} | "
            f"{c['rate']:.2%} / {c['threshold']:.3f} | {s['rate'] / c['rate']:.2f} | "
            f"{r['kept_every_calibrated_escalation']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"budget": budget, "runs": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
