"""``topics apply`` against the real broker: creates what is missing, is idempotent, reports drift."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import pytest

from streamer.cli import main
from streamer.kafka.admin import apply_topics, delete_prefixed_topics, list_topics
from streamer.settings import Settings
from streamer.topics import load_catalog

pytestmark = pytest.mark.kafka


def test_apply_twice_then_detect_drift(kafka_settings: Settings, unique_name) -> None:
    settings = replace_prefix(kafka_settings, unique_name(""))
    catalog = load_catalog(settings.topics_file)
    specs = list(catalog.topics.values())

    first = asyncio.run(apply_topics(settings, specs))
    assert sorted(first.created) == sorted(settings.topic(s.name) for s in specs)
    assert first.drift == []

    second = asyncio.run(apply_topics(settings, specs))
    assert second.created == []
    assert not second.changed
    assert sorted(second.unchanged) == sorted(first.created)

    # Declare more partitions than the cluster has: drift, reported, nothing changed.
    tickets = catalog["support.tickets.v1"]
    drifted = replace(tickets, partitions=tickets.partitions + 2, config={**tickets.config, "retention.ms": "1000"})
    third = asyncio.run(apply_topics(settings, [drifted]))
    found = {(d.what, d.declared, d.actual) for d in third.drift}
    assert ("partitions", str(tickets.partitions + 2), str(tickets.partitions)) in found
    assert ("retention.ms", "1000", tickets.config["retention.ms"]) in found
    assert third.created == []

    states = {s.name: s for s in asyncio.run(list_topics(settings))}
    cluster_tickets = states[settings.topic("support.tickets.v1")]
    assert cluster_tickets.partitions == tickets.partitions
    compacted = states[settings.topic("ops.log_templates.v1")]
    assert compacted.config["cleanup.policy"] == "compact"


def test_cli_apply_is_idempotent(kafka_settings: Settings, unique_name, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", kafka_settings.kafka_bootstrap)
    monkeypatch.setenv("STREAMER_TOPIC_PREFIX", unique_name("cli") + ".")
    assert main(["topics", "apply"]) == 0
    first = capsys.readouterr().out
    assert " 0 drift(s)" in first and not re.search(r"\b0 created", first)
    assert main(["topics", "apply", "--strict"]) == 0
    second = capsys.readouterr().out
    assert re.search(r"\b0 created", second) and " 0 drift(s)" in second


def test_wrong_bootstrap_is_one_line_naming_the_address(monkeypatch, capsys) -> None:
    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["topics", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "127.0.0.1:1" in err and err.startswith("streamer: error: cannot reach Kafka")


def replace_prefix(settings: Settings, prefix: str) -> Settings:
    return settings.model_copy(update={"topic_prefix": prefix})


def test_delete_prefixed_topics_stays_inside_its_prefix(kafka_settings: Settings, unique_name) -> None:
    catalog = load_catalog(kafka_settings.topics_file)
    specs = [catalog["support.tickets.v1"], catalog["streamer.deadletter.v1"]]
    mine = replace_prefix(kafka_settings, unique_name("mine") + ".")
    other = replace_prefix(kafka_settings, unique_name("other") + ".")
    for settings in (mine, other):
        asyncio.run(apply_topics(settings, specs))
    expected = sorted(mine.topic(s.name) for s in specs)
    # The broker lists new topics a moment after creating them (seconds after the other tests' bursts).
    deadline = time.monotonic() + 60
    while not set(expected) <= {s.name for s in asyncio.run(list_topics(kafka_settings))}:
        assert time.monotonic() < deadline, "created topics never listed"
        time.sleep(0.5)
    deleted = asyncio.run(delete_prefixed_topics(mine))
    assert deleted == expected
    remaining = {s.name for s in asyncio.run(list_topics(kafka_settings))}
    assert other.topic("support.tickets.v1") in remaining
    with pytest.raises(ValueError, match="prefix"):
        asyncio.run(delete_prefixed_topics(replace_prefix(kafka_settings, "")))
