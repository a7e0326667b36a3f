"""Offset ranges of a replay from a window and what Kafka answered, without a broker."""

from __future__ import annotations

import pytest

from streamer.errors import ConfigError
from streamer.replay.ranges import (
    PartitionRange,
    Window,
    format_ms,
    parse_partitions,
    parse_time,
    plan_ranges,
    select_partitions,
)

T0 = parse_time("2026-11-27T00:00Z")
HOUR = 3_600_000


def spans(ranges: list[PartitionRange]) -> dict[int, tuple[int, int]]:
    return {r.partition: (r.start, r.end) for r in ranges}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T00:00Z", 1795737600000),
        ("2026-11-27T00:00:00+00:00", 1795737600000),
        ("2026-11-27T01:00+01:00", 1795737600000),
        ("2026-11-27T00:00", 1795737600000),  # no zone: UTC
        ("2026-11-27", 1795737600000),
        ("1795737600000", 1795737600000),
        ("2026-11-27T00:00:00.250Z", 1795737600250),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text) == expected


def test_parse_time_rejects_nonsense_and_format_round_trips() -> None:
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("yesterday")
    assert format_ms(T0) == "2026-11-27T00:00:00.000Z"
    assert parse_time(format_ms(T0 + 1234) or "") == T0 + 1234
    assert format_ms(None) is None


def test_no_bounds_is_everything_the_partitions_hold() -> None:
    ranges, notes = plan_ranges(Window(), beginning={0: 0, 1: 5}, end={0: 10, 1: 7})
    assert spans(ranges) == {0: (0, 10), 1: (5, 7)}
    assert [r.count for r in ranges] == [10, 2]
    assert notes == []


def test_time_window_uses_the_lookups_per_partition() -> None:
    window = Window(from_ms=T0, to_ms=T0 + HOUR)
    ranges, _ = plan_ranges(
        window,
        beginning={0: 0, 1: 0, 2: 0},
        end={0: 10, 1: 8, 2: 5},
        from_lookup={0: 3, 1: 3, 2: 3},
        to_lookup={0: 7, 1: None, 2: 4},  # partition 1: nothing at or after `to`, so up to its end offset
    )
    assert spans(ranges) == {0: (3, 7), 1: (3, 8), 2: (3, 4)}


def test_from_after_the_last_record_replays_nothing_not_everything() -> None:
    window = Window(from_ms=T0 + 10 * HOUR)
    ranges, _ = plan_ranges(window, beginning={0: 0, 1: 2}, end={0: 10, 1: 8}, from_lookup={0: None, 1: None})
    assert spans(ranges) == {0: (10, 10), 1: (8, 8)}
    assert sum(r.count for r in ranges) == 0


def test_window_with_to_before_every_record_is_empty() -> None:
    window = Window(from_ms=T0 - 2 * HOUR, to_ms=T0 - HOUR)
    ranges, _ = plan_ranges(window, {0: 4}, {0: 9}, from_lookup={0: 4}, to_lookup={0: 4})
    assert spans(ranges) == {0: (4, 4)}


def test_empty_partition() -> None:
    ranges, _ = plan_ranges(Window(from_ms=T0), {0: 0}, {0: 0}, from_lookup={0: None})
    assert spans(ranges) == {0: (0, 0)}


def test_offsets_narrow_the_time_window() -> None:
    window = Window(from_ms=T0, to_ms=T0 + HOUR, from_offset=5, to_offset=6)
    ranges, _ = plan_ranges(window, {0: 0, 1: 0}, {0: 10, 1: 10}, {0: 3, 1: 7}, {0: 8, 1: 9})
    # partition 0: max(3, 5) .. min(8, 6); partition 1: starts at 7, past --to-offset 6: empty
    assert spans(ranges) == {0: (5, 6), 1: (7, 7)}


def test_offsets_are_clamped_to_what_the_partition_holds_with_notes() -> None:
    window = Window(from_offset=2, to_offset=100)
    ranges, notes = plan_ranges(window, beginning={0: 5, 1: 0, 2: 0}, end={0: 20, 1: 1, 2: 50})
    assert spans(ranges) == {0: (5, 20), 1: (1, 1), 2: (2, 50)}
    assert any("partition 0" in n and "retention" in n for n in notes)
    assert any("partition 1" in n and "past the end" in n for n in notes)


def test_lookup_beyond_the_planned_end_is_clamped() -> None:
    # Records that arrive between the end-offset read and the time lookup are not part of the replay.
    ranges, _ = plan_ranges(Window(from_ms=T0), {0: 0}, {0: 10}, from_lookup={0: 12})
    assert spans(ranges) == {0: (10, 10)}


def test_range_membership_and_dict() -> None:
    r = PartitionRange(partition=2, start=3, end=7, beginning=0, end_offset=9)
    assert 3 in r and 6 in r and 7 not in r and 2 not in r and "3" not in r
    assert r.to_dict() == {"partition": 2, "start": 3, "end": 7, "count": 4, "beginning": 0, "end_offset": 9}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"from_ms": T0, "to_ms": T0}, "must be before"),
        ({"from_ms": T0 + 1, "to_ms": T0}, "must be before"),
        ({"from_offset": 5, "to_offset": 5}, "must be below"),
        ({"from_offset": -1}, "0 or more"),
    ],
)
def test_invalid_windows(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Window(**kwargs)


def test_a_time_bound_needs_its_lookup() -> None:
    with pytest.raises(ValueError, match="offsets_for_times"):
        plan_ranges(Window(from_ms=T0), {0: 0}, {0: 1})


def test_window_contains_time() -> None:
    window = Window(from_ms=T0, to_ms=T0 + 10)
    assert window.contains_time(T0) and window.contains_time(T0 + 9) and window.contains_time(None)
    assert not window.contains_time(T0 - 1) and not window.contains_time(T0 + 10)


def test_partitions() -> None:
    assert parse_partitions("2, 0,2") == (0, 2)
    with pytest.raises(ConfigError):
        parse_partitions("0,x")
    with pytest.raises(ConfigError, match="is not a partition number"):
        parse_partitions("0,\u00b2")  # a superscript two is a digit to str.isdigit(), not to int()
    with pytest.raises(ConfigError):
        parse_partitions(",")
    assert select_partitions([0, 1, 2], None) == [0, 1, 2]
    assert select_partitions([0, 1, 2], (2, 0)) == [0, 2]
    with pytest.raises(ConfigError, match="no partition 7"):
        select_partitions([0, 1, 2], (0, 7))
