"""Which offsets a replay reads: per partition, from a time window and/or explicit offsets.

Pure: what Kafka answers (beginning and end offsets, ``offsets_for_times`` lookups) comes in as plain
mappings, so the edge cases (a window after the end, offsets lost to retention, an inverted range) are
tested without a broker. Ranges are half-open, ``[start, end)``, like Kafka's end offsets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from streamer.errors import ConfigError

_DIGITS = re.compile(r"^-?\d+$")


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from ISO 8601 (``2026-11-27T00:00Z``; no zone means UTC) or digits (ms)."""
    value = text.strip()
    if _DIGITS.match(value):
        return int(value)
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ConfigError(f"not a time: {text!r} (use ISO 8601 such as 2026-11-27T00:00Z, or epoch ms)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def format_ms(ms: int | None) -> str | None:
    """ISO 8601 UTC with milliseconds, the way reports show times."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Window:
    """What to replay: a time window and/or offsets; every bound optional, the end ones exclusive."""

    from_ms: int | None = None
    to_ms: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def __post_init__(self) -> None:
        for name in ("from_offset", "to_offset"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
        if self.from_ms is not None and self.to_ms is not None and self.from_ms >= self.to_ms:
            raise ConfigError(f"--from ({format_ms(self.from_ms)}) must be before --to ({format_ms(self.to_ms)})")
        if self.from_offset is not None and self.to_offset is not None and self.from_offset >= self.to_offset:
            raise ConfigError(f"--from-offset ({self.from_offset}) must be below --to-offset ({self.to_offset})")

    def contains_time(self, ms: int | None) -> bool:
        """Whether a record's timestamp lies in ``[from, to)``; records without one count as inside."""
        if ms is None:
            return True
        if self.from_ms is not None and ms < self.from_ms:
            return False
        return not (self.to_ms is not None and ms >= self.to_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": format_ms(self.from_ms),
            "to": format_ms(self.to_ms),
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "from_offset": self.from_offset,
            "to_offset": self.to_offset,
        }


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition, and what the partition held when they were planned."""

    partition: int
    start: int
    end: int
    beginning: int
    end_offset: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)

    def __contains__(self, offset: object) -> bool:
        return isinstance(offset, int) and self.start <= offset < self.end

    def to_dict(self) -> dict[str, int]:
        return {
            "partition": self.partition,
            "start": self.start,
            "end": self.end,
            "count": self.count,
            "beginning": self.beginning,
            "end_offset": self.end_offset,
        }


def plan_ranges(
    window: Window,
    beginning: Mapping[int, int],
    end: Mapping[int, int],
    from_lookup: Mapping[int, int | None] | None = None,
    to_lookup: Mapping[int, int | None] | None = None,
) -> tuple[list[PartitionRange], list[str]]:
    """Offsets to replay per partition of ``end``, plus notes on every bound that had to be clamped.

    ``from_lookup``/``to_lookup`` are ``offsets_for_times`` answers for ``window.from_ms``/``to_ms``: the
    first offset whose timestamp is at or after the time, or ``None`` when no record is. A ``from`` with
    no record after it therefore replays nothing (not everything); a ``to`` with none runs to the end
    offset. Offset bounds narrow the time bounds further. Everything is clamped to ``[beginning, end)``
    as read once, at planning time, so records arriving during the replay are not part of it.
    """
    if window.from_ms is not None and from_lookup is None:
        raise ValueError("window has a from time but no offsets_for_times answer for it")
    if window.to_ms is not None and to_lookup is None:
        raise ValueError("window has a to time but no offsets_for_times answer for it")
    ranges: list[PartitionRange] = []
    notes: list[str] = []
    for partition in sorted(end):
        hi = end[partition]
        lo = min(beginning.get(partition, 0), hi)
        start = lo
        if window.from_ms is not None:
            assert from_lookup is not None
            found = from_lookup.get(partition)
            start = hi if found is None else found
        if window.from_offset is not None:
            if window.from_offset < lo:
                notes.append(
                    f"partition {partition}: offsets below {lo} are gone (retention); starting at {lo}, "
                    f"not {window.from_offset}"
                )
            elif window.from_offset > hi:
                notes.append(f"partition {partition}: --from-offset {window.from_offset} is past the end ({hi})")
            start = max(start, window.from_offset)
        start = min(max(start, lo), hi)
        stop = hi
        if window.to_ms is not None:
            assert to_lookup is not None
            found = to_lookup.get(partition)
            if found is not None:
                stop = found
        if window.to_offset is not None:
            stop = min(stop, window.to_offset)
        stop = min(max(stop, start), hi)
        ranges.append(PartitionRange(partition, start, stop, lo, hi))
    return ranges, notes


def parse_partitions(text: str) -> tuple[int, ...]:
    """``0,2,5`` as partition numbers, sorted and without duplicates."""
    parts: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not (item.isascii() and item.isdigit()):  # not superscripts, which int() refuses
            raise ConfigError(f"--partitions: {item!r} is not a partition number (expected e.g. 0,2)")
        parts.add(int(item))
    if not parts:
        raise ConfigError("--partitions: no partition given")
    return tuple(sorted(parts))


def select_partitions(available: Sequence[int], wanted: Sequence[int] | None) -> list[int]:
    """The partitions to replay; asking for one the topic lacks is an error that lists what exists."""
    if wanted is None:
        return sorted(available)
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise ConfigError(
            f"--partitions: the topic has no partition {', '.join(map(str, missing))} "
            f"(it has {', '.join(map(str, sorted(available)))})"
        )
    return sorted(set(wanted))
