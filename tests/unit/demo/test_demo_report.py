"""What ``streamer demo`` counts (only this run's records, per path) and the summary it prints."""

from __future__ import annotations

from typing import Any

from streamer.demo.report import DemoContext, DemoTally, percentile, render_summary

# --- the demo's tally and summary -------------------------------------------------------------------


def source(topic: str, partition: int, offset: int, ts: int | None = None) -> dict[str, Any]:
    return {"topic": topic, "partition": partition, "offset": offset, "timestamp_ms": ts}


def enriched_ticket(tid: str, intent: str, latency: float, expected: str) -> dict[str, Any]:
    return {
        "id": tid,
        "latency_ms": latency,
        "ticket": {"metadata": {"expected": {"intents": [expected]}}},
        "triage": {"intent": {"label": intent}, "routes": ["support.queue.billing.v1"]},
    }


def test_tally_counts_only_this_runs_records_per_path() -> None:
    starts = {("support.tickets.v1", 0): 10, ("ops.logs.v1", 0): 100, ("llm.escalations.v1", 0): 5}
    tally = DemoTally(
        starts=starts, tickets={"T1", "T2"}, ticket_malformed=1, logs_sent=2, log_malformed=1, logs_from_ms=1000
    )
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T1", "refund_request", 40, "refund_request"), 5)
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T1", "refund_request", 40, "refund_request"), 5)
    tally.observe("support.tickets.enriched.v1", enriched_ticket("OLD", "refund_request", 40, "x"), 5)
    assert tally.ticket.processed == 1 and not tally.done()
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T2", "order_status", 60, "refund_request"), 9)
    log = {
        "service": "checkout-api",
        "severity": "error",
        "template_id": "Tabc",
        "template": "Failed to price cart for order <*>",
        "message": "Failed to price cart\njava.lang.NullPointerException\n\tat x(X.java:1)",
        "entities": {"exception_types": ["java.lang.NullPointerException"]},
    }
    tally.observe("ops.logs.enriched.v1", {**log, "source": source("ops.logs.v1", 0, 99, 0)}, 50)  # earlier run
    tally.observe("ops.logs.enriched.v1", {**log, "source": source("ops.logs.v1", 0, 100, 20)}, 50)
    tally.observe("ops.logs.enriched.v1", {**log, "source": source("ops.logs.v1", 0, 101, 20)}, 80)
    dead = {"error": {"code": "invalid_json"}}
    tally.observe("streamer.deadletter.v1", {**dead, "source": source("support.tickets.v1", 0, 9)}, 0)  # earlier
    tally.observe("streamer.deadletter.v1", {**dead, "source": source("support.tickets.v1", 0, 12)}, 0)
    assert not tally.done()  # a log line is still unaccounted for
    invalid = {"error": {"code": "invalid_utf8"}, "source": source("ops.logs.v1", 0, 102)}
    tally.observe("streamer.deadletter.v1", invalid, 0)
    assert tally.done() and tally.triaged == tally.expected == 6
    assert (tally.ticket.dead, tally.log.dead) == ({"invalid_json": 1}, {"invalid_utf8": 1})
    assert tally.log.latency_ms == [30.0, 60.0] and tally.stack_traces == {"java.lang.NullPointerException": 2}
    assert (tally.agree, tally.judged) == (1, 2)

    reason = [{"code": "low_confidence", "detail": "0.31"}]
    tally.observe("llm.escalations.v1", {"id": "T2", "kind": "ticket", "reasons": reason}, 0)
    tally.observe("llm.escalations.v1", {"id": "OLD", "kind": "ticket", "reasons": reason}, 0)
    log_reason = [{"code": "error_burst", "detail": "x"}]
    log_src = source("ops.logs.v1", 0, 101)
    tally.observe("llm.escalations.v1", {"id": "L1", "kind": "log", "reasons": log_reason, "source": log_src}, 0)
    assert tally.escalation_ids == {"T2", "L1"} and tally.log.reasons == {"error_burst": 1}
    tally.observe("llm.responses.v1", {"id": "T2", "intent": "refund_request", "latency_ms": 900.0}, 0)
    tally.observe("llm.responses.v1", {"id": "OLD", "intent": "x"}, 0)
    assert tally.settled == 1 and tally.answers_earlier == 1
    bad_answer = {"id": "L1", "error": {"code": "invalid_answer"}, "source": source("llm.escalations.v1", 0, 7)}
    tally.observe("streamer.deadletter.v1", bad_answer, 0)
    assert tally.settled == 2 and tally.bridge_dead == {"L1": "invalid_answer"}

    tally.observe("ops.log_templates.v1", {"template_id": "Told", "template": "a", "first_seen_ms": 999}, 0)
    tally.observe("ops.log_templates.v1", {"template_id": "Tnew", "template": "b", "first_seen_ms": 1000}, 0)
    tally.observe("ops.alerts.v1", {"id": "burst:a", "kind": "burst", "service": "s", "template": "t", "count": 20}, 0)
    tally.observe("ops.alerts.v1", {"id": "burst:a", "kind": "burst", "service": "s", "template": "t", "count": 20}, 0)
    assert list(tally.new_templates) == ["Tnew"] and len(tally.alerts) == 1


