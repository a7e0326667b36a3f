"""The replay report's renderings: JSON, terminal table and a self-contained HTML page."""

from __future__ import annotations

import argparse
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.replay.cli import add_replay_commands
from streamer.replay.diff import Decision, compare
from streamer.replay.ranges import PartitionRange, Window, parse_time
from streamer.replay.report import ReplayReport, render_html, render_text, write_html, write_json
from streamer.replay.run import ReplayRequest, check_run_id, new_run_id, output_spec
from streamer.settings import Settings

REPO = Path(__file__).resolve().parents[3]
HOSTILE = '<script>alert("x")</script>'


def decision(
    ticket_id: str, intent: str, routes: tuple[str, ...] = ("support.queue.orders.v1",), reasons: tuple[str, ...] = ()
) -> Decision:
    return Decision(
        ticket_id, 0, 0, intent, "normal", "neutral", frozenset(routes), bool(reasons), frozenset(reasons), "m@1"
    )


def decisions(*items: Decision) -> dict[str, Decision]:
    return {d.id: d for d in items}


def make_report(with_diff: bool = True) -> ReplayReport:
    live = decisions(
        decision("A", "refund_request", ("support.queue.billing.v1",)),
        decision("B", "return_item", reasons=("vip_customer",)),
        decision(HOSTILE, "order_status"),
    )
    replay = decisions(
        decision("A", "return_item", reasons=("low_confidence",)),
        decision("B", "refund_request", ("support.queue.billing.v1",)),
        decision(HOSTILE, HOSTILE),
        decision("NEW", "order_status"),
    )
    diff = compare(live, replay, {"A": "refund to [CARD_1] please\x1b[2J", HOSTILE: HOSTILE})
    return ReplayReport(
        run_id="run-1",
        topic="support.tickets.v1",
        output_topic="support.tickets.v1.replay.run-1",
        live_topic="support.tickets.enriched.v1",
        window=Window(from_ms=parse_time("2026-11-27T00:00Z"), to_ms=parse_time("2026-11-28T00:00Z")),
        ranges=[PartitionRange(0, 3, 7, 0, 10), PartitionRange(1, 10, 10, 0, 10)],
        bundle={
            "name": "support",
            "version": "4",
            "path": "/b",
            "manifest_sha256": "ab" * 32,
            "files": {"heads.npz": "cd" * 32, "model/model.bin": "ef" * 32},
        },
        settings={"escalation_policy": {"min_confidence": 0.55}, "max_text_chars": 4000},
        started_at="2026-11-28T10:00:00.000Z",
        finished_at="2026-11-28T10:00:02.000Z",
        records=4,
        processed=4,
        written=4,
        replay_seconds=2.0,
        diff=diff if with_diff else None,
    )


def test_json_report_records_what_is_needed_to_reproduce(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.json"
    write_json(make_report(), path)
    doc = json.loads(path.read_text())
    assert doc["run_id"] == "run-1"
    assert doc["bundle"]["files"]["heads.npz"] == "cd" * 32
    assert doc["partitions"][0] == {"partition": 0, "start": 3, "end": 7, "count": 4, "beginning": 0, "end_offset": 10}
    assert doc["window"]["from"] == "2026-11-27T00:00:00.000Z" and doc["window"]["to"] == "2026-11-28T00:00:00.000Z"
    assert doc["settings"]["escalation_policy"]["min_confidence"] == 0.55
    assert doc["stats"]["planned"] == 4 and doc["stats"]["events_per_s"] == 2.0
    assert doc["diff"]["changed"]["intent"] == 3 and doc["diff"]["replay_only"] == 1


def test_terminal_table() -> None:
    text = render_text(make_report())
    assert "replay run-1: support.tickets.v1 -> support.tickets.v1.replay.run-1" in text
    assert re.search(r"^intent\s+3\s+100\.0%$", text, re.M)
    assert re.search(r"^\s*total\s+4$", text, re.M)
    assert re.search(r"^\s*1\s+10\s+10\s+0$", text, re.M)
    assert "escalation rate: 33.3% before, 33.3% after (+1 newly escalated, -1 no longer)" in text
    assert "refund to [CARD_1] please" in text
    assert "2.0 events/s" in text
    assert "\x1b" not in render_text(make_report())
    dry = make_report(with_diff=False)
    dry.output_topic = None
    assert "dry run" in render_text(dry) and "no comparison" in render_text(dry)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def test_html_is_self_contained_escaped_and_has_tables_and_charts(tmp_path: Path) -> None:
    page = render_html(make_report())
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert not [v for k, v in parser.attrs if k in ("src", "href")]
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert parser.tags.count("svg") == 3 and parser.tags.count("table") >= 6
    assert "Escalation rate" in page and "refund_request → return_item" in page
    assert "<style>" in page
    write_html(make_report(with_diff=False), tmp_path / "r.html")
    assert "<svg" not in (tmp_path / "r.html").read_text()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="streamer")
    add_replay_commands(top.add_subparsers(dest="command"))
    return top


