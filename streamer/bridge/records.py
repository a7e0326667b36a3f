"""Records the bridge reads and writes: escalations in, answers and dead letters out. Pure.

Every output carries the escalation's id (the idempotency key: the bridge delivers at least once) and
where the escalation was read, so an answer can be joined back and traced to its offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from streamer.bridge.answers import Answer
from streamer.bridge.llm import Completion
from streamer.bridge.prompt import PiiFinding
from streamer.events import DecodeFailure, DecodeLimits, Output, RawEvent, dead_letter, decode_record, encode
from streamer.privacy import redact_fields
from streamer.topics import DEADLETTER, LLM_RESPONSES
from streamer.triage.pii import redact


@dataclass(frozen=True, slots=True)
class Escalation:
    """A schema-valid ``escalation.v1.json`` record and where it was read."""

    id: str
    doc: Mapping[str, Any]
    raw: RawEvent

    @property
    def key(self) -> bytes:
        """The key of every record written for it: the escalation's own key (the worker gave it the
        ticket's input key), or the id when it has none. The same rule as the worker's outputs."""
        return self.raw.key if self.raw.key is not None else self.id.encode()


def decode_escalation(raw: RawEvent, validator: Draft202012Validator, max_bytes: int) -> Escalation | DecodeFailure:
    """Bytes to a checked escalation, or a failure with the dead-letter code and the first bad field."""
    doc = decode_record(raw, validator, DecodeLimits(max_event_bytes=max_bytes))
    if isinstance(doc, DecodeFailure):
        return doc
    return Escalation(id=doc["id"], doc=doc, raw=raw)


def response_record(
    escalation: Escalation,
    answer: Answer,
    completion: Completion,
    *,
    prompt_version: str,
    answered_at: str,
    latency_ms: float,
) -> dict[str, Any]:
    """The ``llm_response.v1.json`` record of a valid answer.

    ``llm.responses.v1`` is fully masked like the escalations (``streamer.privacy``): personal data the
    model wrote on its own is masked too, numbered after every placeholder of the escalation, so a
    consumer filling the escalation's placeholders back cannot put a value where the model invented one.
    """
    doc = escalation.doc
    context = [str(doc.get("redacted_subject") or ""), str(doc.get("redacted_text") or "")]
    summary, reply = redact_fields([answer.summary, answer.suggested_reply], context=context)
    return {
        "id": escalation.id,
        "kind": doc.get("kind", "ticket"),
        "intent": answer.intent,
        "priority": answer.priority,
        "summary": summary,
        "suggested_reply": reply,
        "model": completion.model,
        "small_model": {**doc.get("model", {}), "intent": _small_intent(doc)},
        "source": escalation.raw.source.to_dict(),
        "prompt_version": prompt_version,
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.total_tokens,
        },
        "attempts": completion.attempts,
        "latency_ms": round(max(latency_ms, 0.0), 3),
        "answered_at": answered_at,
    }


def _small_intent(doc: Mapping[str, Any]) -> str | None:
    candidates: Sequence[Mapping[str, Any]] = doc.get("candidates") or []
    return str(candidates[0]["label"]) if candidates else None


def answer_output(escalation: Escalation, record: Mapping[str, Any]) -> Output:
    return Output(LLM_RESPONSES, escalation.key, record)


def dead_letter_output(failure: DecodeFailure, failed_at: str) -> Output:
    return Output(DEADLETTER, failure.raw.key, dead_letter(failure, failed_at))


def invalid_answer_failure(escalation: Escalation, raw_answer: str, message: str, field: str | None) -> DecodeFailure:
    """A dead letter whose raw value is the answer as the model wrote it, traced to the escalation."""
    raw = RawEvent(value=raw_answer.encode("utf-8", "replace"), source=escalation.raw.source, key=escalation.key)
    return DecodeFailure(raw, "invalid_answer", message, field=field, id=escalation.id)


def pii_failure(escalation: Escalation, findings: Sequence[PiiFinding]) -> DecodeFailure:
    """A refused escalation: the dead letter keeps the record, with every string redacted.

    The dead-letter topic is read by people and keeps raw records; it must not become the place where
    the personal data the bridge refused to send ends up anyway.
    """
    cleaned = encode(_redact_strings(escalation.doc))
    leftover = redact(cleaned.decode("utf-8")).text.encode("utf-8")  # also what JSON escaping could hide
    raw = RawEvent(value=leftover, source=escalation.raw.source, key=escalation.key)
    where = ", ".join(f"{f.field} ({'/'.join(f.kinds)})" for f in findings)
    return DecodeFailure(
        raw,
        "unredacted_pii",
        f"personal data in what would be sent to the large model: {where}; not sent",
        field=findings[0].field if findings else None,
        id=escalation.id,
    )


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, Mapping):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v) for v in value]
    return value


def failure_for(escalation: Escalation, code: str, message: str) -> DecodeFailure:
    """A dead letter for an escalation the endpoint refused for good (kept whole: it passed the PII check)."""
    return DecodeFailure(escalation.raw, code, message, id=escalation.id)
