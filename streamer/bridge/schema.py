"""The JSON Schema of one answer, sent as ``response_format`` so the endpoint can constrain its output.

A server that supports structured output (OpenAI, vLLM, llama.cpp, ...) then cannot answer with a label
outside the prompt's list or forget a field; one that refuses ``json_schema`` gets ``json_object`` (with the
schema beside it, which llama-cpp-python's server honours), then nothing, and ``parse_answer`` checks (and
extracts) whatever comes back either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamer.bridge.prompt import OTHER

#: Structured-output levels, most to least specific; the client steps down when an endpoint refuses one.
LEVELS = ("json_schema", "json_object", "none")


def answer_schema(labels: Sequence[str], priorities: Sequence[str]) -> dict[str, Any]:
    """The answers ``parse_answer`` accepts (less the length limits), with one prompt's labels and priorities
    as enums."""
    intents = [*labels, OTHER] if OTHER not in labels else list(labels)
    return {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": intents},
            "priority": {"type": "string", "enum": list(priorities)},
            # No maxLength: grammar-based servers (llama.cpp) unroll it into thousands of nested rules;
            # parse_answer checks the lengths (SUMMARY_MAX_CHARS, REPLY_MAX_CHARS) and max_tokens bounds them.
            "summary": {"type": "string", "minLength": 1},
            "suggested_reply": {"type": "string"},
        },
        "required": ["intent", "priority", "summary", "suggested_reply"],
        "additionalProperties": False,
    }


def response_format(level: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` of a request at ``level`` (``None``: send none)."""
    if level == "json_schema" and schema is not None:
        return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}
    if level in ("json_schema", "json_object"):
        # ``schema`` beside ``json_object`` is the older convention (llama.cpp's Python server, Anyscale):
        # servers that know it constrain the answer to the schema, others ignore it or refuse it by name.
        return {"type": "json_object", "schema": schema} if schema is not None else {"type": "json_object"}
    return None
