"""Log routing: the logs rules of routes.yaml, what a line is matched on, start-up checks naming the rule,
and the processor sending each routed line to its team topic under that topic's privacy policy."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamer.errors import ConfigError
from streamer.events import DecodeLimits, RawEvent, Source
from streamer.headers import SOURCE_LOGS, Headers
from streamer.logs import LogRecord, LogTriageState, decode_log, triage_logs
from streamer.logs.routes import ALERT_KINDS, destinations, known_labels, route
from streamer.logs.triage import resolve_enriched
from streamer.pipeline import Batch
from streamer.pipeline.logs import LogProcessor
from streamer.privacy import Privacy, Pseudonymiser, load_policy
from streamer.runtime import log_router
from streamer.settings import Settings
from streamer.topics import LOGS_ENRICHED, SchemaRegistry, load_catalog, load_contracts
from streamer.triage.outputs import ModelInfo
from streamer.triage.routing import load_router, parse_router

REPO = Path(__file__).resolve().parents[3]
TOPICS = REPO / "topics"
CATALOG = load_catalog(TOPICS / "topics.yaml")
REGISTRY = SchemaRegistry(TOPICS / "schemas")
CLASSES = list(yaml.safe_load((REPO / "streamer" / "resources" / "data" / "log_incidents.yaml").read_text()))
SECURITY, PAYMENTS, STORAGE, PLATFORM = (
    "team.security.logs.v1",
    "team.payments.logs.v1",
    "team.storage.logs.v1",
    "team.platform.logs.v1",
)
T0 = 1_795_860_000_000


def shipped() -> Any:
    return load_router(TOPICS / "routes.yaml", "logs", known_topics=CATALOG.topics, known_labels=known_labels(CLASSES))


def line(service: str, severity: str, incident_class: str, alerts: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"service": service, "severity": severity, "incident_class": incident_class}
    if alerts:
        out["alerts"] = list(alerts)
    out["template_id"] = "T1"
    return out


def test_shipped_rules_send_lines_to_their_teams_and_the_rest_nowhere_else() -> None:
    r = shipped()
    assert route(line("auth-service", "warning", "auth"), r) == (SECURITY,)
    assert route(line("auth-service", "info", "auth"), r) == ()  # a signed-in line is nobody's business
    assert route(line("payments-worker", "error", "other"), r) == (PAYMENTS,)
    assert route(line("checkout-api", "error", "payment"), r) == (PAYMENTS,)
    assert route(line("inventory-svc", "error", "storage"), r) == (STORAGE,)
    assert route(line("postgres", "error", "database"), r) == (STORAGE,)
    assert route(line("nginx", "error", "network"), r) == (PLATFORM,)
    assert route(line("nginx", "warning", "network"), r) == ()  # platform takes errors only
    assert route(line("checkout-api", "info", "other"), r) == ()
    # continue: a brute-force line that is also a new error template reaches security and platform;
    # a new storage error reaches platform (the alert) and storage, once each
    assert route(line("sshd", "error", "auth", ["new_error_template"]), r) == (SECURITY, PLATFORM)
    assert route(line("inventory-svc", "error", "storage", ["new_error_template"]), r) == (PLATFORM, STORAGE)
    assert route(line("nginx", "error", "network", ["new_error_template", "burst"]), r) == (PLATFORM,)


def test_values_match_case_insensitively_and_negation_excludes() -> None:
    doc = {
        "logs": {
            "rules": [
                {"name": "noisy", "match": {"not_service": ["nginx", "sshd"], "alert": "burst"}, "to": PLATFORM},
                {"name": "db", "match": {"incident_class": "DATABASE"}, "to": STORAGE},
            ],
            "default": [],
        }
    }
    r = parse_router(doc, "logs", known_topics=CATALOG.topics, known_labels=known_labels(CLASSES))
    assert route(line("checkout-api", "error", "other", ["burst"]), r) == (PLATFORM,)
    assert route(line("nginx", "error", "other", ["burst"]), r) == ()
    assert route(line("postgres", "info", "database"), r) == (STORAGE,)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "typo", "match": {"servce": "x"}, "to": PLATFORM}, r"rule 'typo': cannot match on 'servce'"),
        ({"name": "ticket-field", "match": {"intent": "x"}, "to": PLATFORM}, r"rule 'ticket-field': cannot match"),
        ({"name": "nowhere", "match": {"service": "x"}, "to": "team.nobody.logs.v1"}, r"rule 'nowhere': destination"),
        ({"name": "sev", "match": {"severity": "eror"}, "to": PLATFORM}, r"rule 'sev': severity value\(s\) eror"),
        ({"name": "cls", "match": {"incident_class": "disk"}, "to": STORAGE}, r"rule 'cls': incident_class value"),
        ({"name": "alert", "match": {"alert": "spike"}, "to": PLATFORM}, r"rule 'alert': alert value\(s\) spike"),
        ({"name": "empty-to", "match": {"service": "x"}, "to": []}, r"rule 'empty-to': 'to' must be"),
    ],
)
def test_invalid_log_rules_fail_naming_the_rule(rule: dict[str, Any], message: str) -> None:
    doc = {"logs": {"rules": [rule], "default": []}}
    with pytest.raises(ConfigError, match=message):
        parse_router(doc, "logs", known_topics=CATALOG.topics, known_labels=known_labels(CLASSES))


def test_logs_section_is_optional_and_only_logs_may_default_to_nothing() -> None:
    empty = parse_router({"tickets": {"rules": [], "default": "q"}}, "logs")
    assert empty.rules == () and empty.default == ()
    assert route(line("x", "error", "other"), empty) == ()
    with pytest.raises(ConfigError, match="tickets default: 'to' must be"):
        parse_router({"tickets": {"rules": [], "default": []}}, "tickets")
    with pytest.raises(ConfigError, match="needs a 'default'"):
        parse_router({"logs": {"rules": []}}, "logs")


def _settings_with_routes(tmp_path: Path, logs: dict[str, Any]) -> Settings:
    topics = tmp_path / "topics"
    shutil.copytree(TOPICS, topics)
    doc = yaml.safe_load((TOPICS / "routes.yaml").read_text())
    doc["logs"] = logs
    (topics / "routes.yaml").write_text(yaml.safe_dump(doc))
    return Settings(topics_dir=topics)


def test_start_up_refuses_a_log_rule_to_a_topic_of_other_records(tmp_path: Path) -> None:
    rule = {"name": "to-billing", "match": {"service": "x"}, "to": "support.queue.billing.v1"}
    settings = _settings_with_routes(tmp_path, {"rules": [rule], "default": []})
    with pytest.raises(ConfigError, match=r"logs rule 'to-billing': support.queue.billing.v1 do\(es\) not carry"):
        log_router(settings, CLASSES)
    assert log_router(Settings(topics_dir=TOPICS), CLASSES).rules == shipped().rules


class Stub:
    """Classes by keyword, like a head that knows its classes."""

    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        return [("payment" if "efund" in t else "storage" if "disk" in t else "other", 0.9) for t in templates]


def raw(value: dict[str, Any], offset: int) -> RawEvent:
    return RawEvent(orjson.dumps(value), Source("ops.logs.v1", 2, offset, T0 + offset), value["service"].encode())


def decoded(value: dict[str, Any], offset: int) -> LogRecord:
    out = decode_log(raw(value, offset))
    assert isinstance(out, LogRecord)
    return out


def test_the_core_lists_alerts_and_routes_on_each_record() -> None:
    lines = [
        {"service": "payments-worker", "level": "ERROR", "message": "Refund for ch_1 failed: already refunded"},
        {"service": "payments-worker", "level": "ERROR", "message": "Refund for ch_2 failed: already refunded"},
        {"service": "checkout-api", "level": "INFO", "message": "Order 17 created"},
        {"service": "inventory-svc", "level": "WARN", "message": "disk /var is 91% full"},
    ]
    records = [decoded(v, i) for i, v in enumerate(lines)]
    result = triage_logs(records, LogTriageState(), Stub(), model=ModelInfo("m", "1"), router=shipped())
    first, second, order, disk = result.enriched
    assert first["alerts"] == ["new_error_template"] and "alerts" not in second
    assert first["routes"] == [PLATFORM, PAYMENTS]  # new error template, then the payments rule
    assert second["routes"] == [PAYMENTS]
    assert "routes" not in order and "alerts" not in order
    assert disk["routes"] == [STORAGE]
    assert destinations(first) == (LOGS_ENRICHED, PLATFORM, PAYMENTS) and destinations(order) == (LOGS_ENRICHED,)
    for record in result.enriched:
        assert REGISTRY.errors("enriched_log.v1.json", record) == [], record
    # Without rules the records carry no routes (the alerts they raised are listed all the same).
    bare = triage_logs([decoded(lines[0], 9)], LogTriageState(), Stub(), model=ModelInfo("m", "1"))
    assert "routes" not in bare.enriched[0] and bare.enriched[0]["alerts"] == ["new_error_template"]
    assert set(ALERT_KINDS) >= {a["kind"] for a in result.alerts}


def test_a_record_whose_template_settles_later_is_routed_again() -> None:
    router = parse_router(
        {"logs": {"rules": [{"name": "pay", "match": {"incident_class": "payment"}, "to": PAYMENTS}], "default": []}},
        "logs",
        known_topics=CATALOG.topics,
    )
    state = LogTriageState()
    first = {"service": "droid", "level": "INFO", "message": "received broadcast android.intent.action.TIME_TICK"}
    records = triage_logs([decoded(first, 0)], state, Stub()).enriched
    assert "routes" not in records[0] and records[0]["incident_class"] == "other"
    # A later line generalises the template; say the new template is classed payment.
    second = {**first, "message": "received broadcast android.intent.action.BATTERY_CHANGED"}
    later = triage_logs([decoded(second, 1)], state, Stub())
    new_id = later.enriched[0]["template_id"]
    state.classes[new_id] = ("payment", 0.9)
    assert resolve_enriched(records, state, router) == 1
    assert records[0]["template_id"] == new_id and records[0]["routes"] == [PAYMENTS]


def by_topic(batch: Batch) -> dict[str, list[tuple[bytes | None, bytes, Headers]]]:
    """A batch's outputs per topic, as ``(key, value bytes, headers)`` in the order they leave."""
    records: dict[str, list[tuple[bytes | None, bytes, Headers]]] = {}
    for out in batch.outputs:
        records.setdefault(out.topic, []).append((out.key, out.data, out.headers))
    return records


