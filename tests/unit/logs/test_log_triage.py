"""Log triage on batches: schema-valid outputs, one model call per new template, alerts and escalations
raised once, nothing personal leaving the core, and state that survives restarts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from fakes.pii_corpus import written_numbers
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.events import RawEvent, Source
from streamer.logs import BurstConfig, LogRecord, LogTriageConfig, LogTriageState, decode_log, triage_logs
from streamer.logs.triage import _MAYBE_PII
from streamer.topics import SchemaRegistry
from streamer.triage.outputs import ModelInfo
from streamer.triage.pii import find_pii

REPO = Path(__file__).resolve().parents[3]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
T0 = 1_795_860_000_000
MODEL = ModelInfo("incident-minilm", "1.2.0")
CONFIG = LogTriageConfig(bursts=BurstConfig(window_ms=60_000, allowed_lateness_ms=5_000, min_count=10, factor=3.0))


class RecordingClassifier:
    """A stand-in for the incident head that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
        self.calls.append(list(templates))
        return [("database" if "onnection" in t else "application", 0.8) for t in templates]

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def record(value: str | dict[str, object], offset: int, time_ms: int, key: str = "checkout-api") -> LogRecord:
    raw = orjson.dumps(value) if isinstance(value, dict) else value.encode()
    out = decode_log(RawEvent(raw, Source("ops.logs.v1", 1, offset, time_ms), key.encode()))
    assert isinstance(out, LogRecord), out
    return out