def summary_of(tally: DemoTally, bridge: bool, bootstrap: str = "127.0.0.1:9092") -> str:
    ctx = DemoContext(
        bootstrap=bootstrap,
        topics={"llm.escalations.v1": "dev.llm.escalations.v1", "ops.alerts.v1": "dev.ops.alerts.v1"},
        produce_started_ms=0,
        files={"worker log": "var/demo/R/worker.log", "replay report": "var/demo/R/replay.html"},
        bridge=bridge,
        llm_endpoint="http://127.0.0.1:8939/v1",
        replay="306 records re-run",
    )
    return render_summary(tally, ctx)


def test_summary_has_a_section_per_path_and_says_what_waits() -> None:
    tally = DemoTally(starts={("ops.logs.v1", 0): 0}, tickets={"T1"}, logs_sent=1)
    tally.observe("support.tickets.enriched.v1", enriched_ticket("T1", "refund_request", 40, "refund_request"), 2000)
    reasons = [{"code": "vip_customer", "detail": "vip"}]
    tally.observe("llm.escalations.v1", {"id": "T1", "kind": "ticket", "reasons": reasons}, 0)
    alert = {"id": "a", "kind": "new_error_template", "service": "payments-worker", "template": "X failed", "count": 1}
    tally.observe("ops.alerts.v1", alert, 0)
    text = summary_of(tally, bridge=False)
    sections = [line for line in text.splitlines() if line.startswith("== ")]
    assert [s.split()[1] for s in sections] == ["Tickets", "Logs", "Large", "Replay", "Files", "Explore"]
    assert "enriched 1 in 2.0 s (0.5/s end to end)" in text
    assert "by reason: vip_customer 1" in text and "alerts: 1 (new_error_template 1)" in text
    assert "1 escalations of this run wait in dev.llm.escalations.v1" in text and "make llm-local" in text
    assert "kcat -b 127.0.0.1:9092 -C -e -t dev.ops.alerts.v1" in text
    assert "var/demo/R/replay.html" in text
    assert not any(line.lstrip().startswith("{") for line in text.splitlines())  # no JSON log lines

    tally.observe("llm.responses.v1", {"id": "T1", "intent": "refund_request", "latency_ms": 1200.0}, 0)
    answered = summary_of(tally, bridge=True)
    assert "answers received 1 of 1 escalations, 0 dead-lettered" in answered and "0 still open" in answered
    assert "answer latency p50 1200 ms" in answered and "wait in" not in answered


def test_a_broker_off_9092_is_named_for_every_command_to_try() -> None:
    # 9092 held by another Kafka: the streamer commands shown must not talk to that one
    tally = DemoTally(starts={("ops.logs.v1", 0): 0}, tickets={"T1"}, logs_sent=1)
    tally.observe("llm.escalations.v1", {"id": "T1", "kind": "ticket", "reasons": []}, 0)
    moved = summary_of(tally, bridge=False, bootstrap="127.0.0.1:40123")
    assert "export STREAMER_KAFKA_BOOTSTRAP=127.0.0.1:40123" in moved
    assert "STREAMER_KAFKA_BOOTSTRAP=127.0.0.1:40123 streamer bridge" in moved
    assert "kcat -b 127.0.0.1:40123 " in moved
    assert "STREAMER_KAFKA_BOOTSTRAP" not in summary_of(tally, bridge=False)


def test_percentile_by_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0 and percentile(list(map(float, range(100))), 0.99) == 99.0


def test_summary_counts_the_model_doubt_against_the_budget() -> None:
    """Decisions escalated for the intent model's doubt are what the budget spends, folded duplicates too;
    other reasons (VIP, urgent and negative) are not."""
    tally = DemoTally(starts={}, tickets={f"T{i}" for i in range(4)})
    reasons = [
        [{"code": "low_confidence"}],
        [{"code": "out_of_scope"}, {"code": "vip_customer"}],
        [{"code": "vip_customer"}],
        [],
    ]
    for i, why in enumerate(reasons):
        ticket = enriched_ticket(f"T{i}", "refund_request", 40, "refund_request")
        ticket["triage"]["escalation"] = {"escalate": bool(why), "reasons": why}
        tally.observe("support.tickets.enriched.v1", ticket, 5)
    assert tally.doubted == 2
    ctx = DemoContext(bootstrap="b", topics={}, produce_started_ms=0, files={}, bridge=False, escalation_budget=0.08)
    text = render_summary(tally, ctx)
    assert "escalated for the intent model's doubt: 2 (50.0% of tickets" in text and "budget is 8%" in text
    order = [line.split(":")[0] for line in text.splitlines() if line.startswith(("escalated", "dead letters"))]
    assert order[:3] == ["escalated to the large model", "escalated for the intent model's doubt", "dead letters"]
    assert "model's doubt" not in summary_of(tally, bridge=False)  # no budget, no line