def test_the_processor_sends_each_routed_line_to_its_team_topic_masked_by_that_topic_policy() -> None:
    policy = load_policy(TOPICS / "topics.yaml", CATALOG.topics)
    privacy = Privacy(policy, Pseudonymiser(b"secret"))
    contracts = load_contracts(TOPICS, SOURCE_LOGS, ("m", "1"))
    processor = LogProcessor(
        LogTriageState(),
        Stub(),
        ModelInfo("m", "1"),
        DecodeLimits(),
        contracts,
        privacy=privacy,
        router=shipped(),
        hold=True,
    )
    values = [
        {"service": "payments-worker", "level": "ERROR", "message": "Refund for jane.doe@example.com failed: refunded"},
        {"service": "checkout-api", "level": "INFO", "message": "Order 18 created for bob@example.com"},
    ]
    held = processor([raw(v, i) for i, v in enumerate(values)])
    assert by_topic(held).get(PAYMENTS) is None  # held with its enriched record
    batch = processor.flush()
    records = by_topic(batch)
    assert set(records) == {LOGS_ENRICHED, PAYMENTS, PLATFORM}
    assert batch.routes == {PAYMENTS: 1, PLATFORM: 1} and batch.processed == 2
    (key, value, headers) = records[PAYMENTS][0]
    team = orjson.loads(value)
    assert key == b"payments-worker" and team["routes"] == [PLATFORM, PAYMENTS]
    assert "jane.doe" not in value.decode() and "[EMAIL_1]" in team["message"]
    assert "pii_values" not in team["entities"]
    assert dict(headers)["ce_type"].startswith(b"dev.streamer.enriched_log")
    assert REGISTRY.errors("enriched_log.v1.json", team) == []
    # The shared enriched topic pseudonymises emails, as its policy says: the same line, another rendering.
    enriched = [orjson.loads(v) for _, v, _ in records[LOGS_ENRICHED]]
    assert "[EMAIL_k1_" in enriched[0]["message"] and "jane.doe" not in enriched[0]["message"]
    assert [r["source"]["offset"] for r in enriched] == [0, 1]
    ids = {dict(h)["ce_id"] for topic in (LOGS_ENRICHED, PAYMENTS, PLATFORM) for _, _, h in records[topic]}
    assert len(ids) == 4  # one id per output topic and input line
