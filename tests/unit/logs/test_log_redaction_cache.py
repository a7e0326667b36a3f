"""Log redaction remembers recent messages: a repeated line gets exactly what a first sighting gets."""

from __future__ import annotations

from streamer.logs import triage
from streamer.triage.pii import find_pii, redact


def test_a_repeated_message_is_redacted_as_the_first_time() -> None:
    line = "Failed password for root from 203.0.113.9 port 41234 ssh2, reply to bob@example.com"
    triage._SEEN.clear()
    first = triage._redacted(line)
    assert first is not None and first == redact(line)
    assert line in triage._SEEN
    again = triage._redacted(line)
    assert again == first
    assert [s.value for s in again.spans] == [s.value for s in find_pii(line)]


def test_messages_without_personal_data_are_remembered_as_such() -> None:
    triage._SEEN.clear()
    line = "GET /healthz 200 in 3 ms from 10.0.0.256"
    assert triage._redacted(line) is None
    assert triage._redacted(line) is None


def test_the_memory_is_bounded_in_entries_and_in_message_length() -> None:
    triage._SEEN.clear()
    for i in range(triage._SEEN_MAX + 50):
        triage._redacted(f"connection {i} from 10.0.{i % 250}.{i % 200}")
        assert len(triage._SEEN) <= triage._SEEN_MAX
    long_line = "from 10.0.0.1 " + "x" * triage._SEEN_MAX_CHARS
    red = triage._redacted(long_line)
    assert red is not None and red.counts == {"IP": 1}
    assert long_line not in triage._SEEN
