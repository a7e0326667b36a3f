"""``streamer replay`` on the real broker, beside a live worker that decided the same tickets first.

The module sends tickets with explicit timestamps to chosen partitions (so each partition's range for a
window is known in advance), lets a worker process (group G, the default bundle) decide them, then
replays windows, offsets and partitions with the worker's own processor. A second bundle, built from
the shipped data with two intents' labels swapped, plants known changes for the diff to find.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from harness.fixtures import TopicFactory, WorkerFactory
from harness.kafka import REPO, Message, Out, docs, read_topic

from streamer.defaults import data_dir
from streamer.demo import demo_tickets
from streamer.kafka.admin import list_topics
from streamer.kafka.clients import admin_client
from streamer.models.build import HeadSpec, build_bundle
from streamer.models.bundle import load_bundle
from streamer.replay.cli import add_replay_commands
from streamer.replay.ranges import Window
from streamer.replay.report import ReplayReport
from streamer.replay.run import RUN_HEADER, ReplayRequest, run_replay
from streamer.runtime import TicketRuntime, load_ticket_runtime
from streamer.settings import Settings

pytestmark = pytest.mark.kafka

MINUTE = 60_000
#: Records per partition; record k of every partition is stamped BASE + k minutes.
PER_PARTITION = {0: 10, 1: 8, 2: 5, 3: 3, 4: 10, 5: 2}
#: The window [BASE + 3 min, BASE + 7 min) holds records k = 3..6 of each partition that has them.
WINDOW_K = (3, 7)
SWAP = {"refund_request": "return_item", "return_item": "refund_request"}
PLANTED = [
    ("Refund please", "I returned the jacket two weeks ago and still have not got my money back. Please refund me."),
    ("Money back", "You charged me for a cancelled order. I want a full refund to my card, thank you."),
    ("Return label", "How do I send these shoes back? They are too small and I want to return them."),
    ("Returning an item", "The blender arrived but I no longer need it. Can I return it for store credit?"),
]


@dataclass
class Live:
    settings: Settings
    base_ms: int
    sent: dict[tuple[int, int], str]  # (partition, offset) -> ticket id (or "" for the malformed record)
    enriched: dict[str, dict[str, Any]]  # live decisions by id
    group: str
    group_offsets: dict[int, int]
    runtime_a: TicketRuntime

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def in_window(self, partitions: Any = None) -> dict[int, tuple[int, int]]:
        lo, hi = WINDOW_K
        out = {}
        for p, n in PER_PARTITION.items():
            if partitions is None or p in partitions:
                start = min(lo, n)
                out[p] = (start, max(start, min(hi, n)))
        return out


def _read_all(settings: Settings, topic: str) -> list[Message]:
    return read_topic(settings.kafka_bootstrap, topic)


async def _group_offsets(settings: Settings, group: str) -> dict[int, int]:
    tps = [TopicPartition(settings.topic("support.tickets.v1"), p) for p in PER_PARTITION]
    async with admin_client(settings) as admin:
        found = await admin.list_consumer_group_offsets(group, partitions=tps)
    return {tp.partition: meta.offset for tp, meta in found.items() if meta is not None and meta.offset >= 0}


async def _groups_on_input(settings: Settings) -> set[str]:
    """Every consumer group with committed offsets on this module's input topic."""
    tps = [TopicPartition(settings.topic("support.tickets.v1"), p) for p in PER_PARTITION]
    out = set()
    async with admin_client(settings) as admin:
        for group in await admin.list_consumer_groups():
            found = await admin.list_consumer_group_offsets(group[0], partitions=tps)
            if any(meta is not None and meta.offset >= 0 for meta in found.values()):
                out.add(group[0])
    return out


def _tickets() -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    tickets = list(demo_tickets(sum(PER_PARTITION.values()), seed=21))
    for i, (subject, body) in enumerate(PLANTED):
        tickets[3 + i * 5].update(subject=subject, body=body, customer={"id": f"C-{i}", "tier": "pro"})
    for i, t in enumerate(tickets):
        t["id"] = f"RPL-{run}-{i:03d}"
    return tickets


