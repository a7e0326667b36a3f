"""Structured logs: JSON lines in production, readable lines in a terminal.

structlog renders; the standard library's loggers (Faust, aiokafka) are routed through the same
renderer so one process writes one format. Fields bound with ``bind_process_fields`` (the bundle and its
version, once loaded) go on every line, from every thread.

What goes into a log line at INFO and above is metadata: ids, topics, partitions, offsets, codes, counts.
Never a ticket's text or the values of its fields (they may hold personal data); dead letters and
escalations carry those, in topics with their own retention and access rules.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from streamer.settings import Settings

_process_fields: dict[str, Any] = {}


def bind_process_fields(**fields: Any) -> None:
    """Add ``fields`` to every log line of this process from now on (``None`` removes a field)."""
    for name, value in fields.items():
        if value is None:
            _process_fields.pop(name, None)
        else:
            _process_fields[name] = value


def add_process_fields(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the process-wide fields, unless the line sets its own."""
    for name, value in _process_fields.items():
        event.setdefault(name, value)
    return event


class RepeatFilter(logging.Filter):
    """Lets through at most ``burst`` lines of one kind per ``interval_s``; the next one after a quiet
    stretch says how many were held back (``repeats_suppressed``).

    A kind is the logger, the level and the message before its arguments are filled in: aiokafka's
    "Unable connect to %r" is one kind whatever the address. While a broker is away the clients retry
    every few milliseconds and log each failure; unfiltered that was ~1,500 error lines in 7 s, which
    buries the line that matters and costs real CPU. Lines below WARNING are not limited.
    """

    def __init__(self, *, burst: int = 3, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, int, str], list[float | int]] = {}  # kind -> [start, passed, held]

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple[str, int, str]:
        message = record.msg.get("event", "") if isinstance(record.msg, dict) else record.msg
        return record.name, record.levelno, str(message)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self._clock()
        key = self.kind(record)
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval_s:
            held = int(window[2]) if window is not None else 0
            if len(self._windows) > 1000:  # bounded: old kinds are forgotten
                self._windows = {k: w for k, w in self._windows.items() if now - w[0] < self.interval_s}
            self._windows[key] = [now, 1, 0]
            if held:
                if isinstance(record.msg, dict):
                    record.msg["repeats_suppressed"] = held
                else:
                    record.repeats_suppressed = held
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Set up structlog and stdlib logging once per process, from ``log_level`` and ``log_format``.

    Lines go to ``stream`` (default: standard error); ``streamer demo`` sends them to a file so that the
    terminal keeps its progress bars and summary.
    """
    out = stream if stream is not None else sys.stderr
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty()) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_process_fields,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Client libraries are chatty at INFO (every rebalance step); their warnings still show.
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
