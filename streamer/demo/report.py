"""What ``streamer demo`` saw, and the summary it prints: a section per path, the large model, where to look next.

Pure: ``streamer.demo.run`` reads the output topics and hands every record to ``DemoTally.observe``; this module
decides which records belong to the demo run (by the input offsets the run started from, so records of
earlier runs on the same broker are not counted) and renders the text. No Kafka, no clock.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamer.settings import Settings
from streamer.topics import (
    ALERTS,
    DEADLETTER,
    ESCALATIONS,
    LLM_RESPONSES,
    LOG_TEMPLATES,
    LOGS,
    LOGS_ENRICHED,
    TICKETS,
    TICKETS_ENRICHED,
)
from streamer.triage.escalation import MODEL_REASONS

# What clients use when STREAMER_KAFKA_BOOTSTRAP is unset.
DEFAULT_BOOTSTRAP = Settings.model_fields["kafka_bootstrap"].default

__all__ = ["WATCHED", "DemoContext", "DemoTally", "percentile", "render_summary"]

#: The topics the demo reads back (declared names).
WATCHED = (TICKETS_ENRICHED, LOGS_ENRICHED, ALERTS, LOG_TEMPLATES, ESCALATIONS, LLM_RESPONSES, DEADLETTER)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class _Path:
    """Counters one path (tickets or logs) shares with the other."""

    sent: int = 0
    malformed: int = 0
    processed: int = 0
    latency_ms: list[float] = field(default_factory=list)
    last_ms: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    escalations: set[str] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class DemoTally:
    """Counts of one demo run, fed one output record at a time.

    ``starts`` maps (declared input topic, partition) to the first offset of this run: an output counts
    when the input it came from (its ``source``) is at or after it. ``tickets`` are the ids sent;
    ``logs_from_ms`` is the event time of the run's first log line (templates first seen since are new).
    """

    starts: Mapping[tuple[str, int], int]
    tickets: set[str]
    ticket_malformed: int = 0
    logs_sent: int = 0
    log_malformed: int = 0
    logs_from_ms: int = 0
    ticket: _Path = field(default_factory=_Path)
    log: _Path = field(default_factory=_Path)
    intents: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    judged: int = 0
    agree: int = 0
    doubted: int = 0  # tickets escalated for the intent model's doubt, folded duplicates included
    services: Counter[str] = field(default_factory=Counter)
    severities: Counter[str] = field(default_factory=Counter)
    templates: Counter[str] = field(default_factory=Counter)
    template_text: dict[str, str] = field(default_factory=dict)
    new_templates: dict[str, str] = field(default_factory=dict)
    stack_traces: Counter[str] = field(default_factory=Counter)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers_earlier: int = 0
    bridge_dead: dict[str, str] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.ticket.sent, self.ticket.malformed = len(self.tickets), self.ticket_malformed
        self.log.sent, self.log.malformed = self.logs_sent, self.log_malformed

    # --- feeding ---------------------------------------------------------------------------------------

    def _ours(self, source: Any, topic: str) -> bool:
        """Whether ``source`` (an output's source field) is an input of this run on ``topic``."""
        if not isinstance(source, Mapping) or not str(source.get("topic", "")).endswith(topic):
            return False
        start = self.starts.get((topic, int(source.get("partition", -1))))
        return start is not None and int(source.get("offset", -1)) >= start

    def _once(self, topic: str, key: str) -> bool:
        if (topic, key) in self._seen:
            return False
        self._seen.add((topic, key))
        return True

    def observe(self, topic: str, record: Mapping[str, Any], timestamp_ms: int) -> None:
        """Count one record read from declared ``topic`` (written at ``timestamp_ms``); other runs' are ignored.

        Alerts and template records carry no source: every one the runner reads (from the offsets the run
        started at) counts."""
        if topic == TICKETS_ENRICHED:
            self._ticket(record, timestamp_ms)
        elif topic == LOGS_ENRICHED and self._ours(record.get("source"), LOGS):
            self._log(record, timestamp_ms)
        elif topic == DEADLETTER:
            self._dead(record)
        elif topic == ESCALATIONS:
            self._escalation(record)
        elif topic == ALERTS:  # alerts carry no source: run.py reads them from the run's start
            if self._once(ALERTS, str(record.get("id"))):
                self.alerts.append(dict(record))
        elif topic == LOG_TEMPLATES and record.get("template_id") and not record.get("superseded_by"):
            first_seen = record.get("first_seen_ms")
            if isinstance(first_seen, int) and first_seen >= self.logs_from_ms:  # not a re-publication
                self.new_templates[str(record["template_id"])] = str(record.get("template", ""))
        elif topic == LLM_RESPONSES:
            rid = str(record.get("id"))
            if rid in self.ticket.escalations or rid in self.log.escalations:
                self.answers.setdefault(rid, dict(record))
            else:
                self.answers_earlier += 1

    def _ticket(self, record: Mapping[str, Any], timestamp_ms: int) -> None:
        rid = str(record.get("id"))
        if rid not in self.tickets or not self._once(TICKETS_ENRICHED, rid):
            return
        triage = record["triage"]
        self.ticket.processed += 1
        self.ticket.last_ms = max(self.ticket.last_ms, timestamp_ms)
        self.ticket.latency_ms.append(float(record.get("latency_ms", 0.0)))
        self.intents[triage["intent"]["label"]] += 1
        for route in triage.get("routes", []):
            self.routes[route] += 1
        reasons = {str(r.get("code")) for r in triage.get("escalation", {}).get("reasons", [])}
        self.doubted += bool(reasons & {r.value for r in MODEL_REASONS})
        intended = (record.get("ticket", {}).get("metadata") or {}).get("expected", {}).get("intents") or []
        if intended:
            self.judged += 1
            self.agree += triage["intent"]["label"] in intended

    def _log(self, record: Mapping[str, Any], timestamp_ms: int) -> None:
        source = record["source"]
        if not self._once(LOGS_ENRICHED, f"{source['partition']}:{source['offset']}"):
            return
        self.log.processed += 1
        self.log.last_ms = max(self.log.last_ms, timestamp_ms)
        if isinstance(source.get("timestamp_ms"), int):
            self.log.latency_ms.append(float(max(timestamp_ms - source["timestamp_ms"], 0)))
        self.services[str(record.get("service"))] += 1
        self.severities[str(record.get("severity"))] += 1
        tid = str(record.get("template_id"))
        self.templates[tid] += 1
        self.template_text[tid] = str(record.get("template", ""))
        types = (record.get("entities") or {}).get("exception_types") or []
        if "\n" in str(record.get("message", "")) and types:
            self.stack_traces[str(types[0])] += 1

    def _dead(self, record: Mapping[str, Any]) -> None:
        source = record.get("source")
        code = str(record.get("error", {}).get("code", "unknown"))
        key = f"{(source or {}).get('topic')}:{(source or {}).get('partition')}:{(source or {}).get('offset')}"
        if not self._once(DEADLETTER, key):
            return
        if self._ours(source, TICKETS):
            self.ticket.dead[code] += 1
        elif self._ours(source, LOGS):
            self.log.dead[code] += 1
        elif self._ours(source, ESCALATIONS) or str(record.get("id")) in (
            self.ticket.escalations | self.log.escalations
        ):
            self.bridge_dead[str(record.get("id"))] = code

    def _escalation(self, record: Mapping[str, Any]) -> None:
        rid = str(record.get("id"))
        if record.get("kind") == "ticket":
            if rid not in self.tickets:
                return
            path = self.ticket
        elif self._ours(record.get("source"), LOGS):
            path = self.log
        else:
            return
        if rid in path.escalations:
            return
        path.escalations.add(rid)
        for reason in record.get("reasons", []):
            path.reasons[str(reason.get("code"))] += 1

    # --- questions -------------------------------------------------------------------------------------

    @property
    def triaged(self) -> int:
        """Inputs accounted for: enriched or dead-lettered, both paths."""
        t, g = self.ticket, self.log
        return t.processed + sum(t.dead.values()) + g.processed + sum(g.dead.values())

    @property
    def expected(self) -> int:
        return self.ticket.sent + self.ticket.malformed + self.log.sent + self.log.malformed

    def done(self) -> bool:
        """Every ticket enriched, every log line enriched or dead-lettered, every malformed ticket dead."""
        t = self.ticket
        return t.processed >= t.sent and sum(t.dead.values()) >= t.malformed and self.triaged >= self.expected

    @property
    def escalation_ids(self) -> set[str]:
        return self.ticket.escalations | self.log.escalations

    @property
    def settled(self) -> int:
        """Escalations of this run that got an answer or were dead-lettered by the bridge."""
        return len(self.escalation_ids & (set(self.answers) | set(self.bridge_dead)))


@dataclass(frozen=True)
class DemoContext:
    """What the summary needs beyond the counts: timing, where things are, how to look further."""

    bootstrap: str
    topics: Mapping[str, str]  # declared name -> actual name (with the prefix)
    produce_started_ms: int
    files: Mapping[str, str]
    bridge: bool
    llm_endpoint: str = ""
    replay: str = ""
    replay_command: str = ""
    escalation_budget: float | None = None


def _rate(n: int, started_ms: int, last_ms: int) -> str:
    seconds = max(last_ms - started_ms, 1) / 1000
    return f"in {seconds:.1f} s ({n / seconds:.1f}/s end to end)" if n and last_ms else "in - s"


def _latency(values: Sequence[float]) -> str:
    return f"p50 {percentile(values, 0.5):.0f} ms, p99 {percentile(values, 0.99):.0f} ms"


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in Counter(counter).most_common()) or "none"