@pytest.fixture(scope="module")
def live(module_topic_factory: TopicFactory, module_worker_factory: WorkerFactory, test_bundle: Path) -> Iterator[Live]:
    group = f"test-replay-{uuid.uuid4().hex[:8]}"
    topics = module_topic_factory(label="replay", device="cpu", group_id=group)
    settings = topics.settings

    now = int(time.time() * 1000)
    base = now - now % MINUTE - 3 * 60 * MINUTE
    tickets = iter(_tickets())
    records: list[Out] = []
    for p, n in PER_PARTITION.items():
        for k in range(n):
            if (p, k) == (4, 5):  # one malformed record inside the window: a dead letter both times
                records.append(
                    Out(b"RPL-bad", b'{"id": "RPL-bad", "body": ', partition=p, timestamp_ms=base + k * MINUTE)
                )
                continue
            t = next(tickets)
            trace = (("traceparent", f"00-{uuid.uuid4().hex}-00f067aa0ba902b7-01".encode()),)  # the platform's trace
            records.append(Out(t["id"].encode(), orjson.dumps(t), trace, partition=p, timestamp_ms=base + k * MINUTE))
    placed = dict(zip(topics.produce("support.tickets.v1", records), (r.key for r in records), strict=True))
    sent = {where: (b"" if key == b"RPL-bad" else key or b"").decode() for where, key in placed.items()}
    ids = {v for v in sent.values() if v}

    worker = module_worker_factory(topics, name="replay-worker", group=group, only=None, env={"STREAMER_DEVICE": "cpu"})
    enriched: dict[str, dict[str, Any]] = {}
    offsets: dict[int, int] = {}
    deadline = time.monotonic() + 240
    want = {p: n for p, n in PER_PARTITION.items()}
    while time.monotonic() < deadline and (set(enriched) != ids or offsets != want):
        assert worker.alive, worker.log_tail()
        time.sleep(1)
        for value in docs(_read_all(settings, settings.topic("support.tickets.enriched.v1"))):
            enriched[value["id"]] = value
        offsets = asyncio.run(_group_offsets(settings, group))
    assert set(enriched) == ids, "the live worker did not decide every ticket"
    assert offsets == want, f"the live group did not commit every offset: {offsets}"
    runtime_a = load_ticket_runtime(settings, bundle=load_bundle(test_bundle, device="cpu"))
    yield Live(settings, base, sent, enriched, group, offsets, runtime_a)


