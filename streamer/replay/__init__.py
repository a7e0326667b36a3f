"""Replay and re-evaluation: re-run a window of tickets through a bundle and report what would change.

Pure parts (``ranges``, ``diff``, ``report``) know nothing of Kafka and are re-exported here; ``run``
does the reading, the triage (the worker's own ``TicketProcessor``, wired by ``streamer.runtime``) and
the writing, and is imported on its own (it pulls in aiokafka and the model; never Faust); ``cli`` adds
``streamer replay``.
"""

from streamer.replay.diff import KINDS, Decision, DiffBuilder, DiffReport, compare, decision_of, redacted_excerpt
from streamer.replay.ranges import PartitionRange, Window, format_ms, parse_time, plan_ranges
from streamer.replay.report import ReplayReport, render_html, render_text

__all__ = [
    "KINDS",
    "Decision",
    "DiffBuilder",
    "DiffReport",
    "PartitionRange",
    "ReplayReport",
    "Window",
    "compare",
    "decision_of",
    "format_ms",
    "parse_time",
    "plan_ranges",
    "redacted_excerpt",
    "render_html",
    "render_text",
]