def routine(n: int, start: int, offset: int = 0, seed: int = 1) -> list[LogRecord]:
    """Ordinary traffic: info lines with varying ids, a few warnings, emails and IPs in places."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = start + i * 250
        kind = rng.random()
        if kind < 0.5:
            value: str | dict[str, object] = {
                "level": "info",
                "service": "checkout-api",
                "message": f"Order ORD-{rng.randint(10000, 99999)} created for customer C-{rng.randint(100, 999)}",
                "trace_id": f"{rng.getrandbits(64):016x}",
            }
        elif kind < 0.8:
            value = f"GET /api/v1/cart/{rng.randint(1, 9999)} completed in {rng.randint(3, 900)} ms"
        elif kind < 0.95:
            user = rng.choice(["ann", "bob", "cyd", "dee"])
            value = f"WARN Login failed for {user}@example.com from 81.2.69.{rng.randint(1, 250)}"
        else:
            value = f"INFO cache refreshed from 10.0.4.{rng.randint(1, 9)} in {rng.randint(1, 50)} ms"
        out.append(record(value, offset + i, t))
    return out


def burst(n: int, start: int, offset: int) -> list[LogRecord]:
    return [
        record(
            f"ERROR HikariPool-1 - Connection is not available, request timed out after {30000 + i}ms. "
            f"user=ops{i}@example.com",
            offset + i,
            start + i * 50,
        )
        for i in range(n)
    ]


def check_schemas(result: object) -> None:
    for name, items in (
        ("enriched_log.v1.json", result.enriched),  # type: ignore[attr-defined]
        ("alert.v1.json", result.alerts),  # type: ignore[attr-defined]
        ("escalation.v1.json", result.escalations),  # type: ignore[attr-defined]
        ("log_template.v1.json", result.templates),  # type: ignore[attr-defined]
    ):
        for item in items:
            assert REGISTRY.errors(name, item) == [], (name, item)


def test_outputs_are_schema_valid_and_in_input_order() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    records = routine(200, T0) + burst(15, T0 + 60_000, 1000)
    result = triage_logs(records, state, clf, model=MODEL, now="2026-11-28T10:05:00Z")
    check_schemas(result)
    assert [e["id"] for e in result.enriched] == [r.id for r in records]
    first = result.enriched[0]
    assert first["model"] == {"name": "incident-minilm", "version": "1.2.0"}
    assert first["incident_class"] in {"database", "application"}
    assert result.escalations and all(e["escalated_at"] == "2026-11-28T10:05:00Z" for e in result.escalations)


def test_the_model_runs_once_per_new_template() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    triage_logs(routine(300, T0), state, clf)
    assert len(clf.calls) == 1  # one call per batch, not per line
    first_call = clf.texts
    assert len(first_call) == len(set(first_call)) == len(state.miner)
    triage_logs(routine(300, T0 + 600_000, 300, seed=2), state, clf)
    assert clf.texts == first_call  # nothing new: no call at all
    triage_logs([record("ERROR disk /dev/sdb1 is 97% full", 900, T0 + 700_000)], state, clf)
    assert len(clf.calls) == 2 and clf.calls[1] == ["disk <*> is <*>% full"]


def test_new_error_template_alerts_and_escalates_once() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    line = "ERROR Settlement file batch-{n}.csv: {n} transactions could not be matched"
    r1 = triage_logs([record(line.format(n=n), n, T0 + n) for n in range(3)], state, clf)
    assert [a["kind"] for a in r1.alerts] == ["new_error_template"]
    [esc] = r1.escalations
    assert [r["code"] for r in esc["reasons"]] == ["new_error_template"]
    assert esc["kind"] == "log" and esc["id"] == r1.enriched[0]["id"]
    assert esc["context"]["template_id"] == r1.enriched[0]["template_id"]
    assert esc["candidates"] == [{"label": "application", "confidence": 0.8}]
    r2 = triage_logs([record(line.format(n=7), 7, T0 + 100)], state, clf)
    assert r2.alerts == [] and r2.escalations == []
    # a template first seen at info does not alert, and warnings never do
    r3 = triage_logs([record("INFO rotated logs", 8, T0), record("WARN rotated logs late", 9, T0)], state, clf)
    assert r3.alerts == [] and r3.escalations == []


def test_error_burst_alerts_once_per_window_and_escalates_with_context() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    result = triage_logs(routine(100, T0) + burst(40, T0 + 60_000, 500), state, clf)
    bursts = [a for a in result.alerts if a["kind"] == "burst"]
    # the login warnings of routine traffic reach min_count too: an alert, but warnings do not escalate
    assert sorted(a["severity"] for a in bursts) == ["error", "warning"]
    alert = next(a for a in bursts if a["severity"] == "error")
    assert alert["count"] == 10 and alert["incident_class"] == "database"
    assert alert["window_start"] == "2026-11-28T10:01:00.000Z"
    [escalation] = [e for e in result.escalations if any(r["code"] == "error_burst" for r in e["reasons"])]
    context = escalation["context"]
    assert context["count"] == 10 and context["template_id"] == alert["template_id"]
    assert 1 <= len(context["sample"]) <= CONFIG.sample_size
    assert all("[EMAIL_" in s for s in context["sample"])
    # the first line of the burst was a new error template: its own, earlier escalation
    first = result.escalations[0]
    assert [r["code"] for r in first["reasons"]] == ["new_error_template"]


def test_one_record_with_two_reasons_is_one_escalation() -> None:
    config = LogTriageConfig(bursts=BurstConfig(min_count=1))
    result = triage_logs(
        [record("CRITICAL kernel: Out of memory: Killed process 4242", 1, T0)],
        LogTriageState(config),
        RecordingClassifier(),
    )
    [escalation] = result.escalations
    assert [r["code"] for r in escalation["reasons"]] == ["new_error_template", "error_burst"]
    assert [a["kind"] for a in result.alerts] == ["new_error_template", "burst"]
    check_schemas(result)


def test_nothing_personal_leaves_the_core() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    records = routine(300, T0) + burst(20, T0 + 60_000, 2000)
    result = triage_logs(records, state, clf)
    raw_pii = {s.value for r in records for s in find_pii(r.message)}
    public_ips = {s.value for r in records for s in find_pii(r.message) if s.kind == "IP" and s.value.startswith("81.")}
    assert raw_pii and public_ips
    blob = orjson.dumps([result.enriched, result.alerts, result.escalations, result.templates]).decode()
    for value in raw_pii:  # internal addresses too: the privacy policy, not the core, lets them out
        assert value not in blob
    for text in clf.texts:
        assert not find_pii(text)
    cached_at = next(i for i, e in enumerate(result.enriched) if "cache refreshed" in e["message"])
    cached = result.enriched[cached_at]
    [token] = cached["entities"]["ips"]  # the internal address, by its placeholder in the message
    assert token in cached["message"]
    kind, value = result.pii[cached_at][token]
    assert kind == "IP" and value.startswith("10.0.4.")
    assert len(result.pii) == len(result.enriched)
    login = next(e for e in result.enriched if "Login failed" in e["message"])
    assert login["entities"]["public_ips"] == 1 and login["entities"]["pii"] == {"EMAIL": 1, "IP": 1}


@pytest.mark.parametrize(
    "message",
    ["callback requested: call me at (555)1234567", "sms to (555) 1234567 from 10.0.0.7 queued"],
)
def test_phones_in_every_spelling_leave_the_core_redacted(message: str) -> None:
    result = triage_logs([record(message, 0, T0)], LogTriageState(CONFIG), RecordingClassifier())
    [enriched] = result.enriched
    assert "1234567" not in orjson.dumps(result.enriched).decode()
    assert enriched["entities"]["pii"]["PHONE"] == 1


def test_long_messages_are_cut_before_redaction() -> None:
    config = LogTriageConfig(max_message_chars=100)
    long = "ERROR " + "x" * 50 + " contact bob@example.com " + "y" * 10 + " also alice@example.com " + "z" * 500
    [enriched] = triage_logs([record(long, 1, T0)], LogTriageState(config), RecordingClassifier()).enriched
    assert len(enriched["message"]) <= 100 and "bob@example.com" not in enriched["message"]
    assert "alice" not in enriched["message"]  # cut at whitespace: no half address left behind
    assert enriched["entities"]["truncated_from"] == len(long) - len("ERROR ")


def test_stack_traces_group_by_exception() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()

    def trace(n: int, exc: str) -> LogRecord:
        text = f'Traceback (most recent call last):\n  File "/app/jobs.py", line {n}, in run\n{exc}: job {n} failed'
        return record({"level": "error", "service": "jobs", "message": text}, n, T0 + n)

    result = triage_logs([trace(1, "ValueError"), trace(2, "KeyError"), trace(3, "ValueError")], state, clf)
    ids = [e["template_id"] for e in result.enriched]
    assert ids[0] == ids[2] != ids[1]
    assert result.enriched[0]["template"] == "Traceback (most recent call last): ValueError"
    assert result.enriched[0]["entities"]["top_frame"] == "/app/jobs.py:1 in run"


def test_generalised_templates_supersede_and_counts_follow() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    r1 = triage_logs([record("ERROR Invalid user admin from 203.0.113.9", 1, T0)], state, clf)
    old = r1.enriched[0]["template_id"]
    assert [t["template_id"] for t in r1.templates] == [old]
    r2 = triage_logs(
        [record(f"ERROR Invalid user {u} from 203.0.113.9", i, T0 + i) for i, u in enumerate(["oracle", "test"], 2)],
        state,
        clf,
    )
    new = r2.enriched[-1]["template_id"]
    assert r2.enriched[-1]["template"] == "Invalid user <*> from <IP>"
    superseded = [t for t in r2.templates if t.get("superseded_by")]
    assert superseded == [{"template_id": old, "template": "Invalid user admin from <IP>", "superseded_by": new}]
    assert not [a for a in r2.alerts if a["template_id"] == new]  # the lineage already alerted
    check_schemas(r2)


def test_snapshot_restore_remembers_templates_classes_and_alerts() -> None:
    state, clf = LogTriageState(CONFIG), RecordingClassifier()
    records = routine(200, T0) + burst(12, T0 + 60_000, 500)
    before = triage_logs(records, state, clf)
    restored = LogTriageState.restore(state.snapshot(), CONFIG)
    clf2 = RecordingClassifier()
    again = triage_logs(routine(200, T0 + 3_600_000, 5000, seed=9) + burst(3, T0 + 3_700_000, 9000), restored, clf2)
    assert clf2.calls == []
    assert not [a for a in again.alerts if a["kind"] == "new_error_template"]
    known = {e["template_id"] for e in before.enriched}
    assert {e["template_id"] for e in again.enriched} <= known


def test_another_worker_loads_the_published_templates() -> None:
    a, clf_a = LogTriageState(CONFIG), RecordingClassifier()
    ra = triage_logs(routine(200, T0) + burst(12, T0 + 60_000, 500), a, clf_a)
    b, clf_b = LogTriageState(CONFIG), RecordingClassifier()
    b.load_templates(ra.templates)
    rb = triage_logs(routine(200, T0, seed=1) + burst(12, T0 + 60_000, 500), b, clf_b)
    assert clf_b.calls == []
    assert [e["template_id"] for e in rb.enriched] == [e["template_id"] for e in ra.enriched]
    assert not [x for x in rb.alerts if x["kind"] == "new_error_template"]  # error_seen travelled along


def test_triage_is_deterministic() -> None:
    def run() -> list[object]:
        result = triage_logs(
            routine(150, T0) + burst(15, T0 + 60_000, 500), LogTriageState(CONFIG), RecordingClassifier()
        )
        return [result.enriched, result.alerts, result.escalations, result.templates]

    assert run() == run()


def test_a_failed_model_call_dead_letters_its_lines_and_leaves_the_templates_to_the_next_batch() -> None:
    class Broken:
        def classify_templates(self, templates: Sequence[str]) -> Sequence[tuple[str, float]]:
            return []

    state = LogTriageState(CONFIG)
    records = routine(20, T0)
    result = triage_logs(records, state, Broken())
    # every template is new, so every line waits on the model: all dead letters, with the reason, none enriched
    assert [record.id for record, _ in result.failed] == [r.id for r in records]
    assert all(
        why.startswith("incident model failed: ValueError: classifier returned 0 classes") for _, why in result.failed
    )
    assert result.enriched == [] and result.templates == [] and not state.classes
    counted = {t.id: state.miner.count(t.id) for t in state.miner.templates()}
    assert sum(counted.values()) == len(records)  # each line counted once
    # the next batch's model classes them, and the templates are announced then, with their class
    later = triage_logs(routine(20, T0 + 60_000, offset=20), state, RecordingClassifier())
    assert not later.failed
    announced = {t["template_id"] for t in later.templates}
    assert announced == {e["template_id"] for e in later.enriched} and all(
        "incident_class" in t for t in later.templates
    )


_PII_PARTS = st.sampled_from(
    ["bob@example.com", "a%40b.io", "+44 20 7946 0958", "(555) 123-4567", "555-123-4567 phone", "4111 1111 1111 1111",
     "DE89 3704 0044 0532 0130 00", "123-45-6789", "SSN 123456789", "AB 12 34 56 C", "12345678Z",
     "RSSMRA85T10A562S", "10.0.0.1", "2001:db8:85a3::8a2e:370:7334", "https://u:p@h.example.com/", "call 07700 900123"]
)  # fmt: skip
_FILLER = st.text(alphabet=st.sampled_from(list("abc XYZ019:-./@()+%\n")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PII_PARTS, _FILLER), max_size=6))
def test_the_redaction_gate_lets_every_pii_through(parts: list[str]) -> None:
    text = " ".join(parts)
    if find_pii(text):
        assert _MAYBE_PII.search(text), text


@settings(max_examples=1000, deadline=None)
@given(written_numbers())
def test_the_redaction_gate_lets_every_written_number_through(text: str) -> None:
    if find_pii(text):
        assert _MAYBE_PII.search(text), text
