"""Checking the large model's answer: what is accepted, normalised, or refused (and naming the field)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.bridge.answers import REPLY_MAX_CHARS, SUMMARY_MAX_CHARS, Answer, InvalidAnswer, parse_answer

LABELS = ("card_arrival", "refund_request", "lost_or_stolen_card")
PRIORITIES = ("urgent", "high", "normal", "low")


def answer(**fields: object) -> str:
    base: dict[str, object] = {
        "intent": "refund_request",
        "priority": "high",
        "summary": "Wants the duplicate charge refunded.",
        "suggested_reply": "We have started the refund.",
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...}).decode()


def test_valid_answer() -> None:
    got = parse_answer(answer(), LABELS, PRIORITIES)
    summary, reply = "Wants the duplicate charge refunded.", "We have started the refund."
    assert got == Answer("refund_request", "high", summary, reply)


@pytest.mark.parametrize(
    ("intent", "expected"),
    [("Refund Request", "refund_request"), ("refund-request", "refund_request"), (" CARD_ARRIVAL ", "card_arrival")],
)
def test_labels_are_matched_loosely_and_returned_canonical(intent: str, expected: str) -> None:
    got = parse_answer(answer(intent=intent, priority="HIGH"), LABELS, PRIORITIES)
    assert isinstance(got, Answer)
    assert (got.intent, got.priority) == (expected, "high")


def test_other_is_always_allowed() -> None:
    got = parse_answer(answer(intent="Other"), LABELS, PRIORITIES)
    assert isinstance(got, Answer) and got.intent == "other"


def test_code_fence_and_extra_fields_and_missing_reply() -> None:
    fenced = "```json\n" + answer(confidence=0.9, suggested_reply=...) + "\n```"
    got = parse_answer(fenced, LABELS, PRIORITIES)
    assert isinstance(got, Answer)
    assert got.suggested_reply == ""


@pytest.mark.parametrize(
    ("content", "field", "fragment"),
    [
        ("Sure! It is a refund.", None, "not valid JSON"),
        ("[1, 2]", None, "expected a JSON object"),
        ('"refund_request"', None, "expected a JSON object"),
        (answer(intent="teleportation"), "intent", "not one of the 4 allowed labels"),
        (answer(intent=...), "intent", "missing"),
        (answer(intent=7), "intent", "not a string"),
        (answer(priority="whenever"), "priority", "not one of the 4"),
        (answer(summary="   "), "summary", "blank"),
        (answer(summary=...), "summary", "missing"),
        (answer(summary="x" * (SUMMARY_MAX_CHARS + 1)), "summary", "more than"),
        (answer(suggested_reply=["a"]), "suggested_reply", "not a string"),
        (answer(suggested_reply="x" * (REPLY_MAX_CHARS + 1)), "suggested_reply", "more than"),
    ],
)
def test_invalid_answers_name_the_problem(content: str, field: str | None, fragment: str) -> None:
    got = parse_answer(content, LABELS, PRIORITIES)
    assert isinstance(got, InvalidAnswer)
    assert got.field == field
    assert fragment in got.message


def test_long_invented_label_is_shortened_in_the_message() -> None:
    got = parse_answer(answer(intent="z" * 500), LABELS, PRIORITIES)
    assert isinstance(got, InvalidAnswer) and len(got.message) < 200


@given(st.text(max_size=300))
def test_never_raises(content: str) -> None:
    assert isinstance(parse_answer(content, LABELS, PRIORITIES), (Answer, InvalidAnswer))


@pytest.mark.parametrize(
    "content",
    [
        "Here is my answer:\n" + answer(),
        "Sure. {not json} The result: " + answer() + "\nHope this helps {really}.",
        "I looked at the ticket.\n\n```json\n" + answer() + "\n```\nLet me know if you need more.",
        "```\n" + answer() + "\n```",
        'Context: {"note": "no intent here"} and the answer ' + answer(),
    ],
)
def test_json_after_prose_or_in_a_fence_anywhere_is_extracted(content: str) -> None:
    got = parse_answer(content, LABELS, PRIORITIES)
    assert isinstance(got, Answer), got
    assert (got.intent, got.priority) == ("refund_request", "high")


def test_prose_with_only_broken_or_nested_braces_is_still_invalid() -> None:
    for content in ("It is {refund_request} I think", "{" * 5000, "Answer: {'intent': 'refund_request'}"):
        got = parse_answer(content, LABELS, PRIORITIES)
        assert isinstance(got, InvalidAnswer) and "not valid JSON" in got.message
