"""Checking the large model's answer before anyone acts on it.

A JSON-mode answer is still free text from a model: it can miss fields, invent labels or ramble. Only an
answer whose intent is one of the labels it was offered (or ``other``) and whose priority is a known one
is written to ``llm.responses.v1``; anything else goes to the dead-letter topic with the raw answer, so
downstream consumers and the feedback export never see a label the models do not have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamer.bridge.prompt import OTHER

SUMMARY_MAX_CHARS = 1000
REPLY_MAX_CHARS = 4000

_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)\n?```", re.DOTALL)
#: Most ``{`` positions tried when looking for an object inside prose (bounded work on hostile text).
MAX_OBJECT_STARTS = 50
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Answer:
    """A valid answer; ``intent`` and ``priority`` are spelled as in the label set."""

    intent: str
    priority: str
    summary: str
    suggested_reply: str


@dataclass(frozen=True, slots=True)
class InvalidAnswer:
    """Why an answer was refused, and which field (``None`` when the whole answer is unusable)."""

    message: str
    field: str | None = None


def normalise_label(label: str) -> str:
    """How labels are compared: case, spaces and dashes do not matter (``Card Arrival`` is ``card_arrival``)."""
    return re.sub(r"[\s\-]+", "_", label.strip().lower())


def _label(value: Any, allowed: Sequence[str], field: str) -> str | InvalidAnswer:
    if not isinstance(value, str) or not value.strip():
        return InvalidAnswer(f"{field}: missing or not a string", field)
    lookup = {normalise_label(label): label for label in allowed}
    found = lookup.get(normalise_label(value))
    if found is None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        return InvalidAnswer(f"{field}: {shown!r} is not one of the {len(allowed)} allowed labels", field)
    return found


def find_object(text: str) -> dict[str, Any] | None:
    """The JSON object a model wrapped in words: the first in a Markdown code fence, else the first
    ``{...}`` in the text that parses as an object (one with an ``intent`` preferred). ``None`` if none."""
    for block in _FENCE.finditer(text):
        try:
            doc = orjson.loads(block.group(1).strip())
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            return doc
    first: dict[str, Any] | None = None
    start = text.find("{")
    tries = 0
    while start != -1 and tries < MAX_OBJECT_STARTS:
        tries += 1
        try:
            doc, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):  # no JSON value starts here, or it nests too deep
            start = text.find("{", start + 1)
            continue
        if isinstance(doc, dict):
            if "intent" in doc:
                return doc
            first = first or doc
        start = text.find("{", end)
    return first


def parse_answer(content: str, labels: Sequence[str], priorities: Sequence[str]) -> Answer | InvalidAnswer:
    """The answer in ``content`` checked against the labels it was offered; never raises.

    Accepted leniently: a JSON object inside a Markdown code fence or after (or between) sentences of
    prose, labels differing in case, spaces or dashes, extra fields (ignored), a missing
    ``suggested_reply`` (empty). Refused: an answer holding no JSON object, an unknown intent or priority,
    a blank or over-long summary, an over-long reply.
    """
    text = content.strip()
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        found = find_object(text)
        if found is None:
            return InvalidAnswer(f"not valid JSON: {exc}")
        doc = found
    if not isinstance(doc, dict):
        return InvalidAnswer(f"expected a JSON object, got {type(doc).__name__}")
    intent = _label(doc.get("intent"), [*labels, OTHER] if OTHER not in labels else list(labels), "intent")
    if isinstance(intent, InvalidAnswer):
        return intent
    priority = _label(doc.get("priority"), priorities, "priority")
    if isinstance(priority, InvalidAnswer):
        return priority
    summary = doc.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        return InvalidAnswer("summary: missing, blank or not a string", "summary")
    if len(summary) > SUMMARY_MAX_CHARS:
        return InvalidAnswer(f"summary: {len(summary)} characters, more than {SUMMARY_MAX_CHARS}", "summary")
    reply = doc.get("suggested_reply", "")
    if reply is None:
        reply = ""
    if not isinstance(reply, str):
        return InvalidAnswer("suggested_reply: not a string", "suggested_reply")
    if len(reply) > REPLY_MAX_CHARS:
        return InvalidAnswer(
            f"suggested_reply: {len(reply)} characters, more than {REPLY_MAX_CHARS}", "suggested_reply"
        )
    return Answer(intent=intent, priority=priority, summary=summary.strip(), suggested_reply=reply.strip())
