"""Large-model calls saved by folding near-duplicate escalations during an incident storm.

    python bench/bench_escalation_storm.py [--tickets 2000] [--bundle DIR] [--json out.json]

Traffic: ordinary demo tickets (``streamer.demo``) with an outage in the middle: for ten minutes half the
tickets are about it: customers who write two to four times ("still down!"), and a monitoring script that
files one ticket per failed order from the same template for many customers. The ticket processor of the
worker (model, policy, outputs) runs it in batches of 64 with a clock that follows the traffic, once with
the deduplication of ``STREAMER_ESCALATE_DEDUP_*`` and once without; a call is one record on
``llm.escalations.v1``. Also reported: escalations folded into an escalation of another intent (a folded
ticket whose intent differs from the one it points at: the cost of the saving).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamer.defaults import ensure_default_bundle  # noqa: E402
from streamer.demo import demo_tickets  # noqa: E402
from streamer.events import RawEvent, Source  # noqa: E402
from streamer.runtime import escalation_deduper, load_ticket_runtime  # noqa: E402
from streamer.settings import Settings  # noqa: E402
from streamer.topics import ESCALATIONS  # noqa: E402

OUTAGE = [
    "Checkout is broken, I can't pay for my order. It just spins and then says payment failed.",
    "Your payment page is down. I tried three cards and every time I get an error at checkout.",
    "I cannot complete my purchase, the checkout keeps failing with an error 502.",
    "Is the site down? Checkout fails every time I try to pay.",
]
FOLLOW_UP = [
    "Still can't check out, payment fails again. Please fix this.",
    "Checkout is still broken, I can't pay for my order.",
    "Any update? The payment page is still failing for me.",
]
MONITOR = "Automated alert: order {order} payment capture failed with gateway error 502 at checkout."


def storm(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` tickets, one every 0.5 s; tickets of the middle 1,200 slots (10 min) are half outage reports."""
    rng = random.Random(seed)
    base = list(demo_tickets(n, seed=seed))
    start, stop = n // 2 - 600, n // 2 + 600
    writers: list[str] = []
    out = []
    for i, ticket in enumerate(base):
        ticket = dict(ticket)
        if start <= i < stop and rng.random() < 0.5:
            if rng.random() < 0.4:
                customer = f"C-{rng.randint(100000, 999999)}"
                body = MONITOR.format(order=rng.randint(100000, 999999))
            elif writers and rng.random() < 0.6:
                customer = rng.choice(writers)
                body = rng.choice(FOLLOW_UP)
            else:
                customer = f"C-{rng.randint(100000, 999999)}"
                writers.append(customer)
                body = rng.choice(OUTAGE)
            ticket.update(body=body, customer={"id": customer, "tier": "pro"})
            ticket.pop("language", None)
            ticket.pop("subject", None)
            ticket["metadata"] = {"storm": True}
        out.append(ticket)
    return out


def run(settings: Settings, tickets: list[dict[str, Any]]) -> dict[str, Any]:
    runtime = load_ticket_runtime(settings)
    processor = runtime.processor
    processor.dedup = escalation_deduper(settings)  # as build_worker does
    clock = {"now": 0.0}
    processor.clock = lambda: clock["now"]
    raws = [
        RawEvent(value=orjson.dumps(t), key=t["id"].encode(), source=Source("support.tickets.v1", 0, i, None))
        for i, t in enumerate(tickets)
    ]
    calls = escalated = folded = cross_intent = 0
    intent_of: dict[str, str] = {}
    started = time.perf_counter()
    for i in range(0, len(raws), 64):
        clock["now"] = i / 2
        result = processor(raws[i : i + 64])
        folded += result.deduplicated
        for out in result.outputs:
            if out.topic == ESCALATIONS:
                calls += 1
            elif out.topic.endswith("tickets.enriched.v1"):
                tri = out.value["triage"]
                intent_of[out.value["id"]] = tri["intent"]["label"]
                if tri["escalation"]["escalate"]:
                    escalated += 1
                first = tri["escalation"].get("duplicate_of")
                if first is not None and intent_of.get(first) not in (None, tri["intent"]["label"]):
                    cross_intent += 1
    return {
        "tickets": len(tickets),
        "escalated": escalated,
        "calls": calls,
        "folded": folded,
        "folded_into_another_intent": cross_intent,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=2000)
    ap.add_argument("--bundle", type=Path, default=None, help="default: the default bundle (built if missing)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    settings = Settings(device="cpu")  # type: ignore[call-arg]
    if args.bundle is not None:
        settings = settings.model_copy(update={"bundle_dir": args.bundle})
    ensure_default_bundle(settings, progress=False)
    tickets = storm(args.tickets)
    storm_share = sum(1 for t in tickets if (t.get("metadata") or {}).get("storm")) / len(tickets)
    with_dedup = run(settings, tickets)
    without = run(settings.model_copy(update={"escalate_dedup_window_s": 0.0}), tickets)
    print(f"{len(tickets)} tickets, {storm_share:.0%} about one outage (10 minutes)")
    print("| measure | dedup (600 s, cosine 0.95) | no dedup | ratio |")
    print("| --- | --- | --- | --- |")
    for key in ("escalated", "calls", "folded", "folded_into_another_intent"):
        a, b = with_dedup[key], without[key]
        print(f"| {key} | {a} | {b} | {a / b:.2f} |" if b else f"| {key} | {a} | {b} | |")
    print(f"calls saved: {without['calls'] - with_dedup['calls']} of {without['calls']}")
    if args.json:
        args.json.write_text(json.dumps({"with_dedup": with_dedup, "without": without}, indent=2) + "\n")


if __name__ == "__main__":
    main()
