"""Template mining: masking, evidence-based generalisation, and ids that are the same everywhere."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.logs.templates import MinerConfig, TemplateMiner, mask, template_id, template_record
from streamer.topics import SchemaRegistry

REPO = Path(__file__).resolve().parents[3]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")

SSH_LINES = [
    *(f"Accepted publickey for deploy from 10.0.{i}.{i + 1} port {40000 + i} ssh2" for i in range(5)),
    "Invalid user admin from 203.0.113.9 port 41234",
    "Invalid user oracle from 203.0.113.7 port 41500",
    "Invalid user test from 198.51.100.2 port 40001",
    "Invalid user admin from 198.51.100.3 port 40002",
    *(f"Connection closed by 192.0.2.{i} port {50000 + i} [preauth]" for i in range(6)),
    "Failed password for root from 192.0.2.1 port 51000 ssh2",
    "Failed none for invalid user guest from 192.0.2.1 port 51001 ssh2",
    "pam_unix(sshd:session): session opened for user deploy by (uid=0)",
    "pam_unix(sshd:session): session opened for user backup by (uid=0)",
    "pam_unix(sshd:session): session opened for user alice by (uid=1001)",
    "Received disconnect from 192.0.2.5: 11: Bye Bye [preauth]",
]


@pytest.mark.parametrize(
    ("line", "skeleton"),
    [
        ("took 1234 ms", "took <*> ms"),
        ("from 10.0.0.1:8080 to 2001:0db8::8a2e:0370:7334", "from <*>:<*> to <*>:<*>::<*>:<*>:<*>"),
        ("block blk_-1608999687919862906 stored", "block <*> stored"),
        ("id 550e8400-e29b-41d4-a716-446655440000 at 0x7ffe3a", "id <*> at <*>"),
        ("at Sun Jul  3 23:14:35 2005 and 2026-11-28T10:00:00.123Z", "at <*> and <*>"),
        ("estimated size 5.4 KB, free 378.2 MB", "estimated size <*>, free <*>"),
        ("GET https://api.example.com/v1/orders/17 done", "GET https://<*> done"),
        ("Failed password for root port 22 ssh2", "Failed password for root port <*> ssh2"),
        ("tty2 uses log4j and sha256", "tty2 uses log4j and <*>"),
        ("generating core.12345", "generating core.<*>"),
        # redacted values (kinds) glued to a slash, and a URL whose host was redacted: one value, as unredacted
        ("from /<IP> src: /<IP>:50010", "from <*> src: <*>:<*>"),
        ("split: hdfs://<IP>:9000/logs/a.log:21876+7292", "split: hdfs://<*>"),
        ("from /10.251.42.84 src: /10.251.30.6:50010", "from <*> src: <*>:<*>"),
    ],
)
def test_mask(line: str, skeleton: str) -> None:
    assert mask(line) == skeleton


def test_lines_that_differ_only_in_masked_values_share_a_template() -> None:
    m = TemplateMiner()
    a = m.add("Connection closed by 192.0.2.1 port 50000 [preauth]")
    b = m.add("Connection closed by 198.51.100.7 port 61234 [preauth]")
    assert a.id == b.id
    assert a.text == "Connection closed by <*> port <*> [preauth]"
    assert len(m) == 1


def test_two_different_words_are_two_templates() -> None:
    m = TemplateMiner()
    a = m.add("Failed password for invalid user x1 from 1.2.3.4 port 22 ssh2")
    b = m.add("Failed none for invalid user x1 from 1.2.3.4 port 22 ssh2")
    assert a.id != b.id
    assert m.resolve(a.id) == a and m.resolve(b.id) == b


def test_a_position_generalises_after_three_distinct_values() -> None:
    m = TemplateMiner()
    first = m.add("Invalid user admin from 203.0.113.9")
    second = m.add("Invalid user oracle from 203.0.113.7")
    assert first.id != second.id  # two values are not yet evidence
    changes = m.changes()
    assert {t.id for t in changes.new} == {first.id, second.id}
    third = m.add("Invalid user test from 198.51.100.2")
    assert third.text == "Invalid user <*> from <*>"
    assert m.resolve(first.id) == third and m.resolve(second.id) == third
    changes = m.changes()
    assert [t.id for t in changes.new] == [third.id]
    assert sorted(old.id for old, _ in changes.superseded) == sorted([first.id, second.id])
    assert all(new.id == third.id for _, new in changes.superseded)
    assert m.add("Invalid user zabbix from 192.0.2.44").id == third.id
    assert not m.changes()


def test_generalised_position_keeps_the_common_prefix() -> None:
    m = TemplateMiner()
    for user in ("root", "guest", "test"):
        t = m.add(f"authentication failure; logname= uid=0 tty=ssh rhost=10.0.0.1 user={user}")
    assert t.text == "authentication failure; logname= uid=<*> tty=ssh rhost=<*> user=<*>"


def test_a_masked_value_and_an_empty_one_are_the_same_field() -> None:
    m = TemplateMiner()
    a = m.add("connection from 1.2.3.4 (24-54-76-216) at 10:00:00")
    b = m.add("connection from 5.6.7.8 () at 10:00:00")
    assert m.resolve(a.id) == m.resolve(b.id)
    assert m.resolve(a.id).text == "connection from <*> (<*>) at <*>:<*>:<*>"  # type: ignore[union-attr]


def test_the_first_token_never_generalises() -> None:
    m = TemplateMiner()
    ids = {m.add(f"{daemon} startup succeeded").id for daemon in ("cupsd", "sshd", "crond", "ntpd")}
    assert len(ids) == 4


def final_ids(lines: list[str], miner: TemplateMiner) -> list[str]:
    added = [miner.add(line).id for line in lines]
    return [miner.resolve(t).id for t in added]  # type: ignore[union-attr]


def test_ids_do_not_depend_on_arrival_order() -> None:
    lines = SSH_LINES * 2
    reference = final_ids(lines, TemplateMiner())
    for seed in range(5):
        order = list(range(len(lines)))
        random.Random(seed).shuffle(order)
        got = final_ids([lines[i] for i in order], TemplateMiner())
        assert [got[order.index(i)] for i in range(len(lines))] == reference


def test_ids_are_the_same_in_another_process() -> None:
    """Another interpreter with another hash seed (another worker) computes the same ids."""
    script = (
        "import json, sys\n"
        "from streamer.logs.templates import TemplateMiner\n"
        "m = TemplateMiner()\n"
        "ids = [m.add(line).id for line in json.loads(sys.stdin.read())]\n"
        "print(json.dumps([m.resolve(i).id for i in ids]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(SSH_LINES),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == final_ids(SSH_LINES, TemplateMiner())


def test_ids_are_a_hash_of_the_template() -> None:
    t = TemplateMiner().add("Connection closed by 192.0.2.1 port 50000 [preauth]")
    assert t.id == template_id(t.tokens)
    assert t.id.startswith("T") and len(t.id) == 17


def test_snapshot_restore_keeps_ids_and_keeps_collecting_evidence() -> None:
    m = TemplateMiner()
    before = {line: m.add(line).id for line in SSH_LINES[:7]}
    restored = TemplateMiner.restore(m.snapshot())
    assert sorted(t.id for t in restored.templates()) == sorted(t.id for t in m.templates())
    for line, tid in before.items():
        assert restored.resolve(restored.add(line).id).id == m.resolve(tid).id  # type: ignore[union-attr]
    assert not restored.changes().new  # restored templates were published already
    # two users were seen before the restart, the third one after it still generalises
    restored.add("Invalid user test from 198.51.100.2 port 40001")
    assert restored.add("Invalid user zz from 198.51.100.2 port 4").text == "Invalid user <*> from <*> port <*>"


def test_restore_rejects_other_data() -> None:
    with pytest.raises(ValueError, match="snapshot"):
        TemplateMiner.restore(b'{"version": 99}')


def test_load_records_of_another_worker() -> None:
    a, b = TemplateMiner(), TemplateMiner()
    ids_a = final_ids(SSH_LINES, a)
    records = [template_record(t) for t in a.templates()]
    for rec in records:
        assert REGISTRY.errors("log_template.v1.json", rec) == []
    added = b.load(records)
    assert sorted(t.id for t in added) == sorted(t.id for t in a.templates())
    assert b.load(records) == []  # idempotent
    assert final_ids(SSH_LINES, b) == ids_a
    assert not [t for t in b.changes().new if t.id not in set(ids_a)]


def test_load_registers_superseded_aliases() -> None:
    m = TemplateMiner()
    m.load([{"template_id": "Told", "template": "x", "superseded_by": "Tnew"}])
    assert m.resolve("Told") is None  # unknown target: nothing to follow
    t = m.add("Connection closed by 192.0.2.1 port 1 [preauth]")
    m.load([{"template_id": "Tolder", "template": "y", "superseded_by": t.id}])
    assert m.resolve("Tolder") == t


def test_loaded_general_template_absorbs_specific_ones() -> None:
    m = TemplateMiner()
    specific = m.add("Invalid user admin from 203.0.113.9")
    m.changes()
    general = TemplateMiner()
    for user in ("a", "b", "c"):
        general.add(f"Invalid user {user} from 203.0.113.9")
    m.load([template_record(t) for t in general.templates()])
    assert m.resolve(specific.id).text == "Invalid user <*> from <*>"  # type: ignore[union-attr]
    assert [old.id for old, _ in m.changes().superseded] == [specific.id]


def test_past_the_template_limit_lines_fall_into_a_catch_all() -> None:
    m = TemplateMiner(MinerConfig(max_templates=2))
    m.add("alpha one")
    m.add("beta two")
    t = m.add("gamma three")
    assert t.text == "<*> <*>"
    assert m.overflow == 1
    assert m.add("alpha one").text == "alpha one"


def test_count_and_cache_survive_generalisation() -> None:
    m = TemplateMiner(MinerConfig(cache_size=2))
    for line in SSH_LINES * 3:
        m.add(line)
    total = sum(m.count(t.id) for t in m.templates())
    assert total == len(SSH_LINES) * 3


def test_placeholder_characters_in_input_are_harmless() -> None:
    m = TemplateMiner()
    t = m.add("weird \x00 input <*> with marker")
    assert "\x00" not in t.text
    assert m.add("weird \x00 input <*> with marker").id == t.id


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab c1:.-=()[]<*>\x00\n/")), max_size=40), max_size=30))
def test_mining_never_raises_and_every_line_resolves(lines: list[str]) -> None:
    m = TemplateMiner(MinerConfig(max_templates=50))
    ids = [m.add(line).id for line in lines]
    for tid in ids:
        assert m.resolve(tid) is not None
    restored = TemplateMiner.restore(m.snapshot())
    for t in m.templates():
        assert restored.resolve(t.id) is not None


def test_absolute_paths_are_values() -> None:
    """One path seen alone is already a value: its template reads as the field it is, whatever the path."""
    miner = TemplateMiner()
    a = miner.add("Directory index forbidden by rule: /var/www/html/")
    b = miner.add("Directory index forbidden by rule: /srv/site/public/")
    c = miner.add(r"Loaded stack with core: C:\Windows\winsxs\amd64_x\cbscore.dll")
    assert a.id == b.id and a.text == "Directory index forbidden by rule: <*>"
    assert c.text == "Loaded stack with core: <*>"
    # A one-segment path, a relative path and a URL's scheme stay as written (the URL's body is a value anyway).
    assert miner.add("Resolved node to /default-rack").text == "Resolved node to /default-rack"
    assert miner.add("opened conf/site.xml").text == "opened conf/site.xml"
    assert miner.add("fetched https://example.org/a/b").text == "fetched https://<*>"


def test_paths_stay_words_when_path_masking_is_off() -> None:
    miner = TemplateMiner(MinerConfig(mask_paths=False))
    a = miner.add("Directory index forbidden by rule: /var/www/html/")
    b = miner.add("Directory index forbidden by rule: /srv/site/public/")
    assert a.id != b.id


def test_host_names_with_a_port_are_values() -> None:
    """Lines led by a host:port share a template (the first token is otherwise never generalised), and a list
    of them is one value whatever its length; a source file and line (``Bar.java:42``) stays as written."""
    miner = TemplateMiner()
    a = miner.add("proxy.example.org:5070 close, 0 bytes sent")
    b = miner.add("mail.example.net:443 close, 13 bytes sent")
    assert a.id == b.id and a.text == "<*>:<*> close, <*> bytes sent"
    one = miner.add("connecting to db.example.com:5432")
    three = miner.add("connecting to a.example.com:80 b.example.com:80 GW-7.corp.example.com:8080")
    assert one.id == three.id and one.text == "connecting to <*>:<*>"
    assert miner.add("failed at Bar.java:42").text == "failed at Bar.java:<*>"
    off = TemplateMiner(MinerConfig(mask_host_ports=False))
    assert off.add("proxy.example.org:5070 close").text == "proxy.example.org:<*> close"


def test_a_quoted_phrase_is_one_value_whatever_its_length() -> None:
    miner = TemplateMiner()
    names = ['"Daily Backup"', '"Weekly Full Backup"', '"Sync Photos Now Please"']
    ids = {miner.add(f"job {name} finished in 4 s").id for name in names}
    assert len(ids) == 1 and miner.add('job "Nightly Report" finished in 9 s').text == 'job "<*>" finished in <*> s'
    # one quoted word is a token: it generalises on evidence, as any other word does
    assert miner.add('tag="alpha" held').text == 'tag="alpha" held'
    off = TemplateMiner(MinerConfig(mask_quoted_phrases=False))
    assert len({off.add(f"job {name} finished in 4 s").id for name in names}) == 3


_LINE_CHARS = list("abkBGMT Jan Nov Mon ssh log4j 0123456789 :.-_=/@()[]<>*'\"%+,\\ ://IP")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(_LINE_CHARS), max_size=60), st.randoms(use_true_random=False))
def test_lines_differing_only_in_digit_values_get_the_skeleton_each_would_get_alone(
    line: str, rnd: random.Random
) -> None:
    """The miner remembers skeletons by where a line's digits are (the fast path for a template's next
    line); a line must still be grouped by exactly the skeleton it gets on a fresh miner."""
    other = "".join(rnd.choice("0123456789") if ch.isdigit() and ch.isascii() else ch for ch in line)
    warm = TemplateMiner()
    warm.add(line)
    warm.add(other)
    assert warm._skeletons[other] == TemplateMiner()._skeleton(other)
