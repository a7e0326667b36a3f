"""The privacy policy: the shipped file, refused files, pseudonyms, rendering per topic, dead letters,
the large model's answers and filling placeholders back."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.errors import ConfigError
from streamer.events import DecodeFailure, RawEvent, Source, dead_letter
from streamer.privacy import (
    NEVER_CLEAR,
    Privacy,
    PrivacyPolicy,
    Pseudonymiser,
    fill_placeholders,
    load_policy,
    parse_policy,
    redact_fields,
)
from streamer.topics import SchemaRegistry, load_catalog
from streamer.triage.pii import redact_all

REPO = Path(__file__).resolve().parents[2]
TOPICS = REPO / "topics"
CATALOG = load_catalog(TOPICS / "topics.yaml")
SHIPPED = load_policy(TOPICS / "topics.yaml", CATALOG.topics)


def test_shipped_policy_is_safe_by_default() -> None:
    table = dict(SHIPPED.table(list(CATALOG.topics)))
    for topic, actions in table.items():
        for kind in NEVER_CLEAR:
            assert actions[kind] != "keep", (topic, kind)
    for topic in ("llm.escalations.v1", "llm.responses.v1", "ops.alerts.v1", "ops.log_templates.v1"):
        assert set(table[topic].values()) == {"mask"}, topic
    # contact details in clear only where a queue declares it; the shared enriched topic pseudonymises
    assert table["support.tickets.enriched.v1"]["EMAIL"] == "pseudonymise"
    assert table["support.queue.billing.v1"]["EMAIL"] == "keep"
    assert table["support.queue.engineering.v1"]["EMAIL"] == "pseudonymise"
    assert table["ops.logs.enriched.v1"]["IP"] == "pseudonymise"
    assert SHIPPED.deadletter_raw == "keep"
    # a topic nobody listed masks everything; a replay topic follows the topic it replays
    assert PrivacyPolicy().for_topic("support.queue.billing.v1").actions == {}
    enriched = SHIPPED.for_topic("support.tickets.enriched.v1")
    assert SHIPPED.for_topic("support.tickets.v1.replay.20261128-r1") == enriched  # replay writes enriched records
    assert SHIPPED.for_topic("support.tickets.enriched.v1.replay.r1") == enriched


@pytest.mark.parametrize(
    ("section", "rule"),
    [
        ({"topics": {"support.queue.nowhere.v1": {"keep": ["EMAIL"]}}}, "known-topic"),
        ({"topics": {"support.queue.billing.v1": {"keep": ["PASSPORT"]}}}, "known-kind"),
        ({"topics": {"llm.escalations.v1": {"keep": ["EMAIL"]}}}, "llm-masked"),
        ({"topics": {"llm.escalations.v1": {"pseudonymise": ["PHONE"]}}}, "llm-masked"),
        ({"topics": {"llm.responses.v1": {"keep": ["IP"]}}}, "llm-masked"),
        ({"topics": {"support.queue.billing.v1": {"keep": ["CARD"]}}}, "never-clear"),
        ({"topics": {"support.tickets.enriched.v1": {"keep": ["NATIONAL_ID"]}}}, "never-clear"),
        ({"topics": {"ops.alerts.v1": {"pseudonymise": ["IP"]}}}, "per-record"),
        ({"topics": {"support.tickets.v1": {"keep": ["EMAIL"]}}}, "output-topic"),
        ({"topics": {"support.queue.billing.v1": {"retain": ["EMAIL"]}}}, "known-action"),
        ({"topics": {"support.queue.billing.v1": {"keep": ["EMAIL"], "pseudonymise": ["EMAIL"]}}}, "one-action"),
        ({"deadletter": {"raw": "encrypt"}}, "deadletter-raw"),
    ],
)
def test_bad_policies_are_refused_naming_the_rule(section: dict[str, Any], rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(section, CATALOG.topics)
    message = str(err.value)
    assert f"rule {rule!r}" in message and "\n" not in message


def bad_topics_dir(tmp_path: Path, section: dict[str, Any]) -> Path:
    topics = tmp_path / "topics"
    topics.mkdir()
    doc = yaml.safe_load((TOPICS / "topics.yaml").read_text())
    doc["privacy"] = section
    (topics / "topics.yaml").write_text(yaml.safe_dump(doc))
    (topics / "routes.yaml").write_text((TOPICS / "routes.yaml").read_text())
    (topics / "schemas").symlink_to(TOPICS / "schemas")
    return topics


@pytest.mark.parametrize("command", [["worker"], ["worker", "--only", "logs"], ["triage", "tickets"]])
def test_a_bad_policy_stops_the_programs_at_start_up(tmp_path: Path, command: list[str]) -> None:
    topics = bad_topics_dir(tmp_path, {"topics": {"llm.escalations.v1": {"keep": ["EMAIL"]}}})
    args = [*command, "--file", str(tmp_path / "none.jsonl")] if command[0] == "triage" else command
    (tmp_path / "none.jsonl").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "STREAMER_TOPICS_DIR": str(topics),
            "STREAMER_BUNDLE_DIR": str(tmp_path / "no-bundle"),  # the policy is checked before the bundle
            "STREAMER_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "STREAMER_METRICS_PORT": "0",
        },
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamer: error: ") and "rule 'llm-masked'" in lines[0]


def test_the_same_value_gets_the_same_pseudonym_and_another_secret_another() -> None:
    first, second = Pseudonymiser(b"secret-one", 1), Pseudonymiser(b"secret-two", 1)
    a = first.token("EMAIL", "Jane.Doe@Example.com")
    assert a == first.token("EMAIL", "jane.doe@example.com")  # one address, two spellings
    assert a == Pseudonymiser(b"secret-one", 1).token("EMAIL", "jane.doe@example.com")  # another process
    assert a != first.token("EMAIL", "john.doe@example.com")
    assert a != second.token("EMAIL", "jane.doe@example.com")
    assert first.token("CARD", "4111 1111 1111 1111") == first.token("CARD", "4111-1111-1111-1111")
    assert a.startswith("[EMAIL_k1_") and len(a) == len("[EMAIL_k1_]") + 16
    rotated = Pseudonymiser(b"secret-two", 2).token("EMAIL", "jane.doe@example.com")
    assert rotated.startswith("[EMAIL_k2_")
    # a token is not personal data to the redactor
    assert redact_all([f"see {a} and {rotated}"])[0].spans == []


def ticket_record(body: str) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    [red] = redact_all([body])
    values = {t: (s.kind, s.value) for s, t in zip(red.spans, red.placeholders, strict=True)}
    record = {"ticket": {"body": red.text}, "triage": {"pii": {"counts": dict(red.counts)}, "entities": {}}}
    return record, values


def test_each_topic_gets_what_its_policy_allows() -> None:
    body = "Card 4111 1111 1111 1111, mail jane@example.com, call +44 7700 900123, SSN 123-45-6789."
    record, values = ticket_record(body)
    privacy = Privacy(SHIPPED, Pseudonymiser(b"k", 1))
    from streamer.events import Output

    topics = [
        "support.tickets.enriched.v1",
        "support.queue.billing.v1",
        "support.queue.orders.v1",
        "llm.escalations.v1",
    ]
    outs = privacy.ticket_outputs([Output(t, b"k", record) for t in topics], values)
    text = {o.topic: o.value["ticket"]["body"] for o in outs}
    card_token = Pseudonymiser(b"k", 1).token("CARD", "4111111111111111")
    email_token = Pseudonymiser(b"k", 1).token("EMAIL", "jane@example.com")
    assert text["support.tickets.enriched.v1"] == (
        f"Card {card_token}, mail {email_token}, call {Pseudonymiser(b'k', 1).token('PHONE', '+447700900123')}, "
        "SSN [NATIONAL_ID_1]."
    )
    assert text["support.queue.billing.v1"] == (
        f"Card {card_token}, mail jane@example.com, call +44 7700 900123, SSN [NATIONAL_ID_1]."
    )
    assert (
        text["support.queue.orders.v1"]
        == "Card [CARD_1], mail jane@example.com, call +44 7700 900123, SSN [NATIONAL_ID_1]."
    )
    assert text["llm.escalations.v1"] == record["ticket"]["body"]
    billing = next(o for o in outs if o.topic == "support.queue.billing.v1")
    assert billing.value["triage"]["pii"]["values"] == [
        {"kind": "CARD", "pseudonym": card_token},
        {"kind": "EMAIL", "value": "jane@example.com"},
        {"kind": "PHONE", "value": "+44 7700 900123"},
    ]
    escalated = next(o for o in outs if o.topic == "llm.escalations.v1")
    assert escalated.value is record and "values" not in record["triage"]["pii"]  # the input is never modified


def test_without_a_secret_pseudonyms_become_masks() -> None:
    record, values = ticket_record("mail jane@example.com")
    rendered, listed = Privacy(SHIPPED, None).render("support.tickets.enriched.v1", record, values)
    assert rendered is record and listed == []
    kept, listed = Privacy(SHIPPED, None).render("support.queue.billing.v1", record, values)
    assert kept["ticket"]["body"] == "mail jane@example.com" and listed == [
        {"kind": "EMAIL", "value": "jane@example.com"}
    ]


def test_log_records_list_pseudonymised_values() -> None:
    [red] = redact_all(["login from 10.0.4.17 by bob@example.com"])
    values = {t: (s.kind, s.value) for s, t in zip(red.spans, red.placeholders, strict=True)}
    record = {"message": red.text, "entities": {"ips": ["[IP_1]"], "pii": red.counts}}
    pseudo = Pseudonymiser(b"k", 3)
    out = Privacy(SHIPPED, pseudo).log_record(record, values)
    ip = pseudo.token("IP", "10.0.4.17")
    assert out["entities"]["ips"] == [ip]
    assert out["message"] == f"login from {ip} by {pseudo.token('EMAIL', 'bob@example.com')}"
    assert {"kind": "IP", "pseudonym": ip} in out["entities"]["pii_values"]


def failure(value: bytes) -> DecodeFailure:
    raw = RawEvent(value=value, source=Source("support.tickets.v1", 0, 7), key=b"T-1")
    return DecodeFailure(raw, "schema", "customer.id: 'jane@example.com' is not of type 'object'", field="customer")


def test_dead_letters_keep_raw_bytes_or_only_a_digest() -> None:
    value = b'{"id": "T-1", "body": "mail jane@example.com", "customer": "jane@example.com"}'
    registry = SchemaRegistry(TOPICS / "schemas")
    kept = Privacy(SHIPPED).dead_letter(failure(value), "2026-11-28T09:00:00.000Z")
    assert kept == dead_letter(failure(value), "2026-11-28T09:00:00.000Z")
    assert kept["raw"]["value"] == value.decode()
    digest = Privacy(PrivacyPolicy(deadletter_raw="digest")).dead_letter(failure(value), "2026-11-28T09:00:00.000Z")
    assert digest["raw"] == {
        "encoding": "digest",
        "value": "",
        "sha256": hashlib.sha256(value).hexdigest(),
        "size": len(value),
        "cut": False,
        "key": "T-1",
    }
    assert "jane@example.com" not in str(digest) and "[EMAIL_1]" in digest["error"]["message"]
    for record in (kept, digest):
        assert registry.errors("deadletter.v1.json", record) == []


def test_invented_values_in_an_answer_are_numbered_after_the_escalation() -> None:
    context = ["Card [CARD_1]", "I'm [EMAIL_1], also [EMAIL_2]"]
    summary, reply = redact_fields(
        ["Customer [EMAIL_1] disputes a charge", "Hi, we wrote to [EMAIL_1] and to support@example.com."], context
    )
    assert summary == "Customer [EMAIL_1] disputes a charge"
    assert reply == "Hi, we wrote to [EMAIL_1] and to [EMAIL_3]."


def test_a_consumer_with_the_original_ticket_fills_the_reply_back() -> None:
    subject = "Refund to card 4111 1111 1111 1111"
    body = "Please refund, I'm mark.o'brien@example.com; my wife uses ANNA@example.com."
    redacted_subject, redacted_body = (r.text for r in redact_all([subject, body]))
    assert "[CARD_1]" in redacted_subject and "[EMAIL_2]" in redacted_body
    reply = "We refunded [CARD_1] and wrote to [EMAIL_1] and [EMAIL_2]; [EMAIL_9] is not theirs."
    assert fill_placeholders(reply, [subject, body]) == (
        "We refunded 4111 1111 1111 1111 and wrote to mark.o'brien@example.com and ANNA@example.com; "
        "[EMAIL_9] is not theirs."
    )


def test_readme_table_is_the_shipped_policy() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Privacy", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| topic |"))
    kinds = [cell.strip() for cell in header.strip("|").split("|")][1:]
    words = {"clear": "keep", "pseudonym": "pseudonymise", "mask": "mask"}
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[cells[0].strip("`")] = {kind: words[cell] for kind, cell in zip(kinds, cells[1:], strict=True)}
    outputs = [t for t in CATALOG.topics if t not in ("support.tickets.v1", "ops.logs.v1", "streamer.deadletter.v1")]
    assert table == {t: {k: SHIPPED.for_topic(t).action(k) for k in kinds} for t in outputs}
