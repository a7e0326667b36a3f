"""The demo's wording is data (streamer/demo/phrasings/*.yaml): it must load, be complete, use only
placeholders the generator can fill, ship in the package, and a broken file must say where it is broken."""

from __future__ import annotations

import copy
import fnmatch
import string
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from streamer.demo import phrasings
from streamer.demo.phrasings import (
    PRIORITIES,
    PhrasingError,
    log_phrasings,
    slot_values,
    ticket_phrasings,
)
from streamer.demo.slots import slot_names
from streamer.demo.tickets import CHANNELS

REPO = Path(__file__).resolve().parents[3]
# What a PII sentence is filled with (tickets.py draws these itself, checksums and all).
PII_VALUES = {"email", "phone", "card", "expiry", "iban", "ip"}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_file_loads_and_nothing_is_empty() -> None:
    values = slot_values()
    for name in values.__dataclass_fields__:
        items = getattr(values, name)
        assert items and all(isinstance(v, str) and v.strip() for v in items), name
    tickets = ticket_phrasings()
    assert len(tickets.intents) >= 10
    for intent in tickets.intents.values():
        assert intent.priority in PRIORITIES and intent.subjects and intent.problems and intent.pii
    assert tickets.urgent_intents and tickets.foreign
    assert {t.language for t in tickets.foreign} == {"de", "es", "fr"}
    assert set(tickets.greetings) == set(tickets.closings) == set(CHANNELS)
    assert tickets.angry_openers and tickets.angry_closers and tickets.joiners
    logs = log_phrasings()
    assert logs.routine and logs.rare and logs.bursts and logs.traces
    assert logs.story_burst in [b.template for b in logs.bursts] and logs.story_burst.level == "ERROR"


def test_help_excludes_praise_and_suggestions_and_details_fit_their_intents() -> None:
    tickets = ticket_phrasings()
    assert "praise_feedback" not in tickets.help_intents and "feature_request" not in tickets.help_intents
    assert "refund_request" in tickets.help_intents
    assert "A screenshot is attached." not in tickets.details_for["praise_feedback"]
    assert "The error code was {code}." in tickets.details_for["bug_report"]
    assert "The error code was {code}." not in tickets.details_for["password_reset"]  # an `except`
    assert all(tickets.details_for[name] for name in tickets.help_intents)


def test_texts_use_only_placeholders_the_generator_fills() -> None:
    known = slot_names()
    tickets = ticket_phrasings()
    texts = [
        *(t for i in tickets.intents.values() for t in (*i.subjects, *i.problems, *i.urgent)),
        *(t for f in tickets.foreign for t in (f.subject, f.body)),
        *(t for details in tickets.details_for.values() for t in details),
        *tickets.urgent_subject_prefixes,
        *tickets.multi_subject_suffixes,
    ]
    logs = log_phrasings()
    templates = [*logs.routine, *logs.rare, *(b.template for b in logs.bursts)]
    texts += [t.text for t in templates] + [t.headline for t in logs.traces]
    unknown = {(text, name) for text in texts for name in placeholders(text) if name not in known}
    assert unknown == set()
    for lines in tickets.pii_lines.values():
        assert all(placeholders(line) and placeholders(line) <= PII_VALUES for line in lines), lines
    for t in templates:  # a JSON record's fields are placeholders of its text
        assert set(t.fields) <= placeholders(t.text), t.text
    for b in logs.bursts:
        assert set(b.keep) <= placeholders(b.template.text), b.template.text
    for trace in logs.traces:
        assert all(placeholders(frame) <= {"line"} for frame in trace.frames)


def test_the_files_ship_with_the_package() -> None:
    """pyproject's package-data must cover every data file, or an installed streamer has no demo traffic."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["streamer"]
    files = [f for f in resources.files(phrasings).iterdir() if f.name.endswith(".yaml")]
    assert {f.name for f in files} == {"slots.yaml", "tickets.yaml", "logs.yaml"}
    for f in files:
        assert any(fnmatch.fnmatch(f"demo/phrasings/{f.name}", p) for p in patterns), f.name


_load = phrasings._load


def _broken(monkeypatch: pytest.MonkeyPatch, name: str, edit: Any) -> None:
    """Make the loader see ``name`` with ``edit`` applied (the file itself is left alone)."""
    doc = copy.deepcopy(_load(name))
    edit(doc)
    monkeypatch.setattr(phrasings, "_load", lambda wanted: doc if wanted == name else _load(wanted))


def test_a_detail_for_an_unknown_intent_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "tickets.yaml", lambda doc: doc["details"][1]["for"].append("refnud_request"))
    with pytest.raises(PhrasingError, match=r"tickets.yaml: details\[1\].for: 'refnud_request'"):
        ticket_phrasings.__wrapped__()


def test_a_bad_priority_or_pii_kind_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "tickets.yaml", lambda doc: doc["intents"]["bug_report"].update(priority="asap"))
    with pytest.raises(PhrasingError, match=r"intents.bug_report.priority"):
        ticket_phrasings.__wrapped__()
    _broken(monkeypatch, "tickets.yaml", lambda doc: doc["intents"]["bug_report"].update(pii=["passport"]))
    with pytest.raises(PhrasingError, match=r"intents.bug_report.pii: no pii_lines for \['passport'\]"):
        ticket_phrasings.__wrapped__()


def test_the_story_burst_must_be_exactly_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "logs.yaml", lambda doc: doc["bursts"][0].update(story=True))
    with pytest.raises(PhrasingError, match=r"exactly one burst is marked story: true, not 2"):
        log_phrasings.__wrapped__()


def test_a_log_template_needs_a_known_style_and_a_positive_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "logs.yaml", lambda doc: doc["rare"][2].update(style="xml"))
    with pytest.raises(PhrasingError, match=r"logs.yaml: rare\[2\].style"):
        log_phrasings.__wrapped__()
    _broken(monkeypatch, "logs.yaml", lambda doc: doc["routine"][0].update(weight=0))
    with pytest.raises(PhrasingError, match=r"logs.yaml: routine\[0\].weight"):
        log_phrasings.__wrapped__()


def test_an_empty_slot_list_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "slots.yaml", lambda doc: doc.update(cities=[]))
    with pytest.raises(PhrasingError, match=r"slots\.yaml: cities: expected a non-empty list"):
        slot_values.__wrapped__()
