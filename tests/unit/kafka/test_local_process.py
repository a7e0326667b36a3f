"""Start, stop and status of the local broker where no broker and no JVM are needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.kafka import local
from streamer.kafka.local import jars


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("content", ["dead", "self", "garbage"])
def test_stale_pid_file_is_removed(tmp_path: Path, content: str) -> None:
    pid_text = {"dead": str(_dead_pid()), "self": str(os.getpid()), "garbage": "x1"}[content]
    pid_file = tmp_path / local.PID_FILE
    pid_file.write_text(pid_text + "\n")
    # "self" is alive but is not kafka.Kafka on this data dir: PID reuse must not fool us.
    assert local.status(tmp_path) is None
    assert not pid_file.exists()
    pid_file.write_text(pid_text + "\n")
    assert local.stop(tmp_path) is False
    assert not pid_file.exists()


def test_stop_and_status_without_broker(tmp_path: Path) -> None:
    assert local.stop(tmp_path / "missing") is False
    assert local.status(tmp_path) is None
    assert local.main(["status", "--data-dir", str(tmp_path)]) == 3
    assert local.main(["stop", "--data-dir", str(tmp_path)]) == 0


def test_start_refuses_busy_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jars, "find_java", lambda: "java")
    monkeypatch.setattr(jars, "ensure_jars", lambda version=None: tmp_path / "libs")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = int(srv.getsockname()[1])
        if port >= 65534:
            pytest.skip("ephemeral port at the top of the range")
        with pytest.raises(local.LocalKafkaError, match="already in use"):
            local.start(port, tmp_path / "k")
    assert not (tmp_path / "k" / local.PID_FILE).exists()


def test_streamer_kafka_status_bootstrap_prints_only_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.cli import main

    monkeypatch.setenv("STREAMER_LOCAL_KAFKA_DIR", str(tmp_path / "none"))
    assert main(["kafka", "status", "--bootstrap"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and "kafka not running" in err  # nothing a shell would take for an address
    assert main(["kafka", "start", "--bootstrap"]) == 2
    assert capsys.readouterr().err.startswith("streamer: error: --bootstrap goes with status")
