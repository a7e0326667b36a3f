"""Metrics, readiness and the operations endpoints, without a broker; the shutdown deadline of the worker."""

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
from streamer.pipeline.batch import Batch


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
    assert s[("streamer_outputs_total", frozenset({("topic", "support.tickets.enriched.v1")}))] == 2
    assert s[("streamer_outputs_total", frozenset({("topic", "streamer.deadletter.v1")}))] == 1
    assert s[("streamer_dead_letters_total", frozenset({("reason", "invalid_json")}))] == 1
    assert s[("streamer_escalations_total", frozenset({("reason", "vip_customer")}))] == 1
    assert s[("streamer_batch_size_sum", frozenset())] == 3
    assert s[("streamer_inference_seconds_sum", frozenset())] == pytest.approx(0.2)
    # End to end: 2 s, 1.5 s and 1 s from the records' timestamps to the clock at acknowledgement.
    assert s[("streamer_end_to_end_latency_seconds_count", frozenset())] == 3
    assert s[("streamer_end_to_end_latency_seconds_sum", frozenset())] == pytest.approx(4.5)
    assert s[("streamer_end_to_end_latency_seconds_bucket", frozenset({("le", "1.0")}))] == 1


def test_model_info_lag_and_assignment() -> None:
    metrics = Metrics(process=False)
    metrics.set_model("default", "abc123", device="cpu", compute_type="int8")
    metrics.set_assignment([("support.tickets.v1", 0), ("support.tickets.v1", 1)])
    metrics.set_lag("support.tickets.v1", 0, 12)
    metrics.set_lag("support.tickets.v1", 1, 0)
    s = samples(metrics)
    info = frozenset({("bundle", "default"), ("version", "abc123"), ("device", "cpu"), ("compute_type", "int8")})
    assert s[("streamer_model_info", info)] == 1
    assert s[("streamer_partitions_assigned", frozenset())] == 2
    assert s[("streamer_consumer_lag", frozenset({("topic", "support.tickets.v1"), ("partition", "0")}))] == 12
    # A revoked partition's lag series goes away rather than freezing at its last value.
    metrics.set_assignment([("support.tickets.v1", 1)])
    s = samples(metrics)
    assert ("streamer_consumer_lag", frozenset({("topic", "support.tickets.v1"), ("partition", "0")})) not in s
    assert s[("streamer_partitions_assigned", frozenset())] == 1


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
    assert samples(a)[("streamer_batch_size_count", frozenset())] == 1
    assert samples(b)[("streamer_batch_size_count", frozenset())] == 0


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
        probe=LagProbe(lambda: consumer),  # type: ignore[arg-type,return-value]
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
    assert s[("streamer_consumer_lag", frozenset({("topic", "t"), ("partition", "0")}))] == 10

    [revoked] = app.on_partitions_revoked.receivers
    await revoked(app, {TopicPartition("t", 0)})
    assert readiness.assigned == {("t", 1)}
    assert ("streamer_consumer_lag", frozenset({("topic", "t"), ("partition", "0")})) not in samples(metrics)


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
    # the shipped alert rule speaks of metrics the worker exports
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/prometheus/alerts.yml").read_text())
    expr = rules["groups"][0]["rules"][0]["expr"]
    assert "streamer_escalation_rate" in expr and "1.5 * streamer_escalation_budget" in expr
    assert {"streamer_escalation_rate", "streamer_escalation_budget"} <= exported_names(m.registry)
    prometheus = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/prometheus/prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]
