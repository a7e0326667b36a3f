"""Routing rules: precedence, continue, negation, defaults, and start-up validation naming the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamer.errors import ConfigError
from streamer.topics import load_catalog
from streamer.triage.routing import load_router, parse_router

REPO = Path(__file__).resolve().parents[3]
TOPICS = ["q.urgent", "q.billing", "q.vip", "q.general", "q.other"]


def router(rules: list[dict], default: str = "q.general"):
    return parse_router({"tickets": {"rules": rules, "default": default}}, "tickets", known_topics=TOPICS)


def test_first_match_wins_in_order() -> None:
    r = router(
        [
            {"name": "billing", "match": {"intent": ["refund_request", "payment_failed"]}, "to": "q.billing"},
            {"name": "refunds-too", "match": {"intent": "refund_request"}, "to": "q.other"},
        ]
    )
    result = r.route({"intent": "refund_request"})
    assert result.destinations == ("q.billing",)
    assert result.rules == ("billing",)


def test_continue_adds_and_keeps_evaluating() -> None:
    r = router(
        [
            {"name": "urgent", "match": {"priority": "urgent"}, "to": "q.urgent", "continue": True},
            {"name": "billing", "match": {"intent": "refund_request"}, "to": "q.billing"},
        ]
    )
    assert r.route({"priority": "urgent", "intent": "refund_request"}).destinations == ("q.urgent", "q.billing")
    # continue rule matched, nothing else decided: the default is added too
    both = r.route({"priority": "urgent", "intent": "bug_report"})
    assert both.destinations == ("q.urgent", "q.general")
    assert both.rules == ("urgent", "default")


def test_all_fields_must_match_and_negation_excludes() -> None:
    r = router(
        [
            {"name": "vip-billing", "match": {"intent": "refund_request", "tier": "vip"}, "to": "q.vip"},
            {"name": "non-english", "match": {"not_language": "en"}, "to": "q.other"},
        ]
    )
    assert r.route({"intent": "refund_request", "tier": "vip", "language": "en"}).destinations == ("q.vip",)
    assert r.route({"intent": "refund_request", "tier": "pro", "language": "en"}).destinations == ("q.general",)
    assert r.route({"intent": "refund_request", "tier": "pro", "language": "de"}).destinations == ("q.other",)


def test_list_valued_facts_match_any_and_booleans() -> None:
    r = router([{"name": "vip", "match": {"reason": "vip_customer", "escalated": True}, "to": "q.vip"}])
    assert r.route({"reason": ["low_confidence", "vip_customer"], "escalated": True}).destinations == ("q.vip",)
    assert r.route({"reason": ["low_confidence"], "escalated": True}).destinations == ("q.general",)


def test_values_are_case_insensitive() -> None:
    r = router([{"name": "vip", "match": {"tier": "VIP"}, "to": "q.vip"}])
    assert r.route({"tier": "vip"}).destinations == ("q.vip",)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"name": "typo", "match": {"intnet": "x"}, "to": "q.billing"}], "rule 'typo': cannot match on 'intnet'"),
        ([{"name": "nowhere", "match": {"intent": "x"}, "to": "q.missing"}], "rule 'nowhere': destination"),
        ([{"name": "no-to", "match": {"intent": "x"}}], "rule 'no-to': 'to' must be"),
        ([{"name": "a", "to": "q.billing"}, {"name": "a", "to": "q.billing"}], "rule 'a': duplicate"),
        ([{"name": "extra", "to": "q.billing", "contine": True}], "rule 'extra': unknown key"),
        ([{"name": "nested", "match": {"intent": [["x"]]}, "to": "q.billing"}], "rule 'nested': intent"),
    ],
)
def test_invalid_rules_name_the_rule(rules: list[dict], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        router(rules)


def test_unknown_label_is_caught_at_start_up() -> None:
    doc = {
        "tickets": {"rules": [{"name": "b", "match": {"intent": "refund"}, "to": "q.billing"}], "default": "q.general"}
    }
    with pytest.raises(ConfigError, match="rule 'b': intent value\\(s\\) refund not among the model's labels"):
        parse_router(doc, "tickets", known_topics=TOPICS, known_labels={"intent": ["refund_request"]})


def test_default_is_required() -> None:
    with pytest.raises(ConfigError, match="needs a 'default'"):
        parse_router({"tickets": {"rules": []}}, "tickets")


def test_shipped_routes_are_valid_against_shipped_topics_and_labels() -> None:
    catalog = load_catalog(REPO / "topics" / "topics.yaml")
    intents = [
        yaml.safe_load(line)["label"]
        for line in (REPO / "streamer" / "resources" / "data" / "intents.jsonl").read_text().splitlines()
        if line.strip()
    ]
    r = load_router(
        REPO / "topics" / "routes.yaml",
        "tickets",
        known_topics=catalog.topics,
        known_labels={"intent": set(intents), "priority": ["low", "normal", "high", "urgent"]},
    )
    assert r.route({"intent": "data_privacy_request", "priority": "urgent"}).destinations == (
        "support.queue.urgent.v1",
        "support.queue.privacy.v1",
    )
    assert r.route({"intent": "praise_feedback", "priority": "low"}).destinations == ("support.queue.general.v1",)
