"""``python -m streamer ...`` as a real process: its environment, working directory, log file, signals.

A test that must kill a worker for real, count what its ``/metrics`` says, or read its logs runs it as a
process. Each process gets a working directory of its own (Faust writes ``var/faust`` there, never into the
checkout) and one log file for stdout and stderr, appended to across restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from .kafka import TOPICS_DIR, Topics

#: The line written to the log file before every start after the first.
START_MARK = "--- start "


def free_port() -> int:
    """A port nothing listens on now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body; connection refused is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text as ``{(name, labels): value}``."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def streamer_env(topics: Topics, **extra: str) -> dict[str, str]:
    """The settings of a streamer process on ``topics`` (bootstrap, prefix, topics dir, JSON logs), plus ``extra``."""
    return {
        "STREAMER_KAFKA_BOOTSTRAP": topics.bootstrap,
        "STREAMER_TOPIC_PREFIX": topics.prefix,
        "STREAMER_TOPICS_DIR": str(TOPICS_DIR),
        "STREAMER_LOG_FORMAT": "json",
        **extra,
    }


class StreamerProcess:
    """``python -m <module> <args>`` with ``env`` on top of this process' environment.

    ``metrics_port``: where its ``/metrics``, ``/health`` and ``/ready`` are served (``None``: not asked).
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        workdir: Path,
        *,
        module: str = "streamer",
        metrics_port: int | None = None,
    ) -> None:
        self.name = name
        self.args = tuple(args)
        self.module = module
        self.workdir = workdir
        (workdir / "var").mkdir(parents=True, exist_ok=True)  # Faust makes var/faust, not its parents
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0
        self.log_path = workdir / f"{name}.log"
        self.peak_rss_kb = 0
        self.metrics_port = metrics_port
        self.base = f"http://127.0.0.1:{metrics_port}" if metrics_port else ""
        self.ready_states: list[tuple[int, dict[str, Any] | None]] = []

    def start(self) -> StreamerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            if self.starts > 1:
                log.write(f"{START_MARK}{self.starts} ---\n".encode())
                log.flush()
            # cwd: Faust's data dir (var/faust) of its own, never the checkout's.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=log,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def sample_rss(self) -> int:
        """Peak resident memory (VmHWM, KiB) of the running process, remembered across samples."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{self.proc.pid}/status").read_text()
                match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
                if match:
                    self.peak_rss_kb = max(self.peak_rss_kb, int(match.group(1)))
        return self.peak_rss_kb

    def kill9(self) -> None:
        assert self.proc is not None
        self.sample_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait (SIGKILL past ``timeout``); the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode or 0
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def timed_terminate(self, timeout: float = 40.0) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took."""
        began = time.monotonic()
        code = self.terminate(timeout)
        return code, time.monotonic() - began

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line it wrote, each parsed as JSON (a line that is not JSON fails the test)."""
        return [
            orjson.loads(raw)
            for raw in self.log_path.read_bytes().splitlines()
            if raw.strip() and not raw.startswith(START_MARK.encode())
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        """JSON log lines whose ``event`` is ``name`` (other lines ignored)."""
        lines = self.log_text().splitlines()
        found = (orjson.loads(line) for line in lines if line.startswith("{"))
        return [e for e in found if e.get("event") == name]

    # ----------------------------------------------------------------------------- ops endpoints

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /ready until 200, remembering every distinct answer on the way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive, f"{self.name} died:\n{self.log_tail()}"
            status, body = http_get(self.base + "/ready")
            doc = json.loads(body) if body else None
            if not self.ready_states or self.ready_states[-1][0] != status:
                self.ready_states.append((status, doc))
            if status == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {timeout} s: {self.ready_states}\n{self.log_tail()}")

    def metrics(self) -> Samples:
        status, body = http_get(self.base + "/metrics")
        assert status == 200, status
        return parse_metrics(body.decode())

    def wait_metric(self, check: Callable[[Samples], bool], timeout: float = 180.0) -> Samples:
        """Poll /metrics until ``check`` holds; fail if the process dies or the time is up."""
        deadline = time.monotonic() + timeout
        samples = self.metrics()
        while not check(samples):
            assert self.alive, f"{self.name} died:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"metrics never matched:\n{self.log_tail()}"
            time.sleep(0.3)
            samples = self.metrics()
        return samples


def wait_until(check: Callable[[], bool], timeout: float, what: str, *, poll_s: float = 0.2) -> None:
    """Poll ``check`` until true; fail naming ``what`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def run_streamer(
    *args: str,
    env: Mapping[str, str],
    timeout: float = 120,
    inherit_env: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m streamer <args>`` run to its end, output captured as text; ``env`` on top of this process'
    environment (or alone, ``inherit_env=False``)."""
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env={**os.environ, **env} if inherit_env else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
