"""The harness as factory fixtures: each returns a function that makes what a test asks for and tracks it,
and its teardown stops or deletes whatever was made. ``tests/conftest.py`` registers them for every test.

Function-scoped by default; ``module_topic_factory`` and ``module_worker_factory`` serve fixtures that one
module shares (one worker for the module, each test with its own ids).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from streamer.kafka import local
from streamer.kafka.admin import delete_prefixed_topics

from . import kafka
from .brokers import own_broker, own_cluster
from .inprocess import InProcessWorker
from .kafka import Message, Record, Topics, create_topics
from .processes import StreamerProcess, free_port, streamer_env

#: Exit statuses a process stopped at teardown may have without its log being shown.
QUIET_EXITS = (0, -signal.SIGTERM, -signal.SIGKILL, None)


def _label(node: pytest.Item | pytest.Collector) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", node.name.removesuffix(".py"))[:40].strip("-")


class TopicFactory:
    """``topic_factory(names=None, *, partitions=None, delete=False, bootstrap=None, **settings) -> Topics``:
    the declared topics ``names`` (default: all) behind a new prefix on the session broker (or ``bootstrap``).
    ``delete=True`` deletes them at teardown; by default they are left to the session broker's end."""

    def __init__(self, bootstrap: str, label: str) -> None:
        self.bootstrap = bootstrap
        self.label = label
        self.made: list[tuple[Topics, bool]] = []

    def __call__(
        self,
        names: Sequence[str] | None = None,
        *,
        label: str | None = None,
        partitions: int | Mapping[str, int] | None = None,
        bootstrap: str | None = None,
        client: Mapping[str, Any] | None = None,
        delete: bool = False,
        **settings: Any,
    ) -> Topics:
        topics = create_topics(
            bootstrap or self.bootstrap, label or self.label, names, partitions=partitions, client=client, **settings
        )
        self.made.append((topics, delete))
        return topics

    def close(self) -> None:
        for topics, delete in self.made:
            if delete:
                asyncio.run(delete_prefixed_topics(topics.settings))


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    factory = TopicFactory(kafka_bootstrap, _label(request.node))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    factory = TopicFactory(kafka_bootstrap, _label(request.node))
    yield factory
    factory.close()


@pytest.fixture
def produce(kafka_bootstrap: str) -> Callable[..., list[tuple[int, int]]]:
    """``produce(topic, records, **producer_options)`` on the session broker, acknowledged: (partition, offset)
    of each record; records are ``(key, value)``, ``(key, value, headers)`` or ``harness.kafka.Out``."""

    def send(topic: str, records: list[Record], **options: Any) -> list[tuple[int, int]]:
        return kafka.produce(kafka_bootstrap, topic, records, **options)

    return send


@pytest.fixture
def read_topic(kafka_bootstrap: str) -> Callable[..., list[Message]]:
    """``read_topic(topic, until=None, match=None, timeout=120)`` on the session broker: to the topic's end, or
    until ``until`` records ``match`` (see ``harness.kafka.aread_topics``)."""

    def read(topic: str, **kwargs: Any) -> list[Message]:
        return kafka.read_topic(kafka_bootstrap, topic, **kwargs)

    return read


class WorkerFactory:
    """``worker_factory(topics, *, only="tickets", group=None, env=None, metrics=False) -> StreamerProcess``:
    ``python -m streamer worker [--only ...]`` on ``topics`` with the test bundle, started; ``env`` adds or
    overrides settings, ``metrics=True`` serves /metrics, /health and /ready on a free port (else none).
    ``worker_factory.process(name, args, env, module=...)`` starts any other command the same way, and
    ``worker_factory.in_process(topics, only=..., options={"on_batch": ...}, **settings)`` builds the worker
    in this process (``streamer.worker.build_worker``) and runs it on a thread.
    Every process is stopped (SIGTERM, then SIGKILL) at teardown; odd exits print their log's tail."""

    def __init__(self, workdir: Callable[[str], Path], bundle: Path) -> None:
        self.workdir = workdir
        self.bundle = bundle
        self.started: list[StreamerProcess] = []
        self.in_process_workers: list[InProcessWorker] = []

    def __call__(
        self,
        topics: Topics,
        *,
        name: str | None = None,
        group: str | None = None,
        only: str | None = "tickets",
        env: Mapping[str, str] | None = None,
        metrics: bool = False,
        bundle: Path | None = None,
        start: bool = True,
    ) -> StreamerProcess:
        name = name or f"worker-{len(self.started)}"
        port = free_port() if metrics else None
        settings = streamer_env(
            topics,
            STREAMER_GROUP_ID=group or f"{topics.prefix}{name}",
            STREAMER_BUNDLE_DIR=str(bundle or self.bundle),
            STREAMER_METRICS_PORT=str(port or 0),
            STREAMER_METRICS_HOST="127.0.0.1",
        )
        args = ("worker", "--only", only) if only else ("worker",)
        return self.process(name, args, {**settings, **(env or {})}, metrics_port=port, start=start)

    def in_process(
        self,
        topics: Topics,
        *,
        group: str | None = None,
        only: Sequence[str] = ("tickets",),
        start: bool = True,
        options: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> InProcessWorker:
        """``build_worker`` in this process on ``topics``, with ``settings`` overriding the test's settings
        (bundle, group, no /metrics server) and ``options`` passed to ``build_worker`` (``on_batch``...)."""
        config = topics.settings.model_copy(
            update={
                "group_id": group or f"{topics.prefix}in-process-{len(self.in_process_workers)}",
                "bundle_dir": self.bundle,
                "metrics_port": 0,
                **settings,
            }
        )
        worker = InProcessWorker(config, only=only, **(options or {}))
        self.in_process_workers.append(worker)
        return worker.start() if start else worker

    def process(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        module: str = "streamer",
        metrics_port: int | None = None,
        start: bool = True,
    ) -> StreamerProcess:
        proc = StreamerProcess(name, args, env, self.workdir(name), module=module, metrics_port=metrics_port)
        self.started.append(proc)
        return proc.start() if start else proc

    def close(self) -> None:
        for worker in self.in_process_workers:
            worker.stop()
        for proc in self.started:
            code = proc.terminate()
            if code not in QUIET_EXITS:
                print(f"{proc.name} exited {code}:\n{proc.log_tail()}")


@pytest.fixture
def worker_factory(tmp_path: Path, test_bundle: Path) -> Iterator[WorkerFactory]:
    def workdir(name: str) -> Path:
        path = tmp_path / "processes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    factory = WorkerFactory(workdir, test_bundle)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_worker_factory(tmp_path_factory: pytest.TempPathFactory, test_bundle: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(lambda name: tmp_path_factory.mktemp(name), test_bundle)
    yield factory
    factory.close()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., local.Broker]]:
    """``broker_factory(**options) -> local.Broker``: a broker of the test's own (free ports, temporary data
    dir; ``options`` as ``local.start``'s), stopped at teardown. Its data dir is ``broker.data_dir``."""
    with ExitStack() as stack:
        count = iter(range(1_000))

        def start(**options: Any) -> local.Broker:
            return stack.enter_context(own_broker(tmp_path / f"kafka-{next(count)}", **options))

        yield start


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., local.LocalCluster]]:
    """``cluster_factory(nodes=3) -> local.LocalCluster``: KRaft nodes of the test's own, stopped at teardown."""
    with ExitStack() as stack:
        count = iter(range(1_000))

        def start(nodes: int = 3, **options: Any) -> local.LocalCluster:
            return stack.enter_context(own_cluster(tmp_path / f"kafka{nodes}-{next(count)}", nodes, **options))

        yield start
