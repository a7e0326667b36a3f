"""The worker's operations side: ``/metrics``, ``/health``, ``/ready`` and the lag poller, in its event loop.

``OpsService`` runs inside the worker's event loop (a ``mode.Service`` started before the Faust app and
stopped after it): an aiohttp server on ``STREAMER_METRICS_HOST:STREAMER_METRICS_PORT`` and a poller that
measures consumer lag every ``lag_interval_s`` (5 s) with one probe per consumer group the worker belongs
to (``streamer.metrics.lag``). The ticket group's partitions come from the Faust app's signals, the log
group's from the log service (``set_assignment``). A successful round trip of any probe is also what
``/ready`` takes as proof that the brokers are reachable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST

from streamer.errors import ConfigError
from streamer.metrics.lag import LAG_INTERVAL_S, LagProbe
from streamer.metrics.registry import Metrics
from streamer.pipeline import Path

__all__ = ["BROKER_STALE_S", "OpsService", "Readiness", "cannot_listen", "listening_socket", "ops_routes"]

log = structlog.get_logger("streamer.metrics")

#: ``/ready`` fails when the last successful broker round trip is older than this.
BROKER_STALE_S = 30.0


@dataclass
class Readiness:
    """What ``/ready`` checks: a loaded model, assigned partitions, a recent broker round trip, no shutdown.

    Args:
        broker_stale_s: a broker round trip older than this fails the check (default 30 s).
        clock: monotonic clock (default ``time.monotonic``).
    """

    broker_stale_s: float = BROKER_STALE_S
    clock: Callable[[], float] = time.monotonic
    model: str | None = None
    assigned: set[tuple[str, int]] = field(default_factory=set)
    last_broker_contact: float | None = None
    stopping: bool = False

    def broker_seen(self) -> None:
        self.last_broker_contact = self.clock()

    def checks(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        age = None if self.last_broker_contact is None else now - self.last_broker_contact
        broker_ok = age is not None and age <= self.broker_stale_s
        return {
            "model": {"ok": self.model is not None, "detail": self.model or "model not loaded"},
            "assignment": {
                "ok": bool(self.assigned),
                "detail": f"{len(self.assigned)} partition(s) assigned" if self.assigned else "no partitions assigned",
            },
            "broker": {
                "ok": broker_ok,
                "detail": (
                    "no successful broker round trip yet"
                    if age is None
                    else f"last successful broker round trip {age:.1f} s ago (limit {self.broker_stale_s:.0f} s)"
                ),
            },
            "shutdown": {"ok": not self.stopping, "detail": "shutting down" if self.stopping else "running"},
        }

    def is_ready(self) -> bool:
        return all(check["ok"] for check in self.checks().values())


def ops_routes(metrics: Metrics, readiness: Readiness) -> web.Application:
    """The aiohttp application: ``/metrics``, ``/health`` (the loop answers) and ``/ready`` (JSON checks)."""

    async def metrics_handler(request: web.Request) -> web.Response:
        metrics.ready.set(1 if readiness.is_ready() else 0)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        checks = readiness.checks()
        ok = all(c["ok"] for c in checks.values())
        metrics.ready.set(1 if ok else 0)
        failing = [name for name, c in checks.items() if not c["ok"]]
        body = {"status": "ready" if ok else "not ready", "failing": failing, "checks": checks}
        return web.json_response(body, status=200 if ok else 503)

    application = web.Application()
    application.router.add_get("/metrics", metrics_handler)
    application.router.add_get("/health", health)
    application.router.add_get("/ready", ready)
    return application


def listening_socket(host: str, port: int, *, setting: str = "STREAMER_METRICS_PORT") -> socket.socket:
    """A socket already listening on ``host:port``, or ``ConfigError`` with one line saying which setting to change.

    Bound at start-up, before Kafka or the model: a second process on the same port used to run on
    without ``/metrics``, ``/health`` and ``/ready`` (a worker) or crash with a traceback (the bridge).
    Listening at once matters: on Linux two sockets with ``SO_REUSEADDR`` may both bind a port that
    neither listens on yet.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart must not wait for TIME_WAIT
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, setting, exc) from None
    sock.setblocking(False)
    return sock


def cannot_listen(host: str, port: int, setting: str, exc: OSError) -> ConfigError:
    """The one-line error of a metrics port that cannot be bound, naming the setting to change."""
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return ConfigError(
        f"cannot serve /metrics on {host}:{port}: {reason} (another streamer process on this host?); "
        f"give each process its own {setting}, or 0 for no server"
    )


