"""Declarative routing: ordered rules from ``topics/routes.yaml`` send each decision to team topics.

Rules are evaluated top to bottom; the first that matches decides, unless it says ``continue: true``
(as in Alertmanager), in which case its destinations are added and evaluation goes on. When nothing
decides, the section's ``default`` applies, so every event lands somewhere. A rule matches when every
field it names matches; a field matches a single value or any value of a list, and ``not_<field>``
excludes values. Errors found at start-up name the rule.

Tickets always land somewhere, so their section needs a ``default``. Log lines all go to
``ops.logs.enriched.v1`` anyway and rules pick the few a team subscribes to, so the ``logs`` section may
say ``default: []`` (nothing more) and may be left out of a file altogether (no log routing).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamer.errors import ConfigError

#: Which fields each section's rules may match on.
MATCH_FIELDS: Mapping[str, frozenset[str]] = {
    "tickets": frozenset({"intent", "priority", "sentiment", "tier", "language", "channel", "escalated", "reason"}),
    "logs": frozenset({"service", "severity", "incident_class", "template_id", "alert"}),
}
#: Sections whose ``default`` may be an empty list and which a file may leave out.
OPTIONAL_SECTIONS: frozenset[str] = frozenset({"logs"})


@dataclass(frozen=True, slots=True)
class Condition:
    """One field test: the value must be among ``allowed`` (when given) and not among ``denied``."""

    field: str
    allowed: frozenset[str] | None
    denied: frozenset[str]

    def matches(self, facts: Mapping[str, object]) -> bool:
        value = facts.get(self.field)
        values = {_norm(v) for v in value} if isinstance(value, (list, tuple, set, frozenset)) else {_norm(value)}
        if self.allowed is not None and not values & self.allowed:
            return False
        return not values & self.denied


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    destinations: tuple[str, ...]
    keep_going: bool = False

    def matches(self, facts: Mapping[str, object]) -> bool:
        return all(c.matches(facts) for c in self.conditions)


@dataclass(frozen=True, slots=True)
class RouteResult:
    destinations: tuple[str, ...]
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Router:
    """The rules of one section (``tickets`` or ``logs``) and its default destination."""

    rules: tuple[Rule, ...]
    default: tuple[str, ...]

    def route(self, facts: Mapping[str, object]) -> RouteResult:
        """Destinations for one decision, in rule order and without repeats."""
        destinations: list[str] = []
        names: list[str] = []
        for rule in self.rules:
            if rule.matches(facts):
                names.append(rule.name)
                destinations.extend(d for d in rule.destinations if d not in destinations)
                if not rule.keep_going:
                    return RouteResult(tuple(destinations), tuple(names))
        destinations.extend(d for d in self.default if d not in destinations)
        return RouteResult(tuple(destinations), (*names, "default"))


def _norm(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value).lower()


def _values(raw: object, where: str) -> frozenset[str]:
    items = raw if isinstance(raw, list) else [raw]
    if not items or any(isinstance(i, (dict, list)) for i in items):
        raise ConfigError(f"{where}: expected a value or a list of values")
    return frozenset(_norm(i) for i in items)


def _destinations(
    raw: object, where: str, known_topics: Collection[str] | None, *, allow_none: bool = False
) -> tuple[str, ...]:
    candidates = raw if isinstance(raw, list) else [raw]
    items = [i for i in candidates if isinstance(i, str) and i]
    if allow_none and raw == []:
        return ()
    if not items or len(items) != len(candidates):
        raise ConfigError(f"{where}: 'to' must be a topic name or a list of topic names")
    if known_topics is not None:
        unknown = [t for t in items if t not in known_topics]
        if unknown:
            raise ConfigError(f"{where}: destination topic(s) not declared in topics.yaml: {', '.join(unknown)}")
    return tuple(items)


def parse_router(
    doc: Mapping[str, Any],
    section: str,
    *,
    known_topics: Collection[str] | None = None,
    known_labels: Mapping[str, Collection[str]] | None = None,
    origin: str = "routes.yaml",
) -> Router:
    """Validate and compile one section; ``known_labels`` (field -> labels) catches typos in values."""
    if section not in MATCH_FIELDS:
        raise ConfigError(f"{origin}: unknown section {section!r}")
    body = doc.get(section)
    if body is None and section in OPTIONAL_SECTIONS:
        return Router(rules=(), default=())
    if not isinstance(body, Mapping):
        raise ConfigError(f"{origin}: section {section!r} is missing or not a mapping")
    fields = MATCH_FIELDS[section]
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(body.get("rules") or []):
        name = str(raw.get("name") or f"#{index + 1}") if isinstance(raw, Mapping) else f"#{index + 1}"
        where = f"{origin}: {section} rule {name!r}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: must be a mapping with name, match and to")
        if name in seen:
            raise ConfigError(f"{where}: duplicate rule name")
        seen.add(name)
        unknown_keys = set(raw) - {"name", "match", "to", "continue", "description"}
        if unknown_keys:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown_keys))}")
        match = raw.get("match") or {}
        if not isinstance(match, Mapping):
            raise ConfigError(f"{where}: 'match' must be a mapping of field: value(s)")
        grouped: dict[str, dict[str, frozenset[str]]] = {}
        for key, value in match.items():
            negated = str(key).startswith("not_")
            fname = str(key)[4:] if negated else str(key)
            if fname not in fields:
                raise ConfigError(
                    f"{where}: cannot match on {key!r}; fields are {', '.join(sorted(fields))} (or not_<field>)"
                )
            values = _values(value, f"{where}: {key}")
            if known_labels and fname in known_labels:
                labels = {_norm(label) for label in known_labels[fname]}
                unknown_values = sorted(values - labels)
                if unknown_values:
                    raise ConfigError(
                        f"{where}: {fname} value(s) {', '.join(unknown_values)} not among the model's labels"
                    )
            grouped.setdefault(fname, {})["denied" if negated else "allowed"] = values
        conditions = tuple(
            Condition(f, parts.get("allowed"), parts.get("denied", frozenset())) for f, parts in sorted(grouped.items())
        )
        rules.append(
            Rule(
                name=name,
                conditions=conditions,
                destinations=_destinations(raw.get("to"), where, known_topics),
                keep_going=bool(raw.get("continue", False)),
            )
        )
    if "default" not in body:
        raise ConfigError(f"{origin}: section {section!r} needs a 'default' destination")
    default = _destinations(
        body["default"], f"{origin}: {section} default", known_topics, allow_none=section in OPTIONAL_SECTIONS
    )
    return Router(rules=tuple(rules), default=default)


def load_router(
    path: Path,
    section: str,
    *,
    known_topics: Collection[str] | None = None,
    known_labels: Mapping[str, Collection[str]] | None = None,
) -> Router:
    """Read ``routes.yaml`` and compile one section, failing with an error that names the rule."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"routing rules not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_router(doc, section, known_topics=known_topics, known_labels=known_labels, origin=str(path))


def all_destinations(routers: Iterable[Router]) -> Sequence[str]:
    """Every topic any rule can send to, for producers that check topics at start-up."""
    out: list[str] = []
    for router in routers:
        for dest in [d for rule in router.rules for d in rule.destinations] + list(router.default):
            if dest not in out:
                out.append(dest)
    return out
