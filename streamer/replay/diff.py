"""Compare live decisions with replayed ones: what changed, how often, with redacted examples. Pure.

Both sides are enriched records (``enriched_ticket.v1.json``), joined on the input id. At-least-once
delivery means the live topic can hold one decision several times, and an input can be re-sent under the
same id: each side keeps the decision on the latest input record of an id (highest source offset; for
equal offsets the one read last). Example texts are redacted before they are kept, because reports are
printed, saved and shared while tickets carry personal data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamer.events import ticket_text
from streamer.triage.pii import redact

#: The kinds of change a report counts, in the order it shows them.
KINDS = ("intent", "priority", "sentiment", "routes", "escalation", "reasons")
EXCERPT_CHARS = 160
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Decision:
    """The parts of one enriched record that a replay compares."""

    id: str
    partition: int
    offset: int
    intent: str
    priority: str
    sentiment: str
    routes: frozenset[str]
    escalate: bool
    reasons: frozenset[str]
    model: str
    #: The escalation-score threshold the decision was judged by (not compared: it is how, not what).
    threshold: float | None = None

    def value(self, kind: str) -> str:
        """One kind of decision as a short string for tables and examples."""
        if kind == "routes":
            return ", ".join(sorted(self.routes)) or "-"
        if kind == "escalation":
            return "yes" if self.escalate else "no"
        if kind == "reasons":
            return ", ".join(sorted(self.reasons)) or "-"
        return str(getattr(self, kind))


def decision_of(record: Mapping[str, Any]) -> Decision:
    """The comparable part of an enriched record; ``KeyError``/``TypeError`` when it is not one."""
    triage = record["triage"]
    source = record["source"]
    model = record.get("model") or {}
    escalation = triage["escalation"]
    return Decision(
        id=str(record["id"]),
        partition=int(source["partition"]),
        offset=int(source["offset"]),
        intent=str(triage["intent"]["label"]),
        priority=str(triage["priority"]["label"]),
        sentiment=str(triage["sentiment"]["label"]),
        routes=frozenset(str(r) for r in triage["routes"]),
        escalate=bool(escalation["escalate"]),
        reasons=frozenset(str(r["code"]) for r in escalation["reasons"]),
        model=f"{model.get('name', '?')}@{model.get('version', '?')}",
        threshold=float(t) if isinstance(t := escalation.get("threshold"), int | float) else None,
    )


def changed_kinds(old: Decision, new: Decision) -> list[str]:
    """The kinds that differ; routes and reasons compare as sets, so their order never counts."""
    return [kind for kind in KINDS if old.value(kind) != new.value(kind)]


def redacted_excerpt(ticket: Mapping[str, Any], limit: int = EXCERPT_CHARS) -> str:
    """The ticket's text with personal data replaced, on one line, cut to ``limit`` characters.

    Redaction runs on the whole text before the cut, so a value split by the cut cannot slip through.
    """
    try:
        text = ticket_text(ticket)
    except (KeyError, TypeError):
        return ""
    return redacted_line(text, limit)


def redacted_line(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` with personal data replaced (before the cut), on one line, cut to ``limit`` characters."""
    flat = _SPACE.sub(" ", redact(text).text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _keep_last(table: dict[str, Decision], decision: Decision) -> bool:
    """Put ``decision`` in ``table`` unless the table holds one from a later input record of the same id."""
    held = table.get(decision.id)
    if held is not None and held.partition == decision.partition and held.offset > decision.offset:
        return False
    table[decision.id] = decision
    return True


@dataclass(frozen=True, slots=True)
class Example:
    """One changed decision as a report shows it: id, old and new value, redacted text."""

    id: str
    old: str
    new: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "old": self.old, "new": self.new, "text": self.text}


@dataclass
class DiffReport:
    """Counts of changed decisions between the live topic and a replay over the same inputs."""

    compared: int = 0
    live_only: int = 0
    replay_only: int = 0
    live_only_ids: list[str] = field(default_factory=list)
    replay_only_ids: list[str] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    any_changed: int = 0
    escalated_before: int = 0
    escalated_after: int = 0
    newly_escalated: int = 0
    no_longer_escalated: int = 0
    intent_changes: list[tuple[str, str, int]] = field(default_factory=list)
    intents: dict[str, tuple[int, int]] = field(default_factory=dict)
    routes: dict[str, tuple[int, int]] = field(default_factory=dict)
    reasons: dict[str, tuple[int, int]] = field(default_factory=dict)
    examples: dict[str, list[Example]] = field(default_factory=lambda: {k: [] for k in KINDS})
    live_models: dict[str, int] = field(default_factory=dict)

    @property
    def escalation_rate_before(self) -> float:
        return self.escalated_before / self.compared if self.compared else 0.0

    @property
    def escalation_rate_after(self) -> float:
        return self.escalated_after / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "live_only": self.live_only,
            "replay_only": self.replay_only,
            "live_only_ids": self.live_only_ids,
            "replay_only_ids": self.replay_only_ids,
            "changed": dict(self.changed),
            "any_changed": self.any_changed,
            "escalation": {
                "before": self.escalated_before,
                "after": self.escalated_after,
                "rate_before": round(self.escalation_rate_before, 6),
                "rate_after": round(self.escalation_rate_after, 6),
                "newly_escalated": self.newly_escalated,
                "no_longer_escalated": self.no_longer_escalated,
            },
            "intent_changes": [{"old": o, "new": n, "count": c} for o, n, c in self.intent_changes],
            "intents": {k: {"before": b, "after": a} for k, (b, a) in self.intents.items()},
            "routes": {k: {"before": b, "after": a} for k, (b, a) in self.routes.items()},
            "reasons": {k: {"before": b, "after": a} for k, (b, a) in self.reasons.items()},
            "examples": {k: [e.to_dict() for e in v] for k, v in self.examples.items()},
            "live_models": dict(self.live_models),
        }


