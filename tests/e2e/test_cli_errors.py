"""Errors meant for people, from the commands as processes: one line ``streamer: error: ...`` and exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_streamer(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_worker_with_kafka_unreachable_prints_one_line_and_exits_2(test_bundle: Path) -> None:
    """Both paths (the default): the log consumer used to fail first, with a traceback and exit 1."""
    port = closed_port()
    done = run_streamer(
        "worker",
        env={
            "STREAMER_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "STREAMER_BUNDLE_DIR": str(test_bundle),
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_LOG_FORMAT": "json",
        },
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"streamer: error: cannot reach Kafka at 127.0.0.1:{port} (PLAINTEXT): connection refused"
    ], done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
