"""A loaded process fits the cyclic collector to its heap: start-up objects leave its walks, later garbage does not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streamer.runtime import YOUNG_COLLECTION_THRESHOLD, tune_garbage_collector


class _Node:
    """An object that can sit in a reference cycle and be watched with a weak reference."""

    def __init__(self) -> None:
        self.peer: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    return weakref.ref(a)


@pytest.fixture
def frozen() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_up_objects_leave_the_collector_and_later_cycles_are_still_collected(frozen: None) -> None:
    loaded = {"vocabulary": list(range(100))}
    older = gc.get_threshold()[1:]
    count = tune_garbage_collector()
    assert count >= 1
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *older)
    assert gc.get_freeze_count() == count
    tracked = {id(obj) for generation in range(3) for obj in gc.get_objects(generation)}
    assert id(loaded) not in tracked and id(loaded["vocabulary"]) not in tracked
    later = _cycle()
    assert later() is not None
    gc.collect()
    assert later() is None  # garbage made after the freeze is collected as before


def test_a_cycle_dropped_before_the_freeze_is_collected_by_it(frozen: None) -> None:
    gc.disable()  # no automatic collection may take the cycle first
    try:
        dropped = _cycle()
        assert dropped() is not None
        tune_garbage_collector()
    finally:
        gc.enable()
    assert dropped() is None  # the collection before freezing keeps start-up garbage out of the frozen heap
