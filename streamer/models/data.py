"""Read labelled examples from CSV or JSON Lines, with a clear error naming file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.models.errors import DataError
from streamer.tables import table_rows

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


def read_examples(path: Path, text_col: str = "text", label_col: str = "label") -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from ``path``; rows with an empty label are errors, empty texts are kept."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    texts: list[str] = []
    labels: list[str] = []
    if suffix in CSV_SUFFIXES:
        with table_rows(path, CSV_SUFFIXES[suffix]) as reader:
            missing = [c for c in (text_col, label_col) if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: column(s) {missing} not found; columns are {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                _append(path, line, row.get(text_col), row.get(label_col), texts, labels, label_col)
    elif suffix in JSONL_SUFFIXES:
        with path.open(encoding="utf-8-sig") as fh:  # with or without a byte order mark
            for line, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except ValueError as exc:
                    raise DataError(f"{path}:{line}: invalid JSON ({exc})") from exc
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{line}: expected an object")
                if text_col not in row:
                    raise DataError(f"{path}:{line}: field {text_col!r} is missing")
                _append(path, line, row.get(text_col), row.get(label_col), texts, labels, label_col)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv or .jsonl)")
    if not texts:
        raise DataError(f"{path}: no examples")
    return texts, labels


def _append(
    path: Path,
    line: int,
    text: object,
    label: object,
    texts: list[str],
    labels: list[str],
    label_col: str,
) -> None:
    if label is None or str(label).strip() == "":
        raise DataError(f"{path}:{line}: empty {label_col!r}")
    texts.append("" if text is None else str(text))
    labels.append(str(label).strip())


def read_texts(path: Path, text_col: str = "text") -> list[str]:
    """Texts without labels: the ``text_col`` of a CSV/TSV/JSONL file, or the non-empty lines of any other."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        with table_rows(path, CSV_SUFFIXES[suffix]) as reader:
            if text_col not in (reader.fieldnames or []):
                raise DataError(f"{path}: column {text_col!r} not found; columns are {reader.fieldnames}")
            texts = [row.get(text_col) or "" for row in reader]
    elif suffix in JSONL_SUFFIXES:
        texts = []
        with path.open(encoding="utf-8-sig") as fh:  # with or without a byte order mark
            for line, raw in enumerate(fh, start=1):
                if raw.strip():
                    try:
                        row = json.loads(raw)
                    except ValueError as exc:
                        raise DataError(f"{path}:{line}: invalid JSON ({exc})") from exc
                    if not isinstance(row, dict) or not isinstance(row.get(text_col), str):
                        raise DataError(f"{path}:{line}: expected an object with a string {text_col!r}")
                    texts.append(row[text_col])
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"{path}: no texts")
    return texts
