"""The committed AsyncAPI document: generated from the catalogue, valid for the AsyncAPI parser, and
describing the headers the code actually writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from test_decode_properties import PROCESSOR

from streamer.asyncapi import asyncapi_document, render
from streamer.cli import main
from streamer.events import RawEvent, Source
from streamer.headers import event_type, header_map
from streamer.settings import Settings
from streamer.topics import LOG_TEMPLATES, TICKETS, SchemaRegistry, load_catalog

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "topics" / "asyncapi.yaml"
TOOLS = REPO / "tools" / "asyncapi"
CATALOG = load_catalog(REPO / "topics" / "topics.yaml")
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
DEFAULTS = Settings.model_construct()


def generated() -> str:
    doc = asyncapi_document(CATALOG, REGISTRY, group_id=DEFAULTS.group_id, bridge_group_id=DEFAULTS.bridge_group_id)
    return render(doc)


def test_committed_document_is_what_the_catalogue_generates() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == generated(), (
        "topics/asyncapi.yaml drifted from topics.yaml/schemas: "
        "run `streamer topics asyncapi --out topics/asyncapi.yaml`"
    )


def test_check_flag_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "asyncapi.yaml"
    assert main(["topics", "asyncapi", "--out", str(out)]) == 0
    assert main(["topics", "asyncapi", "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("retention.ms: 604800000", "retention.ms: 1", 1))
    assert main(["topics", "asyncapi", "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_every_topic_is_a_channel_with_its_kafka_settings_and_schema() -> None:
    doc = yaml.safe_load(COMMITTED.read_text())
    assert doc["asyncapi"].startswith("3.")
    assert set(doc["channels"]) == set(CATALOG.topics)
    for name, spec in CATALOG.topics.items():
        channel = doc["channels"][name]
        binding = channel["bindings"]["kafka"]
        assert channel["address"] == name and binding["partitions"] == spec.partitions
        assert binding["topicConfiguration"]["retention.ms"] == int(spec.config["retention.ms"])
        assert binding["topicConfiguration"]["cleanup.policy"] == [spec.config["cleanup.policy"]]
        [message_id] = channel["messages"]
        message = doc["components"]["messages"][message_id]
        assert message["payload"] == {"$ref": f"#/components/schemas/{spec.schema.removesuffix('.json')}"}  # type: ignore[union-attr]
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
    assert doc["channels"][LOG_TEMPLATES]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["compact"]
    # no reference leaves the document (the parser must not fetch https://streamer.dev/...)
    assert "https://streamer.dev/schemas/_common" not in COMMITTED.read_text()


def test_operations_say_which_group_reads_what() -> None:
    doc = yaml.safe_load(COMMITTED.read_text())
    groups = {
        (op["channel"]["$ref"].removeprefix("#/channels/"), op["bindings"]["kafka"]["groupId"]["enum"][0])
        for op in doc["operations"].values()
        if op["action"] == "receive" and "bindings" in op
    }
    assert groups == {
        (TICKETS, "streamer-triage"),
        ("ops.logs.v1", "streamer-triage-logs"),
        ("llm.escalations.v1", "streamer-llm-bridge"),
    }
    sent = {
        op["channel"]["$ref"].removeprefix("#/channels/") for op in doc["operations"].values() if op["action"] == "send"
    }
    assert sent == set(CATALOG.topics) - {TICKETS, "ops.logs.v1"}


def test_headers_the_code_writes_match_the_documented_headers() -> None:
    doc: dict[str, Any] = yaml.safe_load(COMMITTED.read_text())
    raws = [
        RawEvent(
            b'{"id": "T-1", "created_at": "2026-11-28T10:00:00Z", "body": "refund please"}', Source(TICKETS, 0, 1)
        ),
        RawEvent(b"not json", Source(TICKETS, 0, 2), b"k"),
    ]
    outputs = PROCESSOR(raws).outputs
    seen = set()
    for out in outputs:
        channel = doc["channels"].get(out.topic)
        if channel is None:  # the processor's own test routes (q.billing): not a declared topic
            continue
        [message_id] = channel["messages"]
        schema = doc["components"]["messages"][message_id]["headers"]
        headers = header_map(out.headers)
        assert list(Draft7Validator(schema).iter_errors(headers)) == [], out.topic
        assert headers["ce_type"] == event_type(CATALOG[out.topic].schema or "")
        seen.add(out.topic)
    assert {"support.tickets.enriched.v1", "streamer.deadletter.v1"} <= seen


def _validator() -> list[str]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the AsyncAPI parser (tools/asyncapi) cannot run")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("the AsyncAPI parser is not installed: run `make asyncapi-tools` (npm ci in tools/asyncapi)")
    return ["node", str(TOOLS / "validate.mjs")]


def test_asyncapi_parser_accepts_the_document() -> None:
    done = subprocess.run([*_validator(), str(COMMITTED)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid AsyncAPI 3." in done.stdout


def test_asyncapi_parser_refuses_a_broken_document(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = COMMITTED.read_text().replace("#/components/schemas/ticket.v1", "#/components/schemas/missing")
    broken.write_text(text.replace("partitions: 6", "partitions: 0", 1))
    done = subprocess.run([*_validator(), str(broken)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "does not exist" in done.stdout and "partitions" in done.stdout
