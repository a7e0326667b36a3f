"""Metrics of both paths, lag of both groups, readiness and the operations endpoints, without a broker; the
shutdown deadline of the worker."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from streamer.events import Output
from streamer.metrics import LagProbe, Metrics, OpsService, Readiness, exported_names, ops_routes
from streamer.pipeline import Batch

TICKETS, LOGS = ("path", "tickets"), ("path", "logs")


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def batch() -> Batch:
    return Batch(
        path="tickets",
        outputs=[
            Output("support.tickets.enriched.v1", b"a", {}),
            Output("support.tickets.enriched.v1", b"b", {}),
            Output("support.queue.billing.v1", b"a", {}),
            Output("llm.escalations.v1", b"b", {}),
            Output("streamer.deadletter.v1", b"c", {}),
        ],
        size=3,
        processed=2,
        events_in=Counter({"staging.support.tickets.v1": 3}),
        source_timestamps_ms=[99_000, 99_500, 100_000],
        dead_letters=Counter({"invalid_json": 1}),
        escalations=Counter({"vip_customer": 1, "low_confidence": 1}),
        inference_s=0.2,
    )


def test_a_batch_is_counted_per_topic_and_reason_with_the_prefix_stripped() -> None:
    metrics = Metrics(topic_prefix="staging.", clock=lambda: 101.0, process=False)
    metrics.record_batch(batch())
    s = samples(metrics)
    assert s[("streamer_events_in_total", frozenset({("topic", "support.tickets.v1")}))] == 3
    assert s[("streamer_outputs_total", frozenset({TICKETS, ("topic", "support.tickets.enriched.v1")}))] == 2
    assert s[("streamer_outputs_total", frozenset({TICKETS, ("topic", "streamer.deadletter.v1")}))] == 1
    assert s[("streamer_dead_letters_total", frozenset({TICKETS, ("reason", "invalid_json")}))] == 1
    assert s[("streamer_escalations_total", frozenset({TICKETS, ("reason", "vip_customer")}))] == 1
    assert s[("streamer_batch_size_sum", frozenset({TICKETS}))] == 3
    assert s[("streamer_inference_seconds_sum", frozenset({TICKETS}))] == pytest.approx(0.2)
    # End to end: 2 s, 1.5 s and 1 s from the records' timestamps to the clock at acknowledgement.
    assert s[("streamer_end_to_end_latency_seconds_count", frozenset({TICKETS}))] == 3
    assert s[("streamer_end_to_end_latency_seconds_sum", frozenset({TICKETS}))] == pytest.approx(4.5)
    assert s[("streamer_end_to_end_latency_seconds_bucket", frozenset({TICKETS, ("le", "1.0")}))] == 1
    # Nothing of the other path appears before it runs.
    assert not any(("path", "logs") in labels for _, labels in s)


def test_model_info_lag_and_assignment() -> None:
    metrics = Metrics(process=False)
    metrics.set_model("default", "abc123", device="cpu", compute_type="int8")
    metrics.set_assignment("g", "tickets", [("support.tickets.v1", 0), ("support.tickets.v1", 1)])
    metrics.set_lag("g", "support.tickets.v1", 0, 12)
    metrics.set_lag("g", "support.tickets.v1", 1, 0)
    s = samples(metrics)
    info = frozenset({("bundle", "default"), ("version", "abc123"), ("device", "cpu"), ("compute_type", "int8")})
    assert s[("streamer_model_info", info)] == 1
    assert s[("streamer_partitions_assigned", frozenset({("group", "g"), TICKETS}))] == 2
    assert s[("streamer_consumer_lag", lag_labels("g", "support.tickets.v1", 0))] == 12
    # A revoked partition's lag series goes away rather than freezing at its last value.
    metrics.set_assignment("g", "tickets", [("support.tickets.v1", 1)])
    s = samples(metrics)
    assert ("streamer_consumer_lag", lag_labels("g", "support.tickets.v1", 0)) not in s
    assert s[("streamer_partitions_assigned", frozenset({("group", "g"), TICKETS}))] == 1


def test_escalation_threshold_gauge_reads_the_processor_at_scrape_time() -> None:
    threshold: list[float | None] = [0.86]
    m = Metrics(process=False)
    m.watch_escalation_threshold(lambda: threshold[0])
    assert samples(m)[("streamer_escalation_threshold", frozenset())] == pytest.approx(0.86)
    threshold[0] = 0.74  # calm traffic: the spender lowered it
    assert samples(m)[("streamer_escalation_threshold", frozenset())] == pytest.approx(0.74)
    threshold[0] = None  # a bundle without an escalation score
    assert samples(m)[("streamer_escalation_threshold", frozenset())] == 0.0


def test_buffer_gauges_read_the_batch_planner_at_scrape_time() -> None:
    from streamer.batching import BatchPlanner, BatchPolicy

    metrics = Metrics(process=False)
    planner: BatchPlanner[str, int] = BatchPlanner(BatchPolicy(max_batch_tokens=10))
    metrics.watch_buffer("tickets", planner)
    labels = frozenset({TICKETS})
    s = samples(metrics)
    assert [s[(name, labels)] for name in GAUGES] == [0, 0, 0, 0]
    for i in range(4):
        planner.add(f"r{i}", 6, i % 2, now=0.0)  # 24 tokens > twice the budget: both partitions pause
    s = samples(metrics)
    assert [s[(name, labels)] for name in GAUGES] == [4, 24, 2, 0]
    batch = planner.take(now=0.0)
    planner.observe(batch.tokens, 0.5)
    s = samples(metrics)
    assert [s[(name, labels)] for name in GAUGES] == [4 - len(batch.items), 24 - batch.tokens, 2, batch.tokens * 2]


GAUGES = (
    "streamer_buffered_records",
    "streamer_buffered_tokens",
    "streamer_paused_partitions",
    "streamer_model_tokens_per_second",
)


def lag_labels(group: str, topic: str, partition: int) -> frozenset[tuple[str, str]]:
    return frozenset({("group", group), ("topic", topic), ("partition", str(partition))})


def test_exported_names_cover_every_sample_name_even_before_the_first_sample() -> None:
    names = exported_names(Metrics().registry)
    for name in (
        "streamer_events_in_total",
        "streamer_outputs_total",
        "streamer_dead_letters_total",
        "streamer_escalations_total",
        "streamer_batch_size_bucket",
        "streamer_inference_seconds_count",
        "streamer_end_to_end_latency_seconds_sum",
        "streamer_model_info",
        "streamer_consumer_lag",
        "streamer_start_time_seconds",
    ):
        assert name in names, name
    assert all(n.startswith("streamer_") for n in names)


def test_two_workers_in_one_process_do_not_share_metrics() -> None:
    a, b = Metrics(process=False), Metrics(process=False)
    a.record_batch(batch())
    assert samples(a)[("streamer_batch_size_count", frozenset({TICKETS}))] == 1
    assert not any(name.startswith("streamer_batch_size") for name, _ in samples(b))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_readiness_names_each_failing_check() -> None:
    clock = Clock()
    ready = Readiness(broker_stale_s=30, clock=clock)
    assert {name for name, c in ready.checks().items() if not c["ok"]} == {"model", "assignment", "broker"}
    ready.model = "default@1"
    ready.assigned = {("support.tickets.v1", 0)}
    ready.broker_seen()
    assert ready.is_ready()
    clock.now += 31
    assert not ready.checks()["broker"]["ok"] and not ready.is_ready()
    ready.broker_seen()
    ready.stopping = True
    assert [n for n, c in ready.checks().items() if not c["ok"]] == ["shutdown"]


async def test_endpoints() -> None:
    metrics = Metrics(process=False)
    readiness = Readiness(model="default@1")
    async with TestClient(TestServer(ops_routes(metrics, readiness))) as client:
        response = await client.get("/health")
        assert response.status == 200
        response = await client.get("/ready")
        assert response.status == 503
        body = await response.json()
        assert body["failing"] == ["assignment", "broker"]
        assert "no partitions assigned" in body["checks"]["assignment"]["detail"]
        readiness.assigned = {("t", 0)}
        readiness.broker_seen()
        response = await client.get("/ready")
        assert response.status == 200 and (await response.json())["status"] == "ready"
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
        assert "streamer_ready 1.0" in text


class FakeConsumer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.started = self.stopped = 0
        self.committed_offsets: dict[TopicPartition, int | None] = {
            TopicPartition("t", 0): 40,
            TopicPartition("t", 1): None,
        }

    async def start(self) -> None:
        self.started += 1
        if self.fail:
            raise OSError("connection refused")

    async def stop(self) -> None:
        self.stopped += 1

    async def topics(self) -> set[str]:
        return {"t"}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 50 for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets[tp]

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 5 for tp in tps}


async def test_lag_is_end_minus_committed_or_minus_the_beginning_before_any_commit() -> None:
    consumer = FakeConsumer()
    probe = LagProbe(lambda: consumer)  # type: ignore[arg-type,return-value]
    assert await probe.lag([("t", 0), ("t", 1)]) == {("t", 0): 10, ("t", 1): 45}
    assert await probe.lag([]) == {}  # a metadata round trip only
    assert consumer.started == 1
    await probe.close()
    assert consumer.stopped == 1


class FakeSignal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fn: Any) -> None:
        self.receivers.append(fn)


class FakeApp:
    def __init__(self) -> None:
        self.on_partitions_assigned = FakeSignal()
        self.on_partitions_revoked = FakeSignal()


async def test_ops_service_tracks_assignment_and_broker_contact() -> None:
    consumer = FakeConsumer(fail=True)
    metrics, readiness, app = Metrics(process=False), Readiness(model="m@1"), FakeApp()
    service = OpsService(
        app=app,
        metrics=metrics,
        readiness=readiness,
        host="127.0.0.1",
        port=0,
        probes=[LagProbe(lambda: consumer, group="g")],  # type: ignore[arg-type,return-value]
        app_group="g",
        loop=asyncio.get_running_loop(),
    )
    [assigned] = app.on_partitions_assigned.receivers
    await assigned(app, {TopicPartition("t", 0), TopicPartition("t", 1)})
    assert readiness.assigned == {("t", 0), ("t", 1)}

    # The brokers do not answer: no broker contact, and one warning however often it fails.
    with capture_logs() as logs:
        await service.measure_lag()
        await service.measure_lag()
    assert readiness.last_broker_contact is None
    assert consumer.started == 2 and consumer.stopped == 2
    assert [line["log_level"] for line in logs] == ["warning"]

    consumer.fail = False
    await service.measure_lag()
    assert readiness.last_broker_contact is not None
    s = samples(metrics)
    assert s[("streamer_consumer_lag", lag_labels("g", "t", 0))] == 10

    [revoked] = app.on_partitions_revoked.receivers
    await revoked(app, {TopicPartition("t", 0)})
    assert readiness.assigned == {("t", 1)}
    assert ("streamer_consumer_lag", lag_labels("g", "t", 0)) not in samples(metrics)


def test_worker_exits_1_when_the_shutdown_deadline_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from streamer import worker as worker_module
    from streamer.app import create_app
    from streamer.kafka.sender import Sender
    from streamer.settings import Settings

    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    monkeypatch.setattr(worker_module.os, "_exit", fake_exit)
    loop = asyncio.new_event_loop()
    try:
        readiness = Readiness(model="m@1")
        worker = worker_module.TriageWorker(
            create_app(Settings()),
            Sender(lambda: None),  # type: ignore[arg-type,return-value]
            readiness=readiness,
            shutdown_timeout_s=0.05,
            override_logging=False,
            quiet=True,
            loop=loop,
        )
        worker._shutdown_requested(signal.SIGTERM)
        assert readiness.stopping
        assert exited.wait(5)
        assert codes == [worker_module.EXIT_SHUTDOWN_TIMEOUT] == [1]
    finally:
        loop.close()


def test_log_lines_carry_the_process_fields() -> None:
    from streamer.observability import add_process_fields, bind_process_fields

    bind_process_fields(bundle="default", bundle_version="abc")
    try:
        event = add_process_fields(None, "info", {"event": "x", "bundle": "other"})
        assert event == {"event": "x", "bundle": "other", "bundle_version": "abc"}
    finally:
        bind_process_fields(bundle=None, bundle_version=None)
    assert add_process_fields(None, "info", {"event": "x"}) == {"event": "x"}


def test_ready_body_is_json_with_every_check() -> None:
    body = Readiness().checks()
    assert json.loads(json.dumps(body)).keys() == {"model", "assignment", "broker", "shutdown"}


async def test_a_taken_port_leaves_the_worker_running_without_endpoints() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = OpsService(
            app=FakeApp(),
            metrics=Metrics(process=False),
            readiness=Readiness(),
            host="127.0.0.1",
            port=port,
            loop=asyncio.get_running_loop(),
        )
        with capture_logs() as logs:
            await service.on_start()
            await service.on_stop()
    assert [line["event"] for line in logs if line["log_level"] == "error"] == [
        "metrics server cannot listen; running without /metrics, /health and /ready"
    ]


def test_escalation_rate_is_measured_over_the_recent_window_against_the_budget() -> None:
    from pathlib import Path

    import yaml

    from streamer.metrics import ESCALATION_WINDOW

    m = Metrics(process=False)
    m.set_escalation_budget(0.08)
    m.record_batch(Batch(path="tickets", size=100, processed=100, model_escalated=30))
    assert samples(m)[("streamer_escalation_rate", frozenset())] == pytest.approx(0.3)
    # a window's worth of calmer traffic pushes the old batch out
    for _ in range(ESCALATION_WINDOW // 100):
        m.record_batch(Batch(path="tickets", size=100, processed=100, model_escalated=8))
    assert samples(m)[("streamer_escalation_rate", frozenset())] == pytest.approx(0.08)
    assert samples(m)[("streamer_escalation_budget", frozenset())] == 0.08
    m.record_batch(Batch(path="tickets", size=5, processed=0))  # all dead letters: no tickets, no change
    assert samples(m)[("streamer_escalation_rate", frozenset())] == pytest.approx(0.08)
    # log escalations are not what the ticket budget spends
    m.record_batch(Batch(path="logs", size=500, processed=500, model_escalated=400, escalated=400))
    assert samples(m)[("streamer_escalation_rate", frozenset())] == pytest.approx(0.08)
    # the shipped alert rule speaks of metrics the worker exports
    rules = yaml.safe_load((Path(__file__).resolve().parents[3] / "deploy/prometheus/alerts.yml").read_text())
    expr = rules["groups"][0]["rules"][0]["expr"]
    assert "streamer_escalation_rate" in expr and "1.5 * streamer_escalation_budget" in expr
    assert {"streamer_escalation_rate", "streamer_escalation_budget"} <= exported_names(m.registry)
    prometheus = yaml.safe_load((Path(__file__).resolve().parents[3] / "deploy/prometheus/prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]


def log_batch() -> Batch:
    return Batch(
        path="logs",
        outputs=[
            *[Output("ops.logs.enriched.v1", b"billing", {}) for _ in range(4)],
            Output("ops.alerts.v1", b"billing", {}),
            Output("ops.log_templates.v1", b"t1", {}),
            Output("ops.log_templates.v1", b"t2", {}),
            Output("llm.escalations.v1", b"e1", {}),
            Output("streamer.deadletter.v1", None, {}),
        ],
        size=5,
        processed=4,
        events_in=Counter({"staging.ops.logs.v1": 5}),
        source_timestamps_ms=[100_000, 100_000, 100_500, 101_000],
        dead_letters=Counter({"invalid_utf8": 1}),
        escalations=Counter({"error_burst": 1}),
        escalated=1,
        alerts=Counter({"error_burst": 1}),
        templates=2,
        classified=3,
        inference_s=0.05,
    )


def test_a_log_batch_fills_every_series_a_ticket_batch_does_with_its_own_path_label() -> None:
    metrics = Metrics(topic_prefix="staging.", clock=lambda: 101.0, process=False)
    metrics.record_batch(log_batch())
    s = samples(metrics)
    assert s[("streamer_events_in_total", frozenset({("topic", "ops.logs.v1")}))] == 5
    for topic, n in log_batch().output_counts().items():
        assert s[("streamer_outputs_total", frozenset({LOGS, ("topic", topic)}))] == n, topic
    assert s[("streamer_outputs_total", frozenset({LOGS, ("topic", "ops.logs.enriched.v1")}))] == 4
    assert s[("streamer_dead_letters_total", frozenset({LOGS, ("reason", "invalid_utf8")}))] == 1
    assert s[("streamer_escalations_total", frozenset({LOGS, ("reason", "error_burst")}))] == 1
    assert s[("streamer_batch_size_sum", frozenset({LOGS}))] == 5
    assert s[("streamer_inference_seconds_sum", frozenset({LOGS}))] == pytest.approx(0.05)
    # 1 s, 1 s, 0.5 s and 0 s from the lines' timestamps to the acknowledgement.
    assert s[("streamer_end_to_end_latency_seconds_count", frozenset({LOGS}))] == 4
    assert s[("streamer_end_to_end_latency_seconds_sum", frozenset({LOGS}))] == pytest.approx(2.5)
    assert s[("streamer_log_alerts_total", frozenset({("kind", "error_burst")}))] == 1
    assert s[("streamer_log_templates_published_total", frozenset())] == 2
    assert s[("streamer_log_templates_classified_total", frozenset())] == 3
    # Ticket-only series stay untouched by logs.
    assert not any(("path", "tickets") in labels for _, labels in s)
    assert s[("streamer_escalation_rate", frozenset())] == 0


def test_both_paths_in_one_worker_are_counted_apart_where_they_share_topics() -> None:
    metrics = Metrics(topic_prefix="staging.", clock=lambda: 101.0, process=False)
    metrics.record_batch(batch())
    metrics.record_batch(log_batch())
    metrics.record_batch(log_batch())
    s = samples(metrics)
    escalations_out = {
        path: s[("streamer_outputs_total", frozenset({path, ("topic", "llm.escalations.v1")}))]
        for path in (TICKETS, LOGS)
    }
    assert escalations_out == {TICKETS: 1, LOGS: 2}
    dead_out = {
        path: s[("streamer_outputs_total", frozenset({path, ("topic", "streamer.deadletter.v1")}))]
        for path in (TICKETS, LOGS)
    }
    assert dead_out == {TICKETS: 1, LOGS: 2}
    assert s[("streamer_events_in_total", frozenset({("topic", "support.tickets.v1")}))] == 3
    assert s[("streamer_events_in_total", frozenset({("topic", "ops.logs.v1")}))] == 10
    assert s[("streamer_batch_size_count", frozenset({TICKETS}))] == 1
    assert s[("streamer_batch_size_count", frozenset({LOGS}))] == 2
    assert s[("streamer_batch_size_sum", frozenset({LOGS}))] == 10
    assert s[("streamer_end_to_end_latency_seconds_count", frozenset({TICKETS}))] == 3
    assert s[("streamer_end_to_end_latency_seconds_count", frozenset({LOGS}))] == 8


def test_a_log_batch_that_only_releases_held_records_counts_outputs_not_a_batch() -> None:
    metrics = Metrics(process=False)
    held = Batch(path="logs", outputs=[Output("ops.logs.enriched.v1", b"s", {})] * 3, processed=3)
    metrics.record_batch(held)
    s = samples(metrics)
    assert s[("streamer_outputs_total", frozenset({LOGS, ("topic", "ops.logs.enriched.v1")}))] == 3
    assert s[("streamer_batch_size_count", frozenset({LOGS}))] == 0
    assert not any(name == "streamer_events_in_total" for name, _ in s)


def test_lag_and_assignment_of_two_groups_are_kept_apart() -> None:
    metrics = Metrics(topic_prefix="p.", process=False)
    metrics.set_assignment("g", "tickets", [("p.support.tickets.v1", 0), ("p.support.tickets.v1", 1)])
    metrics.set_assignment("g-logs", "logs", [("p.ops.logs.v1", 0), ("p.ops.logs.v1", 3), ("p.ops.logs.v1", 4)])
    metrics.set_lag("g", "p.support.tickets.v1", 0, 7)
    metrics.set_lag("g", "p.support.tickets.v1", 1, 0)
    for partition in (0, 3, 4):
        metrics.set_lag("g-logs", "p.ops.logs.v1", partition, 100 * partition)
    s = samples(metrics)
    assert s[("streamer_partitions_assigned", frozenset({("group", "g"), TICKETS}))] == 2
    assert s[("streamer_partitions_assigned", frozenset({("group", "g-logs"), LOGS}))] == 3
    assert s[("streamer_consumer_lag", lag_labels("g", "support.tickets.v1", 0))] == 7
    assert s[("streamer_consumer_lag", lag_labels("g-logs", "ops.logs.v1", 4))] == 400
    # Losing every log partition drops that group's lag series only.
    metrics.set_assignment("g-logs", "logs", [])
    s = samples(metrics)
    lag = {labels for name, labels in s if name == "streamer_consumer_lag"}
    assert lag == {lag_labels("g", "support.tickets.v1", 0), lag_labels("g", "support.tickets.v1", 1)}
    assert s[("streamer_partitions_assigned", frozenset({("group", "g-logs"), LOGS}))] == 0


class GroupConsumer(FakeConsumer):
    """A probe consumer of one group: its committed offsets are that group's."""

    def __init__(self, committed: dict[TopicPartition, int | None], end: int) -> None:
        super().__init__()
        self.committed_offsets = committed
        self.end = end

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.end for tp in tps}


