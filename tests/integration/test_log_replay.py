"""``streamer replay --topic ops.logs.v1`` on the real broker, after a live log worker triaged the same lines.

The module sends demo log lines (keyed by service, as shippers do), lets ``streamer worker --only logs``
triage them, then replays the lines from offset 40 of every partition (the earlier ones are the warm-up):
with the same bundle and rules nothing changes; with rules or a triage config that change something, the
report counts exactly those changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.demo import demo_log_lines
from streamer.kafka.admin import apply_topics
from streamer.kafka.clients import topic_partitions
from streamer.logs import LogTriageConfig
from streamer.models.bundle import load_bundle
from streamer.replay.logdiff import LOG_KINDS, LogDiffReport
from streamer.replay.logs import load_log_replay_runtime, run_log_replay
from streamer.replay.ranges import Window
from streamer.replay.report import ReplayReport, render_html, render_text
from streamer.replay.run import ReplayRequest
from streamer.settings import Settings
from streamer.topics import load_catalog

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
LINES = 600
FROM_OFFSET = 40


@dataclass
class Live:
    settings: Settings
    bundle: Path
    sent: dict[tuple[int, int], dict[str, Any]]  # (partition, offset) -> the line as sent (service, level)


async def _produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        # a millisecond apart, as lines written one after the other: a time picks a point in every partition
        base = int(time.time() * 1000) - len(records)
        futures = [
            await producer.send(settings.topic("ops.logs.v1"), value, key=key, timestamp_ms=base + i)
            for i, (key, value) in enumerate(records)
        ]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def _read_all(settings: Settings, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, settings.topic(topic))
        end = await consumer.end_offsets(parts)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(orjson.loads(m.value) for m in messages if m.value)
        return out
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prefix = f"t.logreplay.{uuid.uuid4().hex[:8]}."
    group = f"test-logreplay-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topics_dir=REPO / "topics", device="cpu", group_id=group
    )
    asyncio.run(apply_topics(settings, load_catalog(settings.topics_file).topics.values()))
    # Shipper records keyed by service, so each service's lines share a partition and its templates are its
    # own: what a replay can rebuild (a template shared by services on two partitions may be first seen in
    # another order than live, see streamer.replay.logs).
    lines = [
        (str(line["service"]).encode(), orjson.dumps(line), line)
        for line in demo_log_lines(LINES, seed=33)
        if isinstance(line, dict)
    ]
    placed = asyncio.run(_produce(settings, [(k, v) for k, v, _ in lines]))
    sent = {where: doc for where, (_, _, doc) in zip(placed, lines, strict=True)}

    log_path = tmp_path_factory.mktemp("logreplay-worker") / "worker.log"
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMER_TOPIC_PREFIX": prefix,
        "STREAMER_GROUP_ID": group,
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_DEVICE": "cpu",
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker", "--only", "logs"], env=env, stdout=log, stderr=log
        )
    try:
        seen: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and seen != set(sent):
            assert worker.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
            seen = {
                (r["source"]["partition"], r["source"]["offset"])
                for r in asyncio.run(_read_all(settings, "ops.logs.enriched.v1"))
            }
        assert seen == set(sent), "the live worker did not triage every line"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    yield Live(settings, test_bundle, sent)


def replay(settings: Settings, bundle: Path, warmup_from_ms: int | None = None, **kwargs: Any) -> ReplayReport:
    """A dry run from ``FROM_OFFSET`` compared with live; ``kwargs`` go to the replay runtime."""
    runtime = load_log_replay_runtime(settings, load_bundle(bundle, device="cpu"), **kwargs)
    request = ReplayRequest(
        window=Window(from_offset=FROM_OFFSET),
        run_id=f"r{uuid.uuid4().hex[:8]}",
        topic="ops.logs.v1",
        live_topic="ops.logs.enriched.v1",
        dry_run=True,
        batch_size=2000,
        progress=False,
        warmup_from_ms=warmup_from_ms,
    )
    return asyncio.run(run_log_replay(settings, runtime, request))


def in_range(live: Live) -> dict[tuple[int, int], dict[str, Any]]:
    return {where: doc for where, doc in live.sent.items() if where[1] >= FROM_OFFSET}


def test_the_same_bundle_changes_nothing_through_the_command(live: Live, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMER_KAFKA_BOOTSTRAP": live.settings.kafka_bootstrap,
        "STREAMER_TOPIC_PREFIX": live.settings.topic_prefix,
        "STREAMER_BUNDLE_DIR": str(live.bundle),
        "STREAMER_DEVICE": "cpu",
        "STREAMER_TOPICS_DIR": str(REPO / "topics"),
    }
    args = ["--topic", "ops.logs.v1", "--from-offset", str(FROM_OFFSET), "--run-id", f"same{uuid.uuid4().hex[:6]}"]
    report_path, html = tmp_path / "replay.json", tmp_path / "replay.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer",
            "replay",
            *args,
            "--no-progress",
            "--report",
            str(report_path),
            "--html",
            str(html),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(report_path.read_text())
    wanted = in_range(live)
    assert doc["stats"]["records"] == len(wanted) and doc["stats"]["written"] == len(wanted)
    # The warm-up: every earlier record of the partitions replayed.
    partitions = {p for p, _ in wanted}
    warmup = [w for w in live.sent if w[0] in partitions and w[1] < FROM_OFFSET]
    assert doc["stats"]["warmup_records"] == len(warmup) > 0
    diff = doc["diff"]
    assert diff["kind"] == "logs"
    assert diff["compared"] == len(wanted) and diff["live_only"] == 0 and diff["replay_only"] == 0
    assert diff["changed"] == dict.fromkeys(LOG_KINDS, 0) and diff["any_changed"] == 0
    assert diff["alerts"], "the demo lines raise alerts: the comparison must cover some"
    assert sum(v["before"] for v in diff["routes"].values()) > 0, "and route some lines"
    assert "template" in proc.stdout and "0.0%" in proc.stdout
    assert "<h2>Alerts</h2>" in html.read_text()
    # The replay topic holds the range's enriched lines, under the run's header.
    written = asyncio.run(_read_all(live.settings, f"ops.logs.v1.replay.{doc['run_id']}"))
    assert {(r["source"]["partition"], r["source"]["offset"]) for r in written} == set(wanted)


def test_other_rules_report_exactly_the_lines_they_route_differently(live: Live, tmp_path: Path) -> None:
    topics = tmp_path / "topics"
    shutil.copytree(REPO / "topics", topics)
    doc = yaml.safe_load((topics / "routes.yaml").read_text())
    rule = {"name": "checkout", "match": {"service": "checkout-api"}, "to": "team.platform.logs.v1"}
    doc["logs"]["rules"].insert(0, rule)
    (topics / "routes.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    report = replay(live.settings.model_copy(update={"topics_dir": topics}), live.bundle)
    diff = report.diff
    assert isinstance(diff, LogDiffReport)
    records = {
        (r["source"]["partition"], r["source"]["offset"]): r
        for r in asyncio.run(_read_all(live.settings, "ops.logs.enriched.v1"))
    }
    checkout = [w for w in in_range(live) if records[w]["service"] == "checkout-api"]
    assert checkout and diff.compared == len(in_range(live))
    # Every checkout line now goes to platform only (the new rule comes first and does not continue):
    # exactly the checkout lines that went elsewhere live change.
    moved = [w for w in checkout if records[w].get("routes") != ["team.platform.logs.v1"]]
    assert moved and diff.changed["routes"] == len(moved)
    assert diff.changed["template"] == diff.changed["severity"] == diff.changed["incident_class"] == 0
    assert diff.changed["alerts"] == 0
    assert diff.any_changed == len(moved)
    assert all(e.new == "team.platform.logs.v1" for e in diff.examples["routes"])
    assert "routes" in render_text(report) and "team.platform.logs.v1" in render_html(report)


def test_a_lower_alert_severity_raises_alerts_the_live_worker_did_not(live: Live) -> None:
    config = LogTriageConfig(new_template_severity="warning")
    report = replay(live.settings, live.bundle, config=config)
    diff = report.diff
    assert isinstance(diff, LogDiffReport)
    before, after = diff.alerts.get("new_error_template", (0, 0))
    assert after > before
    assert diff.changed["alerts"] >= after - before > 0
    assert diff.changed["template"] == diff.changed["severity"] == diff.changed["incident_class"] == 0
    assert any("new_error_template" in e.new and "new_error_template" not in e.old for e in diff.examples["alerts"])


async def _timestamps(settings: Settings) -> dict[int, list[int]]:
    """Per partition of the input topic, its records' timestamps in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, settings.topic("ops.logs.v1"))
        end = await consumer.end_offsets(parts)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: dict[int, list[int]] = {tp.partition: [] for tp in parts}
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition].extend(m.timestamp for m in messages)
        return out
    finally:
        await consumer.stop()


def test_the_warm_up_can_start_at_a_time(live: Live) -> None:
    """``--warmup-from T``: each partition warms up from its first record at or after T, not from the first
    retained one; the report says what that leaves out."""
    stamps = asyncio.run(_timestamps(live.settings))
    busiest = max(stamps, key=lambda p: len(stamps[p]))
    since = stamps[busiest][FROM_OFFSET // 2]
    replayed = [times for times in stamps.values() if len(times) > FROM_OFFSET]  # the others need no warm-up
    expected = 0
    for times in replayed:
        first = next(i for i, ts in enumerate(times) if ts >= since)
        expected += max(0, FROM_OFFSET - first)
    everything = FROM_OFFSET * len(replayed)
    assert 0 < expected < everything
    report = replay(live.settings, live.bundle, warmup_from_ms=since)
    assert report.warmup_records == expected
    assert report.records == sum(len(times) - FROM_OFFSET for times in replayed)
    assert any(note.startswith("warm-up from ") for note in report.notes)
