"""The miner remembers the skeletons of recent lines: a repeated line is grouped as it was, memory stays bounded."""

from __future__ import annotations

from streamer.logs import templates
from streamer.logs.templates import TemplateMiner


def test_a_repeated_line_keeps_its_template_and_the_memo_stays_bounded() -> None:
    m = TemplateMiner()
    first = m.add("Accepted password for root from <IP> port 22 ssh2")
    for i in range(templates._SKELETONS_KEPT + 100):
        m.add(f"worker {i % 7} finished job {i} in {i % 13} ms")
        assert len(m._skeletons) <= templates._SKELETONS_KEPT
    again = m.add("Accepted password for root from <IP> port 22 ssh2")
    twice = m.add("Accepted password for root from <IP> port 22 ssh2")
    assert again.id == twice.id == first.id
    assert m.add("worker 1 finished job 99999 in 5 ms").id == m.add("worker 1 finished job 99999 in 5 ms").id


def test_the_memo_does_not_change_grouping() -> None:
    lines = [f"user u{i % 5} logged in from host-{i % 3} after {i} ms" for i in range(60)]
    remembered, fresh = TemplateMiner(), TemplateMiner()
    ids = [remembered.add(line).id for line in lines + lines]
    fresh_ids = []
    for line in lines + lines:
        fresh._skeletons.clear()
        fresh_ids.append(fresh.add(line).id)
    assert ids == fresh_ids