def _before_after(before: Counter[str], after: Counter[str]) -> dict[str, tuple[int, int]]:
    keys = sorted(set(before) | set(after), key=lambda k: (-(before[k] + after[k]), k))
    return {k: (before[k], after[k]) for k in keys}


class DiffBuilder:
    """Collects live decisions first, then replayed ones, and keeps excerpts only for changed tickets.

    Live decisions come first so that a replayed one can be compared as it is produced and its
    redacted excerpt taken then, instead of holding every ticket's text until the end.
    """

    def __init__(self, max_examples: int = 5, max_ids: int = 20) -> None:
        self.max_examples = max_examples
        self.max_ids = max_ids
        self.live: dict[str, Decision] = {}
        self.replay: dict[str, Decision] = {}
        self.excerpts: dict[str, str] = {}
        self._live_models: Counter[str] = Counter()
        self._wanted: Counter[str] = Counter()

    def add_live(self, decision: Decision) -> None:
        self._live_models[decision.model] += 1
        _keep_last(self.live, decision)

    def live_thresholds(self, model: str) -> dict[tuple[int, int], float]:
        """(partition, offset) -> the escalation threshold of each live decision ``model`` made."""
        return {
            (d.partition, d.offset): d.threshold
            for d in self.live.values()
            if d.model == model and d.threshold is not None
        }

    def add_replay(self, decision: Decision, excerpt: Callable[[], str]) -> None:
        """Add a replayed decision; ``excerpt`` (the redacted text) is called only if an example may need it."""
        if not _keep_last(self.replay, decision):
            return
        old = self.live.get(decision.id)
        if old is None:
            return
        kinds = [k for k in changed_kinds(old, decision) if self._wanted[k] < self.max_examples]
        if kinds and decision.id not in self.excerpts:
            self.excerpts[decision.id] = excerpt()
            self._wanted.update(kinds)

    def report(self, top_changes: int = 20) -> DiffReport:
        return compare(
            self.live,
            self.replay,
            self.excerpts,
            live_models=self._live_models,
            max_examples=self.max_examples,
            max_ids=self.max_ids,
            top_changes=top_changes,
        )


def compare(
    live: Mapping[str, Decision],
    replay: Mapping[str, Decision],
    excerpts: Mapping[str, str] | None = None,
    *,
    live_models: Mapping[str, int] | None = None,
    max_examples: int = 5,
    max_ids: int = 20,
    top_changes: int = 20,
) -> DiffReport:
    """The report of ``replay`` against ``live`` (both keyed by input id), in the replay's order."""
    excerpts = excerpts or {}
    out = DiffReport(live_models=dict(live_models or Counter(d.model for d in live.values())))
    confusion: Counter[tuple[str, str]] = Counter()
    counts: dict[str, tuple[Counter[str], Counter[str]]] = {
        name: (Counter(), Counter()) for name in ("intents", "routes", "reasons")
    }
    for ticket_id, new in replay.items():
        old = live.get(ticket_id)
        if old is None:
            out.replay_only += 1
            if len(out.replay_only_ids) < max_ids:
                out.replay_only_ids.append(ticket_id)
            continue
        out.compared += 1
        for side, decision in enumerate((old, new)):
            counts["intents"][side][decision.intent] += 1
            counts["routes"][side].update(decision.routes)
            counts["reasons"][side].update(decision.reasons)
        out.escalated_before += old.escalate
        out.escalated_after += new.escalate
        out.newly_escalated += new.escalate and not old.escalate
        out.no_longer_escalated += old.escalate and not new.escalate
        kinds = changed_kinds(old, new)
        if kinds:
            out.any_changed += 1
        for kind in kinds:
            out.changed[kind] += 1
            examples = out.examples[kind]
            if len(examples) < max_examples:
                examples.append(Example(ticket_id, old.value(kind), new.value(kind), excerpts.get(ticket_id, "")))
        if old.intent != new.intent:
            confusion[(old.intent, new.intent)] += 1
    for ticket_id in live:
        if ticket_id not in replay:
            out.live_only += 1
            if len(out.live_only_ids) < max_ids:
                out.live_only_ids.append(ticket_id)
    ranked = sorted(confusion.items(), key=lambda item: (-item[1], item[0]))
    out.intent_changes = [(o, n, c) for (o, n), c in ranked[:top_changes]]
    out.intents = _before_after(*counts["intents"])
    out.routes = _before_after(*counts["routes"])
    out.reasons = _before_after(*counts["reasons"])
    return out


def decisions(records: Iterable[Mapping[str, Any]]) -> dict[str, Decision]:
    """Decisions of enriched records keyed by id (the latest input record's per id); malformed ones skipped."""
    table: dict[str, Decision] = {}
    for record in records:
        try:
            _keep_last(table, decision_of(record))
        except (KeyError, TypeError, ValueError):
            continue
    return table
