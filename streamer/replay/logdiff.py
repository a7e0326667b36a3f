"""Compare live log triage with a replay over the same lines: templates, severities, incident classes,
alerts and routes. Pure.

Both sides are enriched log records (``enriched_log.v1.json``), joined on the input line they came from
(source partition and offset of the replayed topic); at-least-once delivery may put a line on the live
topic twice, and the record read last is kept. Template ids move as the miner generalises (a specific
template is superseded by a general one), and live records leave with the id of their moment, so before
comparing each side is *settled*: its ids resolved to the templates as of the end of the replay (see
``streamer.replay.logs``). Examples are the replayed line's message, redacted again before it is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamer.replay.diff import EXCERPT_CHARS, Example, redacted_line

#: The kinds of change a log report counts, in the order it shows them.
LOG_KINDS = ("template", "severity", "incident_class", "alerts", "routes")


@dataclass(frozen=True, slots=True)
class LogDecision:
    """The parts of one enriched log record that a replay compares."""

    partition: int
    offset: int
    id: str
    service: str
    template_id: str
    template: str
    severity: str
    incident_class: str
    alerts: frozenset[str]
    routes: frozenset[str]
    model: str
    message: str = ""

    @property
    def line(self) -> tuple[int, int]:
        return (self.partition, self.offset)

    def value(self, kind: str) -> str:
        """One kind of decision as a short string for tables and examples."""
        if kind == "template":
            return f"{self.template_id}: {self.template}"
        if kind in ("alerts", "routes"):
            return ", ".join(sorted(getattr(self, kind))) or "-"
        return str(getattr(self, kind))

    def differs(self, other: LogDecision, kind: str) -> bool:
        if kind == "template":
            return self.template_id != other.template_id  # ids are content hashes of the text
        return self.value(kind) != other.value(kind)


def log_decision_of(record: Mapping[str, Any], *, keep_message: bool = False) -> LogDecision:
    """The comparable part of an enriched log record; ``KeyError``/``TypeError`` when it is not one."""
    source = record["source"]
    model = record.get("model") or {}
    return LogDecision(
        partition=int(source["partition"]),
        offset=int(source["offset"]),
        id=str(record["id"]),
        service=str(record["service"]),
        template_id=str(record["template_id"]),
        template=str(record["template"]),
        severity=str(record["severity"]),
        incident_class=str(record["incident_class"]),
        alerts=frozenset(str(a) for a in record.get("alerts") or ()),
        routes=frozenset(str(r) for r in record.get("routes") or ()),
        model=f"{model.get('name', '?')}@{model.get('version', '?')}",
        message=str(record.get("message", ""))[: EXCERPT_CHARS * 4] if keep_message else "",
    )


def log_changed_kinds(old: LogDecision, new: LogDecision) -> list[str]:
    return [kind for kind in LOG_KINDS if old.differs(new, kind)]


def excerpt(message: str, limit: int = EXCERPT_CHARS) -> str:
    """A message on one line, personal data replaced (again: a live policy may keep some), cut to ``limit``."""
    return redacted_line(message, limit)


@dataclass
class LogDiffReport:
    """Counts of changed log decisions between the live topic and a replay over the same lines."""

    compared: int = 0
    live_only: int = 0
    replay_only: int = 0
    live_only_lines: list[str] = field(default_factory=list)
    replay_only_lines: list[str] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOG_KINDS, 0))
    any_changed: int = 0
    template_changes: list[tuple[str, str, int]] = field(default_factory=list)
    templates: tuple[int, int] = (0, 0)
    severities: dict[str, tuple[int, int]] = field(default_factory=dict)
    incident_classes: dict[str, tuple[int, int]] = field(default_factory=dict)
    alerts: dict[str, tuple[int, int]] = field(default_factory=dict)
    routes: dict[str, tuple[int, int]] = field(default_factory=dict)
    examples: dict[str, list[Example]] = field(default_factory=lambda: {k: [] for k in LOG_KINDS})
    live_models: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def before_after(table: Mapping[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
            return {k: {"before": b, "after": a} for k, (b, a) in table.items()}

        return {
            "kind": "logs",
            "compared": self.compared,
            "live_only": self.live_only,
            "replay_only": self.replay_only,
            "live_only_lines": self.live_only_lines,
            "replay_only_lines": self.replay_only_lines,
            "changed": dict(self.changed),
            "any_changed": self.any_changed,
            "templates": {"before": self.templates[0], "after": self.templates[1]},
            "template_changes": [{"old": o, "new": n, "count": c} for o, n, c in self.template_changes],
            "severities": before_after(self.severities),
            "incident_classes": before_after(self.incident_classes),
            "alerts": before_after(self.alerts),
            "routes": before_after(self.routes),
            "examples": {k: [e.to_dict() for e in v] for k, v in self.examples.items()},
            "live_models": dict(self.live_models),
        }


def _before_after(before: Counter[str], after: Counter[str]) -> dict[str, tuple[int, int]]:
    keys = sorted(set(before) | set(after), key=lambda k: (-(before[k] + after[k]), k))
    return {k: (before[k], after[k]) for k in keys}


def _where(line: tuple[int, int]) -> str:
    return f"{line[0]}:{line[1]}"


class LogDiffBuilder:
    """Collects live and replayed decisions by input line; ``report`` settles both sides and compares."""

    def __init__(self, max_examples: int = 5, max_ids: int = 20) -> None:
        self.max_examples = max_examples
        self.max_ids = max_ids
        self.live: dict[tuple[int, int], LogDecision] = {}
        self.replay: dict[tuple[int, int], LogDecision] = {}

    def add_live(self, decision: LogDecision) -> None:
        self.live[decision.line] = decision

    def add_replay(self, decision: LogDecision) -> None:
        self.replay[decision.line] = decision

    def report(
        self,
        settle_live: Callable[[LogDecision], LogDecision] = lambda d: d,
        settle_replay: Callable[[LogDecision], LogDecision] = lambda d: d,
        top_changes: int = 20,
    ) -> LogDiffReport:
        """The report of the replay against live, both settled first, in input-line order."""
        out = LogDiffReport(live_models=dict(Counter(d.model for d in self.live.values())))
        confusion: Counter[tuple[str, str]] = Counter()
        names = ("severities", "incident_classes", "alerts", "routes")
        counts: dict[str, tuple[Counter[str], Counter[str]]] = {n: (Counter(), Counter()) for n in names}
        template_ids: tuple[set[str], set[str]] = (set(), set())
        for line in sorted(self.replay):
            old_raw = self.live.get(line)
            if old_raw is None:
                out.replay_only += 1
                if len(out.replay_only_lines) < self.max_ids:
                    out.replay_only_lines.append(_where(line))
                continue
            old, new = settle_live(old_raw), settle_replay(self.replay[line])
            out.compared += 1
            for side, decision in enumerate((old, new)):
                counts["severities"][side][decision.severity] += 1
                counts["incident_classes"][side][decision.incident_class] += 1
                counts["alerts"][side].update(decision.alerts)
                counts["routes"][side].update(decision.routes)
                template_ids[side].add(decision.template_id)
            kinds = log_changed_kinds(old, new)
            if kinds:
                out.any_changed += 1
            for kind in kinds:
                out.changed[kind] += 1
                examples = out.examples[kind]
                if len(examples) < self.max_examples:
                    examples.append(Example(_where(line), old.value(kind), new.value(kind), excerpt(new.message)))
            if old.template_id != new.template_id:
                confusion[(old.template, new.template)] += 1
        for line in sorted(self.live):
            if line not in self.replay:
                out.live_only += 1
                if len(out.live_only_lines) < self.max_ids:
                    out.live_only_lines.append(_where(line))
        ranked = sorted(confusion.items(), key=lambda item: (-item[1], item[0]))
        out.template_changes = [(o, n, c) for (o, n), c in ranked[:top_changes]]
        out.templates = (len(template_ids[0]), len(template_ids[1]))
        out.severities = _before_after(*counts["severities"])
        out.incident_classes = _before_after(*counts["incident_classes"])
        out.alerts = _before_after(*counts["alerts"])
        out.routes = _before_after(*counts["routes"])
        return out
