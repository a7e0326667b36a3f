"""Settings: environment parsing, secrets kept secret, and the README table in step with the code."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streamer.errors import ConfigError
from streamer.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_env_prefix_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", "a:1, b:2")
    monkeypatch.setenv("STREAMER_SUPPORTED_LANGUAGES", "en, DE")
    monkeypatch.setenv("STREAMER_MAX_BATCH", "128")
    s = load_settings()
    assert s.bootstrap_servers == ["a:1", "b:2"]
    assert s.supported_languages == ("en", "de")
    assert s.max_batch == 128


def test_bad_values_become_one_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_MAX_BATCH", "lots")
    with pytest.raises(ConfigError, match="STREAMER_MAX_BATCH"):
        load_settings()


def test_sasl_needs_credentials_and_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="needs STREAMER_KAFKA_SASL_USERNAME"):
        load_settings()
    monkeypatch.setenv("STREAMER_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("STREAMER_KAFKA_SASL_PASSWORD", "hunter2-secret")
    s = load_settings()
    assert "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(s)
    assert s.kafka_sasl_password is not None and s.kafka_sasl_password.get_secret_value() == "hunter2-secret"


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [
        f"STREAMER_{name.upper()}" for name in Settings.model_fields if f"`STREAMER_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_topic_prefix() -> None:
    assert Settings(topic_prefix="staging.").topic("support.tickets.v1") == "staging.support.tickets.v1"


def test_static_membership_and_session_timeout_reach_both_consumers(monkeypatch: pytest.MonkeyPatch) -> None:
    """STREAMER_GROUP_INSTANCE_ID and the session timeout, in Faust's consumer and the log path's."""
    from streamer.app import create_app
    from streamer.kafka.templates import log_consumer

    for name in ("BROKER_SESSION_TIMEOUT", "BROKER_HEARTBEAT_INTERVAL", "CONSUMER_GROUP_INSTANCE_ID"):
        monkeypatch.delenv(name, raising=False)  # Faust's own variables would win
    monkeypatch.setenv("STREAMER_GROUP_INSTANCE_ID", "worker-0")
    monkeypatch.setenv("STREAMER_KAFKA_SESSION_TIMEOUT_MS", "20000")
    settings = load_settings()
    conf = create_app(settings).conf
    assert conf.consumer_group_instance_id == "worker-0"
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval) == (20.0, 3.0)
    assert conf.broker_request_timeout >= conf.broker_session_timeout

    async def make() -> Any:
        return log_consumer(settings)  # aiokafka wants a running loop; it connects only on start()

    consumer = asyncio.run(make())
    coordinator_options = (consumer._group_instance_id, consumer._session_timeout_ms, consumer._heartbeat_interval_ms)
    assert coordinator_options == ("worker-0", 20000, 3000)
    assert Settings(kafka_session_timeout_ms=6000).heartbeat_interval_ms == 2000
    monkeypatch.setenv("STREAMER_KAFKA_SESSION_TIMEOUT_MS", "1000")
    with pytest.raises(ConfigError, match="STREAMER_KAFKA_SESSION_TIMEOUT_MS"):
        load_settings()


def test_topic_replication_settings_shape_what_topics_apply_creates() -> None:
    from streamer.kafka.admin import deployed_spec
    from streamer.topics import load_catalog

    spec = load_catalog(REPO / "topics" / "topics.yaml")["support.tickets.v1"]
    plain = deployed_spec(Settings(topic_prefix="p."), spec)
    assert (plain.name, plain.replication_factor, dict(plain.config)) == (
        "p.support.tickets.v1",
        spec.replication_factor,
        dict(spec.config),
    )
    replicated = deployed_spec(Settings(topic_replication_factor=3, topic_min_insync_replicas=2), spec)
    assert replicated.replication_factor == 3 and replicated.config["min.insync.replicas"] == "2"
    assert replicated.config["retention.ms"] == spec.config["retention.ms"]
    with pytest.raises(ConfigError, match="exceeds"):
        load_settings(topic_replication_factor=1, topic_min_insync_replicas=2)
