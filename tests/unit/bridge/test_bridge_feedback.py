"""Feedback export: escalations joined with answers into training data that ``streamer models build`` takes."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from streamer.bridge.cli import add_bridge_commands
from streamer.bridge.feedback import ExportReport, join_feedback, parse_since, training_text, write_jsonl
from streamer.errors import ConfigError
from streamer.models.data import read_examples


def esc(record_id: str, text: str, subject: str | None = None, kind: str = "ticket") -> dict[str, Any]:
    doc: dict[str, Any] = {"id": record_id, "kind": kind, "redacted_text": text}
    if subject:
        doc["redacted_subject"] = subject
    return doc


def resp(record_id: str, intent: str) -> dict[str, Any]:
    return {"id": record_id, "intent": intent, "priority": "normal", "summary": "s"}


def test_join_by_id_dedup_skip_other_logs_and_unmatched() -> None:
    escalations = [
        esc("a", "My card has not arrived", subject="Card"),
        esc("b", "Refund [CARD_1] please"),
        esc("b", "Refund [CARD_1] please"),  # duplicate delivery
        esc("c", "Something odd"),
        esc("d", "db timeouts", kind="log"),
        esc("e", "   "),
    ]
    responses = [
        resp("a", "card_arrival"),
        resp("b", "refund_request"),
        resp("b", "refund_request"),
        resp("c", "other"),
        resp("d", "database"),
        resp("e", "card_arrival"),
        resp("z", "card_arrival"),
    ]
    report = ExportReport()
    examples = join_feedback(escalations, responses, report)
    assert examples == [
        {"text": "Card\nMy card has not arrived", "label": "card_arrival", "source": "large-model"},
        {"text": "Refund [CARD_1] please", "label": "refund_request", "source": "large-model"},
    ]
    assert report.escalations == 6 and report.responses == 7 and report.written == 2
    assert report.skipped == {"not_a_ticket": 1, "empty_text": 1, "other": 1, "no_escalation": 1}


def test_training_text_never_carries_pii() -> None:
    assert training_text(esc("x", "write to bob@example.com")) == "write to [EMAIL_1]"


def test_parse_since() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-28T09:00:00Z") == datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-28") == datetime(2026, 11, 28, tzinfo=timezone.utc)
    assert parse_since("2026-11-28T09:00+02:00").utcoffset() == timedelta(hours=2)
    with pytest.raises(ConfigError, match="--since"):
        parse_since("last tuesday")


def test_export_file_is_what_models_build_reads(tmp_path: Path) -> None:
    out = tmp_path / "fb" / "intent.jsonl"
    examples = join_feedback([esc("a", "Card late"), esc("b", "Need refund")], [resp("a", "x"), resp("b", "y")])
    assert write_jsonl(examples, out) == 2
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == ["large-model"] * 2
    assert read_examples(out) == (["Card late", "Need refund"], ["x", "y"])
    assert not list(out.parent.glob(".*.tmp"))

    from streamer.commands.models import add_models_commands

    parser = argparse.ArgumentParser(prog="streamer")
    add_models_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["models", "build", "--out", "b", "--name", "n", "--version", "1", "--head", f"intent={out}"]
    )
    assert args.head == [("intent", out)]


def test_cli_grammar() -> None:
    parser = argparse.ArgumentParser(prog="streamer")
    add_bridge_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["feedback", "export", "--since", "7d", "--out", "fb.jsonl"])
    assert args.since == "7d" and args.out == Path("fb.jsonl") and callable(args.handler)
    assert callable(parser.parse_args(["bridge"]).handler)
    with pytest.raises(SystemExit):
        parser.parse_args(["feedback", "export", "--out", "x"])  # --since is required


def test_models_build_trains_on_the_export(tmp_path: Path) -> None:
    """A real build: the exported file as a second intent file next to the shipped examples."""
    from streamer.commands.models import main as models_main
    from streamer.defaults import data_dir
    from streamer.models.errors import SourceError
    from streamer.models.sources import resolve_source

    try:
        resolve_source(None)
    except SourceError as exc:
        pytest.skip(f"base weights not installed: {exc}")
    examples = join_feedback(
        [esc(str(i), f"My virtual card number {i} was declined at the shop") for i in range(12)],
        [resp(str(i), "virtual_card_declined") for i in range(12)],
    )
    feedback = tmp_path / "feedback.jsonl"
    write_jsonl(examples, feedback)
    out = tmp_path / "bundle"
    code = models_main(
        [
            "models", "build", "--out", str(out), "--name", "fb", "--version", "1",
            "--head", f"intent={data_dir() / 'intents.jsonl'}", "--head", f"intent={feedback}",
            "--head", f"priority={data_dir() / 'priority.jsonl'}",
        ]
    )  # fmt: skip
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "virtual_card_declined" in manifest["heads"]["intent"]["labels"]
