"""Properties of the miner's global rules: ids independent of order and process, superseding, bounded state."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.logs.templates import MinerConfig, TemplateMiner

REPO = Path(__file__).resolve().parents[3]

# Lines that exercise every rule: key=value values with two values under one key, booleans, dotted
# identifiers under a shared head, values spanning a varying number of masked tokens, plain words.
CORPUS = [
    *(f"keyguard state visible={v} occluded=false" for v in ("true", "false")),
    *(f"received broadcast android.intent.action.{a}" for a in ("TIME_TICK", "BATTERY_CHANGED", "TIME_TICK")),
    *(f"getRecentTasks: num={n},flags={f}" for n, f in ((20, 62), (21, 3))),
    *(f"getRecentTasks: topActivity=ComponentInfo{{{c}}}" for c in ("com.a/.Main", "com.b/.Splash")),
    *(f"session opened for user {u} by (uid={n})" for u, n in (("root", 0), ("bob", 1000), ("eve", 1001))),
    *(f"copied {n} files in {t}" for n, t in (("3", "12 ms"), ("4 000", "1 2 s"), ("12", "7 ms"))),
    "Failed password for root from <IP> port 22 ssh2",
    "Failed none for root from <IP> port 22 ssh2",
    "Disk quota exceeded",
]


def final_ids(lines: list[str], config: MinerConfig | None = None) -> dict[str, str]:
    m = TemplateMiner(config)
    added = [(line, m.add(line).id) for line in lines]
    out: dict[str, str] = {}
    for line, tid in added:
        t = m.resolve(tid)
        assert t is not None
        out[line] = t.id
    return out


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_final_ids_do_not_depend_on_input_order(rnd: random.Random) -> None:
    expected = final_ids(CORPUS)
    shuffled = CORPUS[:]
    rnd.shuffle(shuffled)
    assert final_ids(shuffled) == expected


def test_final_ids_are_the_same_in_another_process() -> None:
    code = (
        "import json, sys; from streamer.logs.templates import TemplateMiner\n"
        "lines = json.loads(sys.stdin.read()); m = TemplateMiner()\n"
        "ids = [m.add(l).id for l in lines]\n"
        "print(json.dumps([m.resolve(i).id for i in ids]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(CORPUS[::-1]), capture_output=True, text=True, env=env,
        cwd=REPO, check=True,
    )  # fmt: skip
    there = dict(zip(CORPUS[::-1], json.loads(done.stdout), strict=True))
    assert there == final_ids(CORPUS)


def test_two_values_under_one_key_generalise_and_supersede() -> None:
    m = TemplateMiner()
    first = m.add("keyguard state visible=true occluded=false")
    assert m.changes().new == [first]
    second = m.add("keyguard state visible=false occluded=false")
    changes = m.changes()
    assert second.text == "keyguard state visible=<*> occluded=<*>"
    # true/false are masked values, so both lines were one template from the start: nothing superseded
    assert first.id == second.id and not changes.superseded
    a = m.add("received broadcast android.intent.action.TIME_TICK")
    m.changes()
    b = m.add("received broadcast android.intent.action.BATTERY_CHANGED")
    changes = m.changes()
    assert b.text == "received broadcast android.intent.action.<*>"
    assert changes.superseded == [(a, b)] and m.resolve(a.id) == b


def test_different_keys_never_share_a_position() -> None:
    m = TemplateMiner()
    lines = [
        *(f"getRecentTasks: num={n},flags={f}" for n, f in ((20, 62), (21, 3))),
        *(f"getRecentTasks: topActivity=ComponentInfo{{{c}}}" for c in ("com.a/.Main", "com.b/.Splash", "x.y/.Z")),
    ]
    ids = [m.add(line).id for line in lines]
    final = [m.resolve(i) for i in ids]
    assert final[0] == final[1] and final[2] == final[3] == final[4] and final[0] != final[2]
    assert final[2] is not None and final[2].text == "getRecentTasks: topActivity=ComponentInfo{<*>}"


def test_words_without_a_shared_head_still_need_three_values() -> None:
    m = TemplateMiner()
    a = m.add("Failed password for root from <IP> port <*> ssh2")
    b = m.add("Failed none for root from <IP> port <*> ssh2")
    assert m.resolve(a.id) != m.resolve(b.id)


def test_a_value_spanning_several_tokens_keeps_one_template() -> None:
    m = TemplateMiner()
    ids = {m.resolve(m.add(f"copied {n} files in {t}").id).id for n, t in (("3", "12 ms"), ("4 000", "1 2 ms"))}  # type: ignore[union-attr]
    assert len(ids) == 1


def test_state_stays_bounded_over_100k_distinct_lines() -> None:
    config = MinerConfig(max_templates=2_000, cache_size=20_000)
    m = TemplateMiner(config)
    rnd = random.Random(3)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(4_000)]

    def line(i: int) -> str:
        return f"{words[i % 4_000]} {words[(i * 7) % 3_999]} {words[(i * 13) % 3_989]} event {i}"

    tracemalloc.start()
    try:
        for i in range(50_000):
            m.add(line(i))
            if i % 1_000 == 0:
                m.changes()
        half, _ = tracemalloc.get_traced_memory()
        for i in range(50_000, 100_000):
            m.add(line(i))
            if i % 1_000 == 0:
                m.changes()
        full, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(m) <= config.max_templates + 64  # plus one catch-all per length
    assert len(m._cache) <= config.cache_size
    assert m.overflow > 0
    assert full < half * 1.15 + 2_000_000, (half, full)
