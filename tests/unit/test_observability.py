"""Log lines: a client retrying against a dead broker must not flood the log."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest
import structlog

from streamer.observability import RepeatFilter, configure_logging
from streamer.settings import Settings


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json", log_level="INFO"))
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_a_broker_outage_logs_a_few_lines_not_one_per_retry(captured: io.StringIO) -> None:
    client = logging.getLogger("aiokafka")
    for attempt in range(1500):  # what 7 s without a broker cost before: one error per connection attempt
        client.error('Unable connect to "%s": %s', f"127.0.0.1:{9092 + attempt % 3}", "Connect call failed")
    structlog.get_logger("streamer.worker").warning("lag probe failed", error="refused")
    lines = [orjson.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["aiokafka"] * 3 + ["streamer.worker"]
    assert lines[0]["event"].startswith('Unable connect to "127.0.0.1:9092"')


def test_held_back_lines_are_counted_on_the_next_one_that_passes() -> None:
    now = [0.0]
    repeats = RepeatFilter(burst=2, interval_s=10.0, clock=lambda: now[0])

    def record(msg: object, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    passed = [repeats.filter(record("Unable connect to %r")) for _ in range(7)]
    assert passed == [True, True, False, False, False, False, False]
    assert repeats.filter(record("another kind"))  # kinds are limited apart
    assert repeats.filter(record("Unable connect to %r", name="faust"))
    assert all(repeats.filter(record("Unable connect to %r", level=logging.INFO)) for _ in range(10))
    now[0] = 10.5
    late = record("Unable connect to %r")
    assert repeats.filter(late) and late.repeats_suppressed == 5  # type: ignore[attr-defined]
    event = record({"event": "lag probe failed"}, name="streamer.metrics")
    for _ in range(3):
        repeats.filter(record({"event": "lag probe failed"}, name="streamer.metrics"))
    now[0] = 21.0
    assert repeats.filter(event) and event.msg == {"event": "lag probe failed", "repeats_suppressed": 1}