def _clip(text: str, limit: int = 70) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_tail(lines: list[str], path: _Path, what: str) -> None:
    n = len(path.escalations)
    share = f" ({100 * n / path.processed:.1f}% of {what})" if path.processed else ""
    lines.append(f"escalated to the large model: {n}{share}; by reason: {_counts(path.reasons)}")
    lines.append(f"dead letters: {sum(path.dead.values())}" + (f" ({_counts(path.dead)})" if path.dead else ""))


def render_summary(t: DemoTally, ctx: DemoContext) -> str:
    """The summary: tickets, logs, the large model, files, commands; plain text, no log lines."""
    lines: list[str] = []
    # The local broker took a free port (9092 is someone else's): the streamer commands shown must name it.
    moved = ctx.bootstrap != DEFAULT_BOOTSTRAP
    bootstrap_env = f"STREAMER_KAFKA_BOOTSTRAP={shlex.quote(ctx.bootstrap)} " if moved else ""
    tk = t.ticket
    lines += ["", "== Tickets " + "=" * 60]
    lines.append(
        f"sent {tk.sent} (+{tk.malformed} malformed), enriched {tk.processed} "
        + _rate(tk.processed, ctx.produce_started_ms, tk.last_ms)
    )
    lines.append("latency (produce -> enriched) " + _latency(tk.latency_ms))
    if t.judged:
        lines.append(
            f"intent agrees with the generator's intended label on {t.agree}/{t.judged} "
            f"({100 * t.agree / t.judged:.1f}%)"
        )
    lines.append("top intents: " + ", ".join(f"{k} {v}" for k, v in t.intents.most_common(6)))
    lines.append("routes: " + _counts(t.routes))
    _path_tail(lines, tk, "tickets")
    if tk.processed and ctx.escalation_budget:  # beside the escalations, before the dead letters
        lines.insert(
            len(lines) - 1,
            f"escalated for the intent model's doubt: {t.doubted} ({100 * t.doubted / tk.processed:.1f}% of tickets, "
            f"folded near-duplicates included; the escalation budget is {100 * ctx.escalation_budget:.0f}%)",
        )

    lg = t.log
    lines += ["", "== Logs " + "=" * 63]
    lines.append(
        f"sent {lg.sent} lines from {len(t.services)} services (+{lg.malformed} malformed), enriched "
        f"{lg.processed} " + _rate(lg.processed, ctx.produce_started_ms, lg.last_ms)
    )
    lines.append("latency (produce -> enriched) " + _latency(lg.latency_ms))
    lines.append("severity: " + _counts(t.severities))
    lines.append(f"templates: {len(t.templates)} seen, {len(t.new_templates)} new this run; most frequent:")
    for tid, n in t.templates.most_common(3):
        lines.append(f"  {n:>5}  {_clip(t.template_text.get(tid, tid))}")
    if t.stack_traces:
        lines.append(f"stack traces kept whole: {sum(t.stack_traces.values())} ({_counts(t.stack_traces)})")
    kinds = Counter(str(a.get("kind")) for a in t.alerts)
    lines.append(f"alerts: {len(t.alerts)}" + (f" ({_counts(kinds)})" if kinds else ""))
    for a in sorted(t.alerts, key=lambda a: (str(a.get("kind")), -int(a.get("count", 0))))[:6]:
        lines.append(
            f"  {a.get('kind', '?'):<18} {a.get('service', '?'):<16} x{a.get('count', 0):<4} "
            f"{_clip(str(a.get('template', '')), 52)}"
        )
    _path_tail(lines, lg, "lines")

    lines += ["", "== Large model " + "=" * 56]
    waiting = len(t.escalation_ids)
    if ctx.bridge:
        answers = list(t.answers.values())
        latency = [float(a.get("latency_ms", 0.0)) for a in answers]
        tokens = sum(int((a.get("usage") or {}).get("completion_tokens", 0)) for a in answers)
        lines.append(
            f"bridge -> {ctx.llm_endpoint}: answers received {len(answers)} of {waiting} escalations, "
            f"{len(t.bridge_dead)} dead-lettered ({_counts(Counter(t.bridge_dead.values()))}), "
            f"{max(waiting - t.settled, 0)} still open"
        )
        if answers:
            lines.append(f"answer latency {_latency(latency)}; {tokens} completion tokens")
            lines.append("answered intents: " + _counts(Counter(str(a.get("intent")) for a in answers)))
        if t.answers_earlier:
            lines.append(f"also answered {t.answers_earlier} escalation(s) left from earlier runs")
    else:
        lines.append(
            f"{waiting} escalations of this run wait in {ctx.topics.get(ESCALATIONS, ESCALATIONS)} "
            "(STREAMER_LLM_BASE_URL is not set, so no bridge ran). To answer them:"
        )
        lines.append("  make llm-local                     # a local OpenAI-compatible server (SmolLM2-135M)")
        lines.append(
            f"  STREAMER_LLM_BASE_URL=http://127.0.0.1:8939/v1 {bootstrap_env}streamer bridge   # or any endpoint"
        )
        lines.append("  (or: STREAMER_LLM_BASE_URL=... make run, which runs the bridge with the demo)")

    if ctx.replay:
        lines += ["", "== Replay of the demo window " + "=" * 42, ctx.replay]
    lines += ["", "== Files " + "=" * 62]
    width = max((len(k) for k in ctx.files), default=0)
    for name, path in ctx.files.items():
        lines.append(f"{name:<{width}}  {path}")

    b = shlex.quote(ctx.bootstrap)
    topic = ctx.topics.get
    lines += ["", "== Explore further " + "=" * 52]
    if bootstrap_env:
        lines.append(f"export STREAMER_KAFKA_BOOTSTRAP={b}   # for the streamer commands below")
    lines.append(f"kcat -b {b} -C -e -o -3 -t {topic(TICKETS_ENRICHED, TICKETS_ENRICHED)}   # last decisions")
    lines.append(f"kcat -b {b} -C -e -t {topic(ALERTS, ALERTS)}                  # bursts, first-seen errors")
    lines.append(f"kcat -b {b} -C -e -o -3 -t {topic(ESCALATIONS, ESCALATIONS)}      # what the large model gets")
    lines.append(f"kcat -b {b} -C -e -t {topic(DEADLETTER, DEADLETTER)}      # rejected input and why")
    lines.append(f"kcat -b {b} -C -e -t {topic(LLM_RESPONSES, LLM_RESPONSES)}         # the large model's answers")
    lines.append("streamer topics list                               # partitions and retention")
    if ctx.replay_command:
        lines.append(ctx.replay_command)
    lines.append("streamer produce logs --demo 500 --rate 50          # more traffic for a running worker")
    lines.append("make kafka-stop                                    # stop the local broker")
    return "\n".join(lines) + "\n"
