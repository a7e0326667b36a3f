"""Users' own tables (CSV, TSV), read as the spreadsheet that wrote them meant.

Excel's "CSV UTF-8" starts with a byte order mark, which would otherwise become part of the first column's
name (``\\ufefftext`` is not ``text``); a log line in a cell, a stack trace, passes the ``csv`` module's
default limit of 131,072 characters a field.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The longest cell read: far above any log line or ticket the topics accept (1 MB by default).
MAX_FIELD_CHARS = 16 * 1024 * 1024


@contextmanager
def table_rows(path: Path, delimiter: str = ",") -> Iterator[csv.DictReader[str]]:
    """A ``DictReader`` over ``path``: UTF-8 with or without a byte order mark, cells up to ``MAX_FIELD_CHARS``."""
    if csv.field_size_limit() < MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        yield csv.DictReader(fh, delimiter=delimiter)
