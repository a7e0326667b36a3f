"""The prompt template: loaded and checked at start-up, filled from an escalation, and the last privacy
check before anything leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamer.bridge.prompt import (
    DEFAULT_PRIORITIES,
    LabelSet,
    default_prompt_path,
    load_prompt,
    render,
    unredacted_pii,
)
from streamer.errors import ConfigError

LABELS = LabelSet(heads={"intent": ("refund_request", "card_arrival"), "incident": ("database", "network")})


def escalation(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "TCK-1",
        "kind": "ticket",
        "reasons": [{"code": "low_confidence", "detail": "intent refund_request confidence 0.41 < 0.55"}],
        "redacted_text": "I was charged twice, refund to [CARD_1] please. Write to [EMAIL_1].",
        "redacted_subject": "Double charge",
        "candidates": [{"label": "refund_request", "confidence": 0.41}, {"label": "chargeback", "confidence": 0.3}],
    }
    doc.update(fields)
    return doc


def test_shipped_template_loads_and_renders() -> None:
    template = load_prompt()
    assert template.version == "escalation-v1"
    prompt = render(template, escalation(), LABELS)
    system, user = prompt.messages
    assert system["role"] == "system" and user["role"] == "user"
    assert "customer support ticket" in system["content"]
    assert "refund_request, card_arrival, chargeback" in system["content"]  # bundle labels + a new candidate
    assert ", ".join(DEFAULT_PRIORITIES) in system["content"]
    assert "- refund_request: 0.41" in user["content"]
    assert "- low_confidence: intent refund_request confidence 0.41 < 0.55" in user["content"]
    assert "Subject: Double charge" in user["content"]
    assert "refund to [CARD_1] please" in user["content"]
    assert prompt.labels == ("refund_request", "card_arrival", "chargeback")
    assert prompt.version == "escalation-v1"
    assert unredacted_pii(escalation(), prompt) == []  # placeholders are not personal data


def test_log_escalations_use_their_head() -> None:
    prompt = render(load_prompt(), escalation(kind="log", candidates=[]), LABELS)
    assert "log excerpt" in prompt.messages[0]["content"]
    assert prompt.labels == ("database", "network")


def test_labels_from_a_bundle_manifest() -> None:
    labels = LabelSet.from_manifest(
        {"heads": {"intent": {"labels": ["a", "b"]}, "priority": {"labels": ["p1", "p2"]}, "sentiment": {}}}
    )
    assert labels.heads["intent"] == ("a", "b")
    assert labels.priorities == ("p1", "p2")
    assert LabelSet.from_manifest({"heads": {}}).priorities == DEFAULT_PRIORITIES
    with pytest.raises(ConfigError, match="label set from the bundle"):
        LabelSet.from_bundle(Path("/nonexistent/bundle"))


@pytest.mark.parametrize(
    ("field", "value", "kinds"),
    [
        ("redacted_text", "refund to jane.doe@example.org please", ("EMAIL",)),
        ("redacted_subject", "call me on +44 7700 900123", ("PHONE",)),
        ("redacted_text", "card 4111 1111 1111 1111 and IBAN GB82 WEST 1234 5698 7654 32", ("CARD", "IBAN")),
    ],
)
def test_unredacted_pii_is_found_and_named(field: str, value: str, kinds: tuple[str, ...]) -> None:
    doc = escalation(**{field: value})
    findings = unredacted_pii(doc, render(load_prompt(), doc, LABELS))
    assert [(f.field, f.kinds) for f in findings] == [(field, kinds)]


def test_pii_in_other_fields_that_reach_the_prompt() -> None:
    doc = escalation(reasons=[{"code": "vip_customer", "detail": "customer bob@example.com"}])
    findings = unredacted_pii(doc, render(load_prompt(), doc, LABELS))
    assert [f.field for f in findings] == ["reasons[0].detail"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prompt.yaml"
    path.write_text(text, encoding="utf-8")
    return path


VALID = """\
version: t1
kinds: {ticket: {what: ticket, head: intent}}
system: "Labels: $labels"
user: "$text"
"""


def test_template_checks(tmp_path: Path) -> None:
    assert load_prompt(write(tmp_path, VALID)).version == "t1"
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_prompt(write(tmp_path, VALID.replace("$text", "$txet")))
    with pytest.raises(ConfigError, match="missing user"):
        load_prompt(write(tmp_path, VALID.replace('user: "$text"', "")))
    with pytest.raises(ConfigError, match=r"kinds\.ticket needs"):
        load_prompt(write(tmp_path, VALID.replace("head: intent", "")))
    with pytest.raises(ConfigError, match="looks like personal data"):
        load_prompt(write(tmp_path, VALID.replace("Labels:", "Mail ops@example.com. Labels:")))
    with pytest.raises(ConfigError, match="invalid placeholder"):
        load_prompt(write(tmp_path, VALID.replace("$text", "$ 5")))
    with pytest.raises(ConfigError, match="not found"):
        load_prompt(tmp_path / "missing.yaml")
    assert default_prompt_path().is_file()
