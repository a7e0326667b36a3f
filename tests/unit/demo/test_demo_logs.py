"""Demo log lines: reproducible, a realistic mix of layouts, templates, bursts and traces, and the story
``make run`` sends (a first-seen error, a burst, a stack trace on every run)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from streamer.demo import (
    STORY_BURST,
    codename,
    demo_log_lines,
    demo_log_story,
    demo_tickets,
    first_seen_error,
)
from streamer.logs.templates import TemplateMiner

N = 2000


@pytest.fixture(scope="module")
def logs() -> list[dict[str, Any] | str]:
    return list(demo_log_lines(N, seed=7))


# --- logs ------------------------------------------------------------------------------------------


def message(entry: dict[str, Any] | str) -> str:
    return entry["message"] if isinstance(entry, dict) else entry


def test_logs_are_deterministic_per_seed() -> None:
    assert list(demo_log_lines(300, seed=5)) == list(demo_log_lines(300, seed=5))
    assert list(demo_log_lines(300, seed=5)) != list(demo_log_lines(300, seed=6))
    assert list(demo_log_lines(50)) == list(demo_log_lines(300))[:50]


def test_logs_mix_records_and_text_lines(logs: list[dict[str, Any] | str]) -> None:
    assert len(logs) == N
    records = [e for e in logs if isinstance(e, dict)]
    lines = [e for e in logs if isinstance(e, str)]
    assert 0.2 * N < len(records) < 0.8 * N and len(records) + len(lines) == N
    for r in records:
        assert {"timestamp", "level", "service", "message"} <= set(r)
        assert all(isinstance(r[k], str) for k in ("timestamp", "level", "service", "message"))
    stamps = [datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")) for r in records]
    assert stamps == sorted(stamps)
    assert any(re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ ", s) for s in lines)  # syslog
    assert any(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARN|ERROR)", s) for s in lines)


def test_logs_repeat_templates_with_rare_ones_and_traces(logs: list[dict[str, Any] | str]) -> None:
    def mask(text: str) -> str:
        return re.sub(r"[0-9a-f]{6,}|\d+(\.\d+)*", "#", text.split("\n", 1)[0])

    templates = Counter(mask(message(e)) for e in logs)
    assert len(templates) < 0.5 * N  # mostly recurring templates
    assert sum(1 for c in templates.values() if c <= 2) >= 1  # and some rare ones
    traces = [m for m in map(message, logs) if "\n\tat " in m]
    assert traces and all(m.count("\n") >= 3 for m in traces)


def test_logs_contain_an_error_burst() -> None:
    entries = [message(e) for e in demo_log_lines(5000, seed=7)]
    masked = [re.sub(r"\d+", "#", m) for m in entries]
    longest = run = 1
    for a, b in itertools.pairwise(masked):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    assert longest >= 8


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        list(demo_tickets(-1))
    with pytest.raises(ValueError):
        list(demo_log_lines(-1))
    assert list(demo_tickets(0)) == [] and list(demo_log_lines(0)) == []


# --- the log story make run sends ---------------------------------------------------------------------

START = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def stamp(entry: dict[str, Any] | str) -> datetime:
    if isinstance(entry, dict):
        return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
    head = entry.split(" ", 1)[0]
    return datetime.fromisoformat(head.replace("Z", "+00:00")) if "T" in head else START


def test_log_lines_start_where_asked_and_keep_their_pace() -> None:
    lines = list(demo_log_lines(400, seed=3, start=START, mean_gap_ms=50))
    stamps = [stamp(e) for e in lines if isinstance(e, dict)]
    assert stamps[0] > START and stamps == sorted(stamps)
    assert stamps[-1] - START < timedelta(seconds=400 * 50 / 1000 * 2)  # a tenth of the default pace's span
    assert (
        list(demo_log_lines(400, seed=3)) != lines
        and list(demo_log_lines(50, seed=3)) == list(demo_log_lines(400, seed=3))[:50]
    )


def test_story_has_a_burst_a_first_seen_error_and_a_stack_trace() -> None:
    story = list(demo_log_story(600, start=START, tag="12345", burst=60))
    assert len(story) == 600 + 60 + 2
    texts = [message(e) for e in story]
    burst_lines = [
        e for e in story if isinstance(e, dict) and e["message"].startswith(STORY_BURST.text.split("{", 1)[0])
    ]
    assert len(burst_lines) >= 60
    burst_stamps = [stamp(e) for e in burst_lines[-60:]]
    assert burst_stamps[-1] - burst_stamps[0] < timedelta(seconds=30)  # within one 60 s burst window
    novel = [t for t in texts if t.startswith(first_seen_error("12345"))]
    assert len(novel) == 1
    assert any("\n\tat " in t for t in texts)
    stamps = [stamp(e) for e in story if isinstance(e, dict)]
    assert stamps == sorted(stamps) and stamps[0] > START
    assert story == list(demo_log_story(600, start=START, tag="12345", burst=60))


def test_every_tag_gives_a_template_no_other_tag_shares() -> None:
    """Three values in one position would merge into one template; the first word never does."""
    miner = TemplateMiner()
    tags = [f"{n:05d}" for n in range(8)]
    ids = {miner.add(first_seen_error(tag) + " by 12.50 USD").id for tag in tags}
    assert len(ids) == len(tags)
    assert len({codename(tag) for tag in tags}) == len(tags)
    assert all(codename(tag).isalpha() for tag in tags)
