"""Held enriched records: a batch's records leave with the next batch, resolved to the templates of then."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from streamer.events import DecodeLimits, Output, RawEvent, Source
from streamer.headers import SOURCE_LOGS, Contracts
from streamer.logs.triage import LogTriageState
from streamer.pipeline.logs import LogProcessor
from streamer.topics import LOGS_ENRICHED
from streamer.triage.outputs import ModelInfo


class Stub:
    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        return [("other", 0.5)] * len(templates)


def raws(lines: list[str], start: int) -> list[RawEvent]:
    return [
        RawEvent(line.encode(), Source("ops.logs.v1", 0, start + i, 1_795_860_000_000), b"droid")
        for i, line in enumerate(lines)
    ]


def enriched(outputs: Sequence[Output]) -> list[dict[str, object]]:
    return [orjson.loads(out.data) for out in outputs if out.topic == LOGS_ENRICHED]


def processor(hold: bool) -> LogProcessor:
    contracts = Contracts({}, SOURCE_LOGS, ("m", "1"))
    return LogProcessor(LogTriageState(), Stub(), ModelInfo("m", "1"), DecodeLimits(), contracts, hold=hold)


FIRST = ["received broadcast android.intent.action.TIME_TICK"] * 3
SECOND = ["received broadcast android.intent.action.BATTERY_CHANGED"] * 2


def test_held_records_leave_with_the_next_batch_under_the_settled_id() -> None:
    p = processor(hold=True)
    one = p(raws(FIRST, 0))
    assert enriched(one.outputs) == [] and one.processed == 0
    two = p(raws(SECOND, 3))
    out = enriched(two.outputs)
    assert [r["source"]["offset"] for r in out] == [0, 1, 2]  # type: ignore[index]
    ids = {r["template_id"] for r in out}
    assert len(ids) == 1
    assert out[0]["template"] == "received broadcast android.intent.action.<*>"
    rest = enriched(p.flush().outputs)
    assert [r["source"]["offset"] for r in rest] == [3, 4]  # type: ignore[index]
    assert {r["template_id"] for r in rest} == ids
    assert enriched(p.flush().outputs) == []


def test_without_holding_the_first_batch_keeps_the_id_it_had() -> None:
    p = processor(hold=False)
    first = {r["template_id"] for r in enriched(p(raws(FIRST, 0)).outputs)}
    second = {r["template_id"] for r in enriched(p(raws(SECOND, 3)).outputs)}
    assert first != second  # the first batch's id was superseded after it left