@pytest.fixture(scope="module")
def swapped_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle's heads, but refund_request and return_item trade their training labels."""
    root = tmp_path_factory.mktemp("swapped")
    lines = []
    for line in (data_dir() / "intents.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            doc["label"] = SWAP.get(doc["label"], doc["label"])
            lines.append(json.dumps(doc))
    intents = root / "intents_swapped.jsonl"
    intents.write_text("\n".join(lines) + "\n", encoding="utf-8")
    heads = [
        HeadSpec("intent", (intents,)),
        HeadSpec("priority", (data_dir() / "priority.jsonl",)),
        HeadSpec("sentiment", (data_dir() / "sentiment.jsonl",)),
    ]
    return build_bundle(root / "bundle", "swapped", "2", heads, progress=False)


def replay(live: Live, runtime: TicketRuntime | None = None, **kwargs: Any) -> ReplayReport:
    request = ReplayRequest(
        window=kwargs.pop("window", Window()), run_id=f"r{uuid.uuid4().hex[:8]}", progress=False, **kwargs
    )
    return asyncio.run(run_replay(live.settings, runtime or live.runtime_a, request))


def window_ms(live: Live) -> Window:
    lo, hi = WINDOW_K
    return Window(from_ms=live.base_ms + lo * MINUTE, to_ms=live.base_ms + hi * MINUTE)


def test_a_window_replays_exactly_its_records_per_partition_and_the_same_bundle_changes_nothing(
    live: Live,
) -> None:
    groups_before = asyncio.run(_groups_on_input(live.settings))
    report = replay(live, window=window_ms(live))

    expected = live.in_window()
    assert {r.partition: (r.start, r.end) for r in report.ranges} == expected
    wanted = {(p, o) for p, (s, e) in expected.items() for o in range(s, e)}
    ids = {live.sent[w] for w in wanted} - {""}
    assert report.records == len(wanted) == 14
    assert report.processed == len(ids) and report.dead_letters == {"invalid_json": 1}
    assert report.outside_window == 0

    # The replay topic holds one enriched record per ticket of the window, from exactly those offsets.
    assert report.output_topic == live.topic(f"support.tickets.v1.replay.{report.run_id}")
    out = _read_all(live.settings, report.output_topic)
    values = docs(out)
    assert sorted(v["id"] for v in values) == sorted(ids)
    assert {(v["source"]["partition"], v["source"]["offset"]) for v in values} <= wanted
    assert all(m.header_dict[RUN_HEADER] == report.run_id.encode() for m in out)
    # ... and the live topic's contract (CloudEvents type, schema, subject, model), a ce_id of the run's own
    live_headers = {
        v["id"]: m.header_dict
        for m in _read_all(live.settings, live.topic("support.tickets.enriched.v1"))
        for v in docs([m])
    }
    for m, v in zip(out, values, strict=True):
        ours, theirs = m.header_dict, live_headers[v["id"]]
        assert ours["ce_id"] == theirs["ce_id"] + f":replay.{report.run_id}".encode()
        for name in ("ce_type", "ce_source", "ce_dataschema", "ce_specversion", "ce_subject", "ce_modelname"):
            assert ours[name] == theirs[name], name
        assert ours["traceparent"].split(b"-")[1] == theirs["traceparent"].split(b"-")[1]  # the input's trace
    assert all(v["model"]["name"] == "default" for v in values)
    states = {s.name: s for s in asyncio.run(list_topics(live.settings))}
    assert states[report.output_topic].config["retention.ms"] == "86400000"

    # Same bundle, same settings: every live decision comes back.
    diff = report.diff
    assert diff is not None
    assert (diff.compared, diff.live_only, diff.replay_only) == (len(ids), 0, 0)
    assert diff.any_changed == 0, diff.to_dict()
    assert (
        diff.escalated_before
        == diff.escalated_after
        == sum(live.enriched[i]["triage"]["escalation"]["escalate"] for i in ids)
    )

    # Each live record says the escalation threshold it was judged by, and the replay judged it at that one.
    assert any(
        f"the {len(ids)} tickets this bundle decided live are judged at the threshold live" in n for n in report.notes
    )
    for v in values:
        threshold = live.enriched[v["id"]]["triage"]["escalation"]["threshold"]
        assert 0 < v["triage"]["escalation"]["threshold"] == threshold < 1

    # No group was joined or moved: the live group's offsets are where the worker left them.
    assert asyncio.run(_group_offsets(live.settings, live.group)) == live.group_offsets
    assert asyncio.run(_groups_on_input(live.settings)) == groups_before
    assert live.group in groups_before


def test_a_window_after_the_end_replays_nothing(live: Live) -> None:
    after = Window(from_ms=live.base_ms + 60 * MINUTE, to_ms=live.base_ms + 120 * MINUTE)
    report = replay(live, window=after, dry_run=True)
    assert report.records == 0 and report.planned == 0 and report.output_topic is None
    assert {r.partition: (r.start, r.end) for r in report.ranges} == {p: (n, n) for p, n in PER_PARTITION.items()}
    assert report.diff is not None and report.diff.compared == 0
    names = {s.name for s in asyncio.run(list_topics(live.settings))}
    assert live.topic(f"support.tickets.v1.replay.{report.run_id}") not in names  # a dry run creates nothing

    past_end = replay(live, window=Window(from_offset=50), dry_run=True)
    assert past_end.records == 0 and any("past the end" in n for n in past_end.notes)


def test_partitions_and_offsets(live: Live) -> None:
    report = replay(live, window=Window(from_offset=1, to_offset=4), partitions=(0, 2), dry_run=True)
    assert {r.partition: (r.start, r.end) for r in report.ranges} == {0: (1, 4), 2: (1, 4)}
    assert report.records == 6
    assert report.diff is not None and report.diff.compared == 6 and report.diff.any_changed == 0

    # Time window and offsets together: the offsets narrow the window.
    both = replay(live, window=Window(window_ms(live).from_ms, window_ms(live).to_ms, 0, 4), dry_run=True)
    assert {r.partition: (r.start, r.end) for r in both.ranges} == {
        p: (s, min(e, 4)) if e > s else (s, e) for p, (s, e) in live.in_window().items()
    }


def test_two_replays_of_the_same_ranges_write_identical_decisions(live: Live) -> None:
    first, second = (replay(live, window=Window(from_offset=0), max_examples=0) for _ in range(2))
    assert [r.to_dict() for r in first.ranges] == [r.to_dict() for r in second.ranges]
    assert first.output_topic != second.output_topic

    def decisions(report: ReplayReport) -> dict[str, Any]:
        assert report.output_topic is not None
        records = _read_all(live.settings, report.output_topic)
        return {v["id"]: (v["source"], v["triage"]) for v in docs(records)}

    a, b = decisions(first), decisions(second)
    assert len(a) == len(live.enriched) and a == b  # confidences and margins included


def test_another_bundle_reports_the_planted_changes(live: Live, swapped_bundle: Path) -> None:
    runtime_b = load_ticket_runtime(
        live.settings.model_copy(update={"bundle_dir": swapped_bundle}),
        bundle=load_bundle(swapped_bundle, device="cpu"),
    )
    report = replay(live, runtime_b, max_examples=50)
    diff = report.diff
    assert diff is not None and diff.compared == len(live.enriched)
    assert report.bundle["name"] == "swapped" and report.bundle["files"]["heads.npz"]

    replayed = {v["id"]: v for v in docs(_read_all(live.settings, report.output_topic))}
    swapped_ids = {i for i, r in live.enriched.items() if r["triage"]["intent"]["label"] in SWAP}
    planted_ids = {i for i, r in live.enriched.items() if r["ticket"]["body"] in {b for _, b in PLANTED}}
    assert len(planted_ids) == len(PLANTED) and planted_ids <= swapped_ids
    for ticket_id in swapped_ids:  # every refund/return decision flips to the other label
        old = live.enriched[ticket_id]["triage"]["intent"]["label"]
        assert replayed[ticket_id]["triage"]["intent"]["label"] == SWAP[old], ticket_id

    # The report says the same: only swapped pairs in the confusion table, nothing else moved.
    assert diff.changed["intent"] == len(swapped_ids)
    assert {(o, n) for o, n, _ in diff.intent_changes} <= set(SWAP.items())
    assert sum(c for _, _, c in diff.intent_changes) == len(swapped_ids)
    assert diff.changed["priority"] == 0 and diff.changed["sentiment"] == 0
    assert {e.id for e in diff.examples["intent"]} == swapped_ids
    billing, orders = "support.queue.billing.v1", "support.queue.orders.v1"
    refunds = sum(live.enriched[i]["triage"]["intent"]["label"] == "refund_request" for i in swapped_ids)
    returns = len(swapped_ids) - refunds
    assert diff.routes[billing][1] - diff.routes[billing][0] == returns - refunds
    assert diff.routes[orders][1] - diff.routes[orders][0] == refunds - returns
    for example in diff.examples["intent"]:
        assert example.text and "@" not in example.text
    assert asyncio.run(_group_offsets(live.settings, live.group)) == live.group_offsets


def test_stricter_thresholds_raise_the_escalation_rate_and_are_recorded(live: Live) -> None:
    strict = live.settings.model_copy(update={"escalate_min_confidence": 0.99})
    runtime = load_ticket_runtime(strict, bundle=live.runtime_a.bundle)
    request = ReplayRequest(window=window_ms(live), run_id=f"r{uuid.uuid4().hex[:8]}", dry_run=True, progress=False)
    report = asyncio.run(run_replay(strict, runtime, request))
    diff = report.diff
    assert diff is not None
    assert report.settings["escalation_policy"]["min_confidence"] == 0.99
    assert diff.changed["intent"] == 0 and diff.no_longer_escalated == 0
    assert diff.escalated_after > diff.escalated_before
    assert diff.newly_escalated == diff.escalated_after - diff.escalated_before
    assert diff.reasons["low_confidence"][1] > diff.reasons.get("low_confidence", (0, 0))[0]
    assert diff.escalation_rate_after > diff.escalation_rate_before


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_cli_writes_json_and_html_and_chromium_renders_it(
    live: Live, swapped_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import argparse

    for key, value in {
        "STREAMER_KAFKA_BOOTSTRAP": live.settings.kafka_bootstrap,
        "STREAMER_TOPIC_PREFIX": live.settings.topic_prefix,
        "STREAMER_TOPICS_DIR": str(live.settings.topics_dir),
        "STREAMER_DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser(prog="streamer")
    add_replay_commands(parser.add_subparsers(dest="command"))
    report_json, report_html = tmp_path / "replay.json", tmp_path / "replay.html"
    args = parser.parse_args(
        [
            "replay",
            "--from", str(live.base_ms),
            "--to", str(live.base_ms + 10 * MINUTE),
            "--bundle", str(swapped_bundle),
            "--run-id", f"cli-{uuid.uuid4().hex[:6]}",
            "--report", str(report_json),
            "--html", str(report_html),
            "--no-progress",
        ]
    )  # fmt: skip
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert f"replay {args.run_id}:" in printed and "events/s" in printed and "escalation rate" in printed
    doc = json.loads(report_json.read_text())
    assert doc["run_id"] == args.run_id and doc["bundle"]["name"] == "swapped"
    assert doc["output_topic"] == live.topic(f"support.tickets.v1.replay.{args.run_id}")
    assert doc["stats"]["records"] == sum(PER_PARTITION.values())
    assert sum(p["count"] for p in doc["partitions"]) == doc["stats"]["records"]
    assert set(doc["bundle"]["files"]) >= {"heads.npz", "model/model.bin", "tokenizer.json"}
    assert doc["diff"]["changed"]["intent"] > 0
    page = report_html.read_text()
    assert page.count("<svg") == 3 and "<script" not in page

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    png = tmp_path / "replay.png"
    subprocess.run(
        [str(REPO / "scripts" / "screenshot_report.sh"), str(report_html), str(png), "1200x1600"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert _png_size(png) == (1200, 1600)
    assert png.stat().st_size > 20_000  # tables and charts, not a blank page
    keep = os.environ.get("STREAMER_REPLAY_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)
        shutil.copy(report_html, Path(keep).with_suffix(".html"))
