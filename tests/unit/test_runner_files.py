"""The files ``streamer produce`` reads: JSON Lines as Windows editors save them too."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.runner import read_jsonl


def test_tickets_file_with_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "T-1", "body": "hi"}\r\n\r\n{"id": "T-2", "body": "yo"}\r\n')
    assert [doc["id"] for doc in read_jsonl(path)] == ["T-1", "T-2"]


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(b'{"id": "T-1"}\n\xef\xbb\xbf{"id": "T-2"}\n')  # a mark inside the file is no mark
    with pytest.raises(ConfigError, match=r"tickets\.jsonl:2: not valid JSON"):
        list(read_jsonl(path))