class OpsService(Service):  # type: ignore[misc]
    """The worker's operations side, inside its event loop: the HTTP server and the lag poller.

    Args:
        app: the Faust app; its partition signals keep ``readiness.assigned`` and the ticket group's
            assignment current.
        metrics, readiness: what the endpoints serve.
        host, port: where to listen (``STREAMER_METRICS_HOST``, ``STREAMER_METRICS_PORT``; port 0: no server).
        sock: a socket already listening (``listening_socket``), used instead of binding ``host:port`` here.
        probes: one lag probe per consumer group to measure (default: none, and so no lag metrics or
            broker check).
        app_group: the Faust app's consumer group (default: the app's id, which Faust uses as its group).
        lag_interval_s: seconds between lag measurements (default 5).
        request_timeout_s: limit on one measurement of one group (default 15).
    """

    #: mode's own lifecycle lines ("Starting...") go where Faust's and mode's go (warnings only by default).
    logger = logging.getLogger("mode.streamer.ops")

    def __init__(
        self,
        *,
        app: Any,
        metrics: Metrics,
        readiness: Readiness,
        host: str,
        port: int,
        probes: Sequence[LagProbe] = (),
        app_group: str | None = None,
        lag_interval_s: float = LAG_INTERVAL_S,
        request_timeout_s: float = 15.0,
        sock: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sock = sock
        self.metrics = metrics
        self.readiness = readiness
        self.host = host
        self.port = port
        self.probes = list(probes)
        self.app_group = app_group if app_group is not None else str(getattr(getattr(app, "conf", None), "id", ""))
        self.lag_interval_s = lag_interval_s
        self.request_timeout_s = request_timeout_s
        #: Partitions this worker owns, per consumer group.
        self.owned: dict[str, set[tuple[str, int]]] = {}
        self._runner: web.AppRunner | None = None
        self._failing: set[str] = set()
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    def set_assignment(self, group: str, path: Path, partitions: Iterable[tuple[str, int]]) -> None:
        """The partitions this worker owns now in ``group`` (whose lag is measured from then on)."""
        owned = self.owned[group] = set(partitions)
        self.metrics.set_assignment(group, path, owned)

    async def _on_assigned(self, sender: Any, assigned: Iterable[Any], **kwargs: Any) -> None:
        self.readiness.assigned = {(tp.topic, tp.partition) for tp in assigned}
        self.set_assignment(self.app_group, "tickets", self.readiness.assigned)
        log.info(
            "partitions assigned",
            group=self.app_group,
            partitions=[f"{t}:{p}" for t, p in sorted(self.readiness.assigned)],
        )

    async def _on_revoked(self, sender: Any, revoked: Iterable[Any], **kwargs: Any) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self.readiness.assigned -= gone
        self.set_assignment(self.app_group, "tickets", self.readiness.assigned)
        if gone:
            log.info("partitions revoked", group=self.app_group, partitions=[f"{t}:{p}" for t, p in sorted(gone)])

    async def on_start(self) -> None:
        if self.sock is not None or self.port:
            runner = web.AppRunner(ops_routes(self.metrics, self.readiness), access_log=None)
            await runner.setup()
            try:
                site = (
                    web.SockSite(runner, self.sock)
                    if self.sock is not None
                    else web.TCPSite(runner, self.host, self.port)
                )
                await site.start()
            except OSError as exc:
                # Only without a socket bound up front (``build_worker`` called in-process): ``streamer
                # worker`` binds before it starts and stops with one line; here triage goes on without.
                await runner.cleanup()
                log.error(
                    "metrics server cannot listen; running without /metrics, /health and /ready",
                    host=self.host,
                    port=self.port,
                    error=str(exc),
                )
            else:
                self._runner = runner
                log.info("metrics server listening", host=self.host, port=self.port)
        if self.probes:
            self.add_future(self._poll_lag())

    async def measure_lag(self) -> None:
        """One lag measurement of every group; any group's answer counts as broker contact."""
        answered = await asyncio.gather(*(self._measure(probe) for probe in self.probes))
        if any(answered):
            self.readiness.broker_seen()

    async def _measure(self, probe: LagProbe) -> bool:
        """One group's lag; a failure is logged once (until the next success) and retried next time."""
        group = probe.group
        try:
            lags = await asyncio.wait_for(probe.lag(self.owned.get(group, set())), self.request_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if group not in self._failing:
                log.warning("broker round trip for consumer lag failed", group=group, error=repr(exc))
            self._failing.add(group)
            await probe.close()
            return False
        if group in self._failing:
            log.info("broker round trip for consumer lag works again", group=group)
            self._failing.discard(group)
        owned = self.owned.get(group, set())
        for (topic, partition), lag in lags.items():
            if (topic, partition) in owned:  # not revoked while the answer was on its way
                self.metrics.set_lag(group, topic, partition, lag)
        return True

    async def _poll_lag(self) -> None:
        while not self.should_stop:
            await self.measure_lag()
            await self.sleep(self.lag_interval_s)

    async def on_stop(self) -> None:
        self.readiness.stopping = True
        for probe in self.probes:
            await probe.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