async def test_ops_service_measures_each_group_on_the_partitions_this_worker_owns_in_it() -> None:
    tickets = GroupConsumer({TopicPartition("tk", 0): 40, TopicPartition("tk", 1): 50}, end=50)
    logs = GroupConsumer({TopicPartition("lg", 2): 900, TopicPartition("lg", 5): None}, end=1000)
    metrics, readiness, app = Metrics(process=False), Readiness(model="m@1"), FakeApp()
    service = OpsService(
        app=app,
        metrics=metrics,
        readiness=readiness,
        host="127.0.0.1",
        port=0,
        probes=[
            LagProbe(lambda: tickets, group="g", path="tickets"),  # type: ignore[arg-type,return-value]
            LagProbe(lambda: logs, group="g-logs", path="logs"),  # type: ignore[arg-type,return-value]
        ],
        app_group="g",
        loop=asyncio.get_running_loop(),
    )
    [assigned] = app.on_partitions_assigned.receivers
    await assigned(app, {TopicPartition("tk", 0), TopicPartition("tk", 1)})
    service.set_assignment("g-logs", "logs", {("lg", 2), ("lg", 5)})
    # the log group's partitions are not the app's: readiness follows the ticket group
    assert readiness.assigned == {("tk", 0), ("tk", 1)}
    await service.measure_lag()
    s = samples(metrics)
    lag = {labels: v for (name, labels), v in s.items() if name == "streamer_consumer_lag"}
    assert lag == {
        lag_labels("g", "tk", 0): 10,
        lag_labels("g", "tk", 1): 0,
        lag_labels("g-logs", "lg", 2): 100,
        lag_labels("g-logs", "lg", 5): 995,  # never committed: from the beginning (5)
    }
    assert s[("streamer_partitions_assigned", frozenset({("group", "g-logs"), LOGS}))] == 2
    assert s[("streamer_partitions_assigned", frozenset({("group", "g"), TICKETS}))] == 2

    # One group's probe failing leaves the other's measurement and the broker check standing.
    await service.probes[1].close()
    logs.fail = True
    readiness.last_broker_contact = None
    with capture_logs() as lines:
        await service.measure_lag()
    assert readiness.last_broker_contact is not None
    assert [(line["event"], line["group"]) for line in lines] == [
        ("broker round trip for consumer lag failed", "g-logs")
    ]


