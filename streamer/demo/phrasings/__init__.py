"""The demo traffic's wording, read from the YAML files beside this module.

Ticket texts, log templates and slot values are data, so they can be read and changed without reading
the generator. Each file is parsed and checked once per process (the first time a generator asks) and
returned as frozen, typed objects; a malformed file raises ``PhrasingError`` naming the file and the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = [
    "LOG_STYLES",
    "PRIORITIES",
    "Burst",
    "ForeignTicket",
    "Intent",
    "LogPhrasings",
    "LogTemplate",
    "PhrasingError",
    "SlotValues",
    "StackTrace",
    "TicketPhrasings",
    "log_phrasings",
    "slot_values",
    "ticket_phrasings",
]

#: Ticket priorities, lowest first.
PRIORITIES = ("low", "normal", "high", "urgent")
#: Layouts a log template can be rendered in (``streamer/demo/logs.py``).
LOG_STYLES = frozenset({"json", "iso", "syslog", "postgres", "nginx_access", "nginx_error"})
_HELP = "help"


class PhrasingError(ValueError):
    """A phrasings file is not what the generator needs; the message names the file and the entry."""


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class SlotValues:
    """The lists placeholders draw from (``slots.yaml``)."""

    items: tuple[str, ...]
    plans: tuple[str, ...]
    features: tuple[str, ...]
    versions: tuple[str, ...]
    cities: tuple[str, ...]
    carriers: tuple[str, ...]
    integrations: tuple[str, ...]
    agents: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    endpoints: tuple[str, ...]
    users: tuple[str, ...]
    paths: tuple[str, ...]
    user_agents: tuple[str, ...]
    declines: tuple[str, ...]
    tables: tuple[str, ...]


@dataclass(frozen=True)
class Intent:
    """One ticket intent: its priority, subjects and problem sentences (``tickets.yaml``)."""

    name: str
    priority: str
    asks_for_help: bool
    subjects: tuple[str, ...]
    problems: tuple[str, ...]
    urgent: tuple[str, ...]
    pii: tuple[str, ...]


@dataclass(frozen=True)
class ForeignTicket:
    """A whole ticket in another language, with the intent it expresses."""

    language: str
    intent: str
    subject: str
    body: str


@dataclass(frozen=True)
class TicketPhrasings:
    """Everything ``tickets.yaml`` says, with the detail sentences resolved per intent."""

    intents: Mapping[str, Intent]
    foreign: tuple[ForeignTicket, ...]
    greetings: Mapping[str, tuple[str, ...]]
    closings: Mapping[str, tuple[str, ...]]
    details_for: Mapping[str, tuple[str, ...]]
    angry_openers: tuple[str, ...]
    angry_closers: tuple[str, ...]
    joiners: tuple[str, ...]
    pii_lines: Mapping[str, tuple[str, ...]]
    urgent_subject_prefixes: tuple[str, ...]
    multi_subject_suffixes: tuple[str, ...]

    @property
    def help_intents(self) -> tuple[str, ...]:
        """Intents that ask for help (what multi-issue tickets combine), sorted."""
        return tuple(sorted(name for name, intent in self.intents.items() if intent.asks_for_help))

    @property
    def urgent_intents(self) -> tuple[str, ...]:
        """Intents with outage-level problems, sorted."""
        return tuple(sorted(name for name, intent in self.intents.items() if intent.urgent))


@dataclass(frozen=True)
class LogTemplate:
    """One log message shape; ``fields`` are placeholders a JSON record also carries as fields."""

    weight: float
    style: str
    service: str
    level: str
    text: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Burst:
    """A template repeated many times within seconds; ``keep`` holds its values fixed through the burst."""

    template: LogTemplate
    keep: tuple[str, ...]


@dataclass(frozen=True)
class StackTrace:
    """A Java stack trace: headline, exception, frames (``{line}`` varies) and an optional cause."""

    service: str
    headline: str
    exception: str
    frames: tuple[str, ...]
    cause: str | None
    cause_frames: tuple[str, ...]


@dataclass(frozen=True)
class LogPhrasings:
    """Everything ``logs.yaml`` says; ``story_burst`` is the burst marked ``story: true``."""

    routine: tuple[LogTemplate, ...]
    rare: tuple[LogTemplate, ...]
    bursts: tuple[Burst, ...]
    story_burst: LogTemplate
    traces: tuple[StackTrace, ...]


# -------------------------------------------------------------------------------------------- loading


def _load(name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise PhrasingError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise PhrasingError(f"{name}: expected a mapping at the top")
    return doc


def _strings(value: object, where: str, *, empty_ok: bool = False) -> tuple[str, ...]:
    """A non-empty list of strings; ``empty_ok`` admits empty strings (a greeting may be none)."""
    if not isinstance(value, list) or not value:
        raise PhrasingError(f"{where}: expected a non-empty list of strings")
    for item in value:
        if not isinstance(item, str) or not (item or empty_ok):
            raise PhrasingError(f"{where}: {item!r} is not a {'' if empty_ok else 'non-empty '}string")
    return tuple(value)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
        raise PhrasingError(f"{where}: expected a non-empty mapping")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PhrasingError(f"{where}: expected a non-empty string")
    return value


def _string_lists(value: object, where: str, *, empty_ok: bool = False) -> dict[str, tuple[str, ...]]:
    return {k: _strings(v, f"{where}.{k}", empty_ok=empty_ok) for k, v in _mapping(value, where).items()}


@cache
def slot_values() -> SlotValues:
    """The contents of ``slots.yaml``."""
    doc = _load("slots.yaml")
    names = SlotValues.__dataclass_fields__
    if set(doc) != set(names):
        raise PhrasingError(f"slots.yaml: expected the lists {sorted(names)}, got {sorted(doc)}")
    return SlotValues(**{name: _strings(doc[name], f"slots.yaml: {name}") for name in names})


@cache
def ticket_phrasings() -> TicketPhrasings:
    """The contents of ``tickets.yaml``."""
    doc = _load("tickets.yaml")
    where = "tickets.yaml: "
    pii_lines = _string_lists(doc.get("pii_lines"), where + "pii_lines")
    intents: dict[str, Intent] = {}
    for name, raw in _mapping(doc.get("intents"), where + "intents").items():
        at = f"{where}intents.{name}"
        entry = _mapping(raw, at)
        if entry.get("priority") not in PRIORITIES:
            raise PhrasingError(f"{at}.priority: one of {', '.join(PRIORITIES)}")
        pii = _strings(entry.get("pii"), f"{at}.pii")
        if unknown := set(pii) - set(pii_lines):
            raise PhrasingError(f"{at}.pii: no pii_lines for {sorted(unknown)}")
        intents[name] = Intent(
            name=name,
            priority=entry["priority"],
            asks_for_help=bool(entry.get("asks_for_help", True)),
            subjects=_strings(entry.get("subjects"), f"{at}.subjects"),
            problems=_strings(entry.get("problems"), f"{at}.problems"),
            urgent=_strings(entry["urgent"], f"{at}.urgent") if "urgent" in entry else (),
            pii=pii,
        )
    groups = {name: set(members) for name, members in _string_lists(doc.get("groups"), where + "groups").items()}
    if _HELP in groups:
        raise PhrasingError(f"{where}groups.{_HELP}: implied (every intent that asks for help), not to be defined")
    groups[_HELP] = {name for name, intent in intents.items() if intent.asks_for_help}
    for name, members in groups.items():
        if unknown := members - set(intents):
            raise PhrasingError(f"{where}groups.{name}: unknown intents {sorted(unknown)}")

    def resolve(names: tuple[str, ...], at: str) -> set[str]:
        found: set[str] = set()
        for name in names:
            if name in groups:
                found |= groups[name]
            elif name in intents:
                found.add(name)
            else:
                raise PhrasingError(f"{at}: {name!r} is neither an intent nor a group")
        return found

    details: list[tuple[str, set[str]]] = []
    for i, raw in enumerate(doc.get("details") or []):
        at = f"{where}details[{i}]"
        entry = _mapping(raw, at)
        fits = resolve(_strings(entry.get("for"), f"{at}.for"), f"{at}.for")
        if "except" in entry:
            fits -= resolve(_strings(entry["except"], f"{at}.except"), f"{at}.except")
        details.append((_text(entry.get("text"), f"{at}.text"), fits))
    foreign: list[ForeignTicket] = []
    for i, raw in enumerate(doc.get("foreign") or []):
        at = f"{where}foreign[{i}]"
        entry = _mapping(raw, at)
        ticket = ForeignTicket(
            **{k: _text(entry.get(k), f"{at}.{k}") for k in ("language", "intent", "subject", "body")}
        )
        if ticket.intent not in intents:
            raise PhrasingError(f"{at}.intent: unknown intent {ticket.intent!r}")
        foreign.append(ticket)
    return TicketPhrasings(
        intents=intents,
        foreign=tuple(foreign),
        greetings=_string_lists(doc.get("greetings"), where + "greetings", empty_ok=True),
        closings=_string_lists(doc.get("closings"), where + "closings", empty_ok=True),
        details_for={name: tuple(text for text, fits in details if name in fits) for name in intents},
        angry_openers=_strings(doc.get("angry_openers"), where + "angry_openers"),
        angry_closers=_strings(doc.get("angry_closers"), where + "angry_closers"),
        joiners=_strings(doc.get("joiners"), where + "joiners"),
        pii_lines=pii_lines,
        urgent_subject_prefixes=_strings(doc.get("urgent_subject_prefixes"), where + "urgent_subject_prefixes"),
        multi_subject_suffixes=_strings(
            doc.get("multi_subject_suffixes"), where + "multi_subject_suffixes", empty_ok=True
        ),
    )


def _template(raw: object, at: str) -> LogTemplate:
    entry = _mapping(raw, at)
    weight = entry.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise PhrasingError(f"{at}.weight: expected a positive number")
    if entry.get("style") not in LOG_STYLES:
        raise PhrasingError(f"{at}.style: one of {', '.join(sorted(LOG_STYLES))}")
    return LogTemplate(
        weight=float(weight),
        style=entry["style"],
        service=_text(entry.get("service"), f"{at}.service"),
        level=_text(entry.get("level"), f"{at}.level"),
        text=_text(entry.get("text"), f"{at}.text"),
        fields=_strings(entry["fields"], f"{at}.fields") if "fields" in entry else (),
    )


@cache
def log_phrasings() -> LogPhrasings:
    """The contents of ``logs.yaml``."""
    doc = _load("logs.yaml")
    where = "logs.yaml: "

    def templates(key: str) -> tuple[LogTemplate, ...]:
        raws = doc.get(key)
        if not isinstance(raws, list) or not raws:
            raise PhrasingError(f"{where}{key}: expected a non-empty list of templates")
        return tuple(_template(raw, f"{where}{key}[{i}]") for i, raw in enumerate(raws))

    bursts = templates("bursts")
    keeps = [
        _strings(raw["keep"], f"{where}bursts[{i}].keep") if "keep" in raw else ()
        for i, raw in enumerate(doc["bursts"])
    ]
    story = [t for t, raw in zip(bursts, doc["bursts"], strict=True) if raw.get("story") is True]
    if len(story) != 1:
        raise PhrasingError(f"{where}bursts: exactly one burst is marked story: true, not {len(story)}")
    traces: list[StackTrace] = []
    for i, raw in enumerate(doc.get("traces") or []):
        at = f"{where}traces[{i}]"
        entry = _mapping(raw, at)
        cause = _mapping(entry["cause"], f"{at}.cause") if "cause" in entry else None
        traces.append(
            StackTrace(
                service=_text(entry.get("service"), f"{at}.service"),
                headline=_text(entry.get("headline"), f"{at}.headline"),
                exception=_text(entry.get("exception"), f"{at}.exception"),
                frames=_strings(entry.get("frames"), f"{at}.frames"),
                cause=_text(cause.get("exception"), f"{at}.cause.exception") if cause is not None else None,
                cause_frames=_strings(cause.get("frames"), f"{at}.cause.frames") if cause is not None else (),
            )
        )
    if not traces:
        raise PhrasingError(f"{where}traces: expected a non-empty list")
    return LogPhrasings(
        routine=templates("routine"),
        rare=templates("rare"),
        bursts=tuple(Burst(t, keep) for t, keep in zip(bursts, keeps, strict=True)),
        story_burst=story[0],
        traces=tuple(traces),
    )
