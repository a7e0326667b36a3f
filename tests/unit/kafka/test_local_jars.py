"""The local broker's jar cache and Kafka's CLI tools: no Maven, no JVM, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.kafka import local
from streamer.kafka.local import jars


def test_ensure_jars_reports_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(jars.shutil, "which", lambda name: None)
    with pytest.raises(local.LocalKafkaError, match=r"^java not found on PATH: install a JDK 17\+"):
        local.ensure_jars()
    monkeypatch.setattr(jars.shutil, "which", lambda name: "/usr/bin/java" if name == "java" else None)
    with pytest.raises(local.LocalKafkaError, match=r"^mvn not found on PATH"):
        local.ensure_jars()


def test_ensure_jars_uses_existing_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "home" / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{local.kafka_version()}.jar").write_bytes(b"")
    monkeypatch.setenv("STREAMER_KAFKA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(jars.shutil, "which", lambda name: None)  # would fail if maven were needed
    assert local.ensure_jars() == libs


def test_console_tool_cmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jars, "find_java", lambda: "/jdk/bin/java")
    monkeypatch.setattr(jars, "ensure_jars", lambda version=None: tmp_path / "libs")
    cmd = local.console_tool_cmd("console-producer", ["--topic", "t"])
    assert cmd[0] == "/jdk/bin/java"
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path / 'libs'}/*"
    assert cmd[-3:] == ["org.apache.kafka.tools.ConsoleProducer", "--topic", "t"]
    consumer = local.console_tool_cmd("console-consumer", [])
    assert consumer[-1] == "org.apache.kafka.tools.consumer.ConsoleConsumer"
    assert local.console_tool_cmd("org.example.Tool", ["-x"])[-2:] == ["org.example.Tool", "-x"]
    with pytest.raises(local.LocalKafkaError, match="unknown Kafka tool"):
        local.console_tool_cmd("nope", [])


def test_jars_and_weights_share_one_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamer.models.sources import weights_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("STREAMER_KAFKA_HOME", raising=False)
    assert local.kafka_home("4.1.0") == tmp_path / "streamer" / "kafka" / "4.1.0"
    assert weights_cache() == tmp_path / "streamer" / "weights"
