"""The log replay's comparison: joined on input lines, settled templates, each kind of change counted once,
examples redacted, and the shared report renderings with a log section."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamer.replay.cli import LIVE_TOPICS, add_replay_commands
from streamer.replay.logdiff import LOG_KINDS, LogDecision, LogDiffBuilder, log_changed_kinds, log_decision_of
from streamer.replay.ranges import PartitionRange, Window
from streamer.replay.report import ReplayReport, render_html, render_text, write_json

HOSTILE = '<script>alert("x")</script>'


def record(offset: int, **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"ops.logs.v1:0:{offset}",
        "source": {"topic": "ops.logs.v1", "partition": 0, "offset": offset, "timestamp_ms": 1},
        "service": "payments-worker",
        "severity": "error",
        "template_id": "T1",
        "template": "Refund for <*> failed",
        "incident_class": "payment",
        "message": "Refund for ch_1 failed",
        "model": {"name": "m", "version": "1"},
    }
    out.update(overrides)
    return out


def built(live: list[dict[str, Any]], replayed: list[dict[str, Any]], **settle: Any) -> Any:
    builder = LogDiffBuilder(max_examples=3)
    for r in live:
        builder.add_live(log_decision_of(r))
    for r in replayed:
        builder.add_replay(log_decision_of(r, keep_message=True))
    return builder.report(**settle)


def test_identical_sides_show_no_change() -> None:
    lines = [
        record(i, alerts=["new_error_template"] if i == 0 else [], routes=["team.payments.logs.v1"]) for i in range(4)
    ]
    out = built(lines, lines)
    assert out.compared == 4 and out.any_changed == 0 and out.changed == dict.fromkeys(LOG_KINDS, 0)
    assert out.alerts == {"new_error_template": (1, 1)} and out.routes == {"team.payments.logs.v1": (4, 4)}
    assert out.templates == (1, 1) and out.live_only == out.replay_only == 0


def test_each_kind_of_change_is_counted_and_lines_are_joined_by_offset() -> None:
    live = [record(0), record(1), record(2), record(3), record(9)]
    replayed = [
        record(0, template_id="T2", template="Refund for <*> failed: <*>"),
        record(1, severity="critical"),
        record(2, incident_class="other", alerts=["burst"]),
        record(3, routes=["team.payments.logs.v1"], message=f"Refund for jane@example.com failed {HOSTILE}"),
        record(4),
        record(3, id="again", routes=["team.payments.logs.v1"], message="read last: kept"),  # a re-delivery
    ]
    out = built(live, replayed)
    assert out.compared == 4 and out.live_only_lines == ["0:9"] and out.replay_only_lines == ["0:4"]
    assert out.changed == {"template": 1, "severity": 1, "incident_class": 1, "alerts": 1, "routes": 1}
    assert out.any_changed == 4
    assert out.template_changes == [("Refund for <*> failed", "Refund for <*> failed: <*>", 1)]
    assert out.severities == {"error": (4, 3), "critical": (0, 1)}
    assert out.alerts == {"burst": (0, 1)}
    [example] = out.examples["routes"]
    assert (example.id, example.old, example.new, example.text) == (
        "0:3",
        "-",
        "team.payments.logs.v1",
        "read last: kept",
    )


def test_examples_are_redacted_again() -> None:
    out = built([record(0)], [record(0, severity="warning", message="Refund for jane@example.com failed")])
    [example] = out.examples["severity"]
    assert "jane" not in example.text and "[EMAIL_1]" in example.text


def test_settling_resolves_template_ids_before_comparing() -> None:
    """A live record left with a specific template that the miner generalised later compares as the general one."""
    live = [record(0, template_id="T-specific", template="Refund for ch_1 failed", incident_class="other")]
    replayed = [record(0)]
    general = {"T-specific": ("T1", "Refund for <*> failed", "payment")}

    def settle(decision: LogDecision) -> LogDecision:
        found = general.get(decision.template_id)
        if found is None:
            return decision
        return replace(decision, template_id=found[0], template=found[1], incident_class=found[2])

    assert built(live, replayed).changed["template"] == 1
    assert built(live, replayed, settle_live=settle).any_changed == 0


def test_template_compares_by_id_and_other_kinds_by_value() -> None:
    a = log_decision_of(record(0, routes=["b", "a"]))
    b = log_decision_of(record(0, routes=["a", "b"], id="other id"))
    assert log_changed_kinds(a, b) == []
    assert log_changed_kinds(a, replace(b, template_id="T9")) == ["template"]
    with pytest.raises(KeyError):
        log_decision_of({"id": "x"})


def report_with(diff: Any) -> ReplayReport:
    return ReplayReport(
        run_id="run-logs",
        topic="ops.logs.v1",
        output_topic=None,
        live_topic="ops.logs.enriched.v1",
        window=Window(from_offset=40),
        ranges=[PartitionRange(0, 40, 60, 0, 60)],
        bundle={"name": "support", "version": "4", "path": "/b", "files": {}},
        settings={"batch_size": 2000},
        started_at="2026-12-04T19:00:00.000Z",
        records=20,
        processed=20,
        warmup_records=40,
        diff=diff,
    )


def test_the_shared_report_renders_a_log_diff(tmp_path: Path) -> None:
    live = [record(0), record(1, message=HOSTILE)]
    replayed = [record(0, alerts=["burst"]), record(1, incident_class=HOSTILE, message=HOSTILE)]
    report = report_with(built(live, replayed))
    text = render_text(report)
    assert "40 earlier records replayed first" in text
    assert "alerts              1   50.0%" in text and "incident_class      1   50.0%" in text
    assert "any                 2  100.0%" in text and "burst       0      1" in text
    html = render_html(report)
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "<h2>Alerts</h2>" in html and "lines compared with live" in html
    write_json(report, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["diff"]["kind"] == "logs" and doc["stats"]["warmup_records"] == 40
    assert doc["diff"]["alerts"] == {"burst": {"before": 0, "after": 1}}
    assert doc["diff"]["changed"]["incident_class"] == 1


def test_the_command_takes_the_logs_topic_and_its_warm_up_switch() -> None:
    parser = argparse.ArgumentParser()
    add_replay_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", "--topic", "ops.logs.v1", "--all", "--no-warmup"])
    assert args.topic == "ops.logs.v1" and args.no_warmup and LIVE_TOPICS[args.topic] == "ops.logs.enriched.v1"
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "--topic", "ops.alerts.v1", "--all"])