def test_cli_arguments() -> None:
    args = parser().parse_args(
        ["replay", "--from", "2026-11-27T00:00Z", "--to", "2026-11-28T00:00Z", "--partitions", "2,0", "--dry-run"]
    )
    assert args.from_ms == parse_time("2026-11-27T00:00Z") and args.partitions == (0, 2) and args.dry_run
    assert args.topic == "support.tickets.v1" and args.live_topic == "support.tickets.enriched.v1"
    assert callable(args.handler)
    with pytest.raises(SystemExit):
        parser().parse_args(["replay", "--output", "x", "--dry-run"])
    with pytest.raises(SystemExit):
        parser().parse_args(["replay", "--from", "someday"])


def test_run_ids_and_output_topic() -> None:
    assert re.match(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$", new_run_id(1795737600.0))
    assert check_run_id("nightly_42") == "nightly_42"
    for bad in ("", "a.b", "a/b", "-x", "x" * 65):
        with pytest.raises(ConfigError):
            check_run_id(bad)
    settings = Settings(topics_dir=REPO / "topics")
    window = Window()
    spec = output_spec(settings, ReplayRequest(window=window, run_id="r1"))
    assert spec.name == "support.tickets.v1.replay.r1"
    assert spec.config["retention.ms"] == "86400000" and spec.partitions == 6
    assert output_spec(settings, ReplayRequest(window=window, run_id="r1", output="mine")).name == "mine"
    with pytest.raises(ConfigError, match="live topic"):
        output_spec(settings, ReplayRequest(window=window, run_id="r1", output="support.tickets.enriched.v1"))


def test_replay_without_a_window_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No window used to replay and copy the whole topic; now it needs --all, checked before Kafka or a bundle."""
    from streamer.cli import main

    unreachable = {"STREAMER_KAFKA_BOOTSTRAP": "127.0.0.1:9", "STREAMER_BUNDLE_DIR": str(tmp_path / "none")}
    with pytest.MonkeyPatch.context() as env:
        for key, value in unreachable.items():
            env.setenv(key, value)
        assert main(["replay", "--dry-run"]) == 2
        first = capsys.readouterr().err
        assert main(["replay", "--all", "--from-offset", "3", "--dry-run"]) == 2
        both = capsys.readouterr().err
    assert first.splitlines() == [
        "streamer: error: replay needs a window: --from/--to (time), --from-offset/--to-offset, "
        "or --all for the whole topic"
    ]
    assert both.startswith("streamer: error: --all replays the whole topic") and both.count("\n") == 1
    args = parser().parse_args(["replay", "--all"])
    assert args.whole_topic and args.from_ms is None


def test_warmup_from_is_a_log_replay_bound(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--warmup-from`` bounds a log replay's warm-up; with tickets or ``--no-warmup`` it is a one-line error."""
    from streamer.cli import main

    args = parser().parse_args(["replay", "--topic", "ops.logs.v1", "--all", "--warmup-from", "2026-12-05T06:00Z"])
    assert args.warmup_from_ms == parse_time("2026-12-05T06:00Z") and not args.no_warmup
    unreachable = {"STREAMER_KAFKA_BOOTSTRAP": "127.0.0.1:9", "STREAMER_BUNDLE_DIR": str(tmp_path / "none")}
    with pytest.MonkeyPatch.context() as env:
        for key, value in unreachable.items():
            env.setenv(key, value)
        assert main(["replay", "--all", "--warmup-from", "2026-12-05T06:00Z", "--dry-run"]) == 2
        tickets = capsys.readouterr().err
        logs = ["replay", "--topic", "ops.logs.v1", "--all", "--no-warmup", "--warmup-from", "2026-12-05T06:00Z"]
        assert main(logs) == 2
        both = capsys.readouterr().err
    for err in (tickets, both):
        assert err.startswith("streamer: error: --warmup-from bounds the warm-up of a log replay")
        assert err.count("\n") == 1
