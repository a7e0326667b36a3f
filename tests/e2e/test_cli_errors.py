"""Errors meant for people, from the commands as processes: one line ``streamer: error: ...`` and exit 2."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.processes import free_port, run_streamer


def test_worker_with_kafka_unreachable_prints_one_line_and_exits_2(test_bundle: Path) -> None:
    """Both paths (the default): the log consumer used to fail first, with a traceback and exit 1."""
    port = free_port()  # nothing listens there
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


@pytest.mark.parametrize(
    "command",
    [
        ("produce", "tickets", "--demo", "5"),
        ("replay", "--all", "--dry-run"),
        ("replay", "--topic", "ops.logs.v1", "--all", "--dry-run"),
        ("dlq", "resend", "--code", "invalid_json"),
    ],
)
def test_commands_with_kafka_unreachable_print_one_line_with_the_reason(
    command: tuple[str, ...], test_bundle: Path
) -> None:
    """The clients' own bootstrap failure used to come first, logged by aiokafka, then a generic error."""
    port = free_port()
    env = {"STREAMER_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "STREAMER_BUNDLE_DIR": str(test_bundle)}
    done = run_streamer(*command, env={**env, "STREAMER_PSEUDONYM_KEY": "k", "STREAMER_LOG_FORMAT": "json"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"streamer: error: cannot reach Kafka at 127.0.0.1:{port} (PLAINTEXT): connection refused"
    ], done.stderr[-3000:]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (here: this one) already serves on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("command", "setting"),
    [(("worker", "--only", "tickets"), "STREAMER_METRICS_PORT"), (("bridge",), "STREAMER_BRIDGE_METRICS_PORT")],
)
def test_a_metrics_port_in_use_is_one_line_and_exit_2(
    command: tuple[str, ...], setting: str, taken_port: int, kafka_bootstrap: str, test_bundle: Path
) -> None:
    """A second worker used to run on without /metrics, /health and /ready; the bridge crashed with a traceback."""
    env = {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMER_BUNDLE_DIR": str(test_bundle),
        "STREAMER_METRICS_HOST": "127.0.0.1",
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_BRIDGE_METRICS_PORT": "0",
        setting: str(taken_port),
        "STREAMER_LOG_FORMAT": "json",
    }
    try:
        done = run_streamer(*command, env=env, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after 60 s with port {taken_port} taken") from exc
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"streamer: error: cannot serve /metrics on 127.0.0.1:{taken_port}: address already in use (another "
        f"streamer process on this host?); give each process its own {setting}, or 0 for no server"
    ], done.stderr[-3000:]
