"""The worker's ticket processor spends the escalation budget on calm traffic: the demo tickets are easier
than the calibration split, so the calibrated threshold alone would leave about half the budget unused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streamer.demo.tickets import demo_tickets
from streamer.events import RawEvent, Source
from streamer.pipeline.tickets import TicketProcessor
from streamer.runtime import escalation_budget, load_ticket_runtime
from streamer.settings import Settings
from streamer.topics import TICKETS, TICKETS_ENRICHED

TOPICS = Path(__file__).resolve().parents[3] / "topics"


def enriched(processor: TicketProcessor, tickets: list[dict[str, object]], first: int = 0) -> Iterator[Any]:
    """The enriched records of ``tickets`` (at offsets ``first``... of partition 0), in batches of 32."""
    for start in range(0, len(tickets), 32):
        raws = [
            RawEvent(orjson.dumps(t), Source(TICKETS, 0, first + start + i), key=str(t["id"]).encode())
            for i, t in enumerate(tickets[start : start + 32])
        ]
        for record in processor(raws).outputs:
            if record.topic == TICKETS_ENRICHED:
                yield orjson.loads(record.data)


def escalated(processor: TicketProcessor, tickets: list[dict[str, object]]) -> dict[str, float]:
    """Ticket id -> escalation score of the tickets escalated for the model's doubt."""
    out: dict[str, float] = {}
    for doc in enriched(processor, tickets):
        codes = {r["code"] for r in doc["triage"]["escalation"]["reasons"]}
        if codes & {"low_confidence", "out_of_scope"}:
            out[doc["id"]] = doc["triage"]["intent"]["escalation_score"]
    return out


def test_calm_traffic_spends_the_budget_and_keeps_every_calibrated_escalation(test_bundle: Path) -> None:
    tickets = list(demo_tickets(1200, seed=3))
    settings = Settings(topics_dir=TOPICS, bundle_dir=test_bundle, pseudonym_key="k")  # type: ignore[arg-type]
    spending = load_ticket_runtime(settings)
    rate, ceiling = escalation_budget(settings, spending.bundle) or (0.0, 0.0)
    assert spending.processor.spender is not None and spending.processor.spender.ceiling == ceiling
    calibrated = load_ticket_runtime(settings.model_copy(update={"escalate_spend_window": 0}), spending.bundle)
    assert calibrated.processor.spender is None

    as_calibrated = escalated(calibrated.processor, tickets)
    spent = escalated(spending.processor, tickets)
    assert set(as_calibrated) <= set(spent)  # the threshold only ever moves down
    assert all(score >= ceiling for score in as_calibrated.values())
    assert len(as_calibrated) / len(tickets) < 0.8 * rate  # the calibrated threshold leaves budget unused
    warm = {t["id"] for t in tickets[400:]}  # past the window's warm-up (250 tickets)
    live_rate = len(warm & set(spent)) / len(warm)
    assert 0.8 * rate <= live_rate <= 1.2 * rate
    assert spending.processor.spender.threshold >= spending.processor.spender.floor
    assert spending.processor.escalation_threshold == spending.processor.spender.threshold < ceiling
    assert calibrated.processor.escalation_threshold == ceiling
    assert min(spent.values()) >= spending.processor.spender.floor


def test_a_shadow_of_the_same_bundle_spends_alike_and_agrees_on_every_escalation(test_bundle: Path) -> None:
    """The shadow runs its own spender, as it would live: a candidate equal to the live bundle agrees on every
    escalation, also once the threshold has moved below the calibrated one."""
    tickets = list(demo_tickets(800, seed=5))
    settings = Settings(  # type: ignore[arg-type]
        topics_dir=TOPICS, bundle_dir=test_bundle, shadow_bundle_dir=test_bundle, pseudonym_key="k"
    )
    runtime = load_ticket_runtime(settings)
    processor = runtime.processor
    assert processor.shadow is not None and processor.shadow.spender is not None
    escalated(processor, tickets)
    assert processor.spender is not None and processor.spender.threshold < processor.spender.ceiling
    assert processor.shadow.spender.threshold == processor.spender.threshold
    # agreement is read from the batches' counters: re-run and sum them
    agreement: dict[bool, int] = {True: 0, False: 0}
    for start in range(0, len(tickets), 32):
        raws = [
            RawEvent(orjson.dumps(t), Source(TICKETS, 1, start + i), key=str(t["id"]).encode())
            for i, t in enumerate(tickets[start : start + 32])
        ]
        for (head, _, agreed), n in processor(raws).shadow_agreement.items():
            if head == "escalate":
                agreement[agreed] += n
    assert agreement == {True: len(tickets), False: 0}


def decisions(processor: TicketProcessor, tickets: list[dict[str, object]], first: int) -> dict[int, dict[str, object]]:
    """Offset -> the enriched record's escalation section, tickets at offsets ``first``..."""
    return {doc["source"]["offset"]: doc["triage"]["escalation"] for doc in enriched(processor, tickets, first)}


def test_a_replay_judged_at_the_live_thresholds_escalates_exactly_as_live(test_bundle: Path) -> None:
    """Each enriched record says the threshold it was judged by; a processor given those thresholds per ticket
    (what a replay of the live bundle does) escalates exactly the tickets live escalated, although its own
    spender, which has not seen the traffic before the range, would still hold the calibrated threshold."""
    tickets = list(demo_tickets(1024, seed=11))
    settings = Settings(topics_dir=TOPICS, bundle_dir=test_bundle, pseudonym_key="k")  # type: ignore[arg-type]
    live = load_ticket_runtime(settings)
    live_sections = decisions(live.processor, tickets, 0)
    assert live.processor.spender is not None
    ceiling = live.processor.spender.ceiling
    thresholds = {offset: float(section["threshold"]) for offset, section in live_sections.items()}  # type: ignore[arg-type]
    assert min(thresholds.values()) < ceiling == max(thresholds.values())  # the spender moved it
    window = range(512, 1024)  # a replay of the second half, with no history before it

    def escalates(sections: dict[int, dict[str, object]]) -> set[int]:
        return {o for o, s in sections.items() if s["escalate"] and o in window}

    fresh = load_ticket_runtime(settings, live.bundle)
    own = decisions(fresh.processor, tickets[512:], 512)
    assert escalates(own) != escalates(live_sections)  # its own spender judges the margin differently

    replay = load_ticket_runtime(settings, live.bundle).processor
    replay.threshold_of = lambda source: thresholds.get(source.offset)
    judged = decisions(replay, tickets[512:], 512)
    assert escalates(judged) == escalates(live_sections)
    assert all(judged[o]["threshold"] == live_sections[o]["threshold"] for o in window)