def test_the_readme_metrics_table_names_every_family_the_worker_exports_and_no_other() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Operations") : readme.index("## Performance")]
    rows = [line for line in section.splitlines() if line.startswith("| `streamer_")]
    documented = {name for row in rows for name in re.findall(r"`(streamer_[a-z_]+)`", row.split("|")[1])}
    families = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in Metrics(process=False).registry.collect()
    }
    assert documented <= exported_names(Metrics(process=False).registry), documented - families
    # every family but those the sentence after the table names (with streamer_process_*)
    assert families - documented == {"streamer_ready", "streamer_start_time_seconds"}


def test_the_metrics_package_does_not_import_the_agents() -> None:
    """It reads ``pipeline.Batch``; the Kafka agents sit beside it, not below it."""
    import subprocess
    import sys

    code = "import sys, streamer.metrics; print(sorted(m for m in sys.modules if m.startswith('streamer.agents')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_worker_exports_the_collectors_work_per_generation_read_at_scrape_time() -> None:
    import gc

    registry = Metrics().registry
    gc.disable()  # only the collection below may happen between the two scrapes
    try:
        young = registry.get_sample_value("streamer_gc_collections_total", {"generation": "0"})
        assert young is not None
        gc.collect(0)
        assert registry.get_sample_value("streamer_gc_collections_total", {"generation": "0"}) == young + 1
    finally:
        gc.enable()
    assert registry.get_sample_value("streamer_gc_frozen_objects") == gc.get_freeze_count()
    assert registry.get_sample_value("streamer_gc_objects_collected_total", {"generation": "2"}) is not None
    assert (
        Metrics(process=False).registry.get_sample_value("streamer_gc_collections_total", {"generation": "0"}) is None
    )
