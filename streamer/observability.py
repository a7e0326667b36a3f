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
from collections.abc import MutableMapping
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
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Client libraries are chatty at INFO (every rebalance step); their warnings still show.
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
