"""The sender's partition choice: murmur2 as Java's default partitioner, keys that stay put, keyless spread."""

from __future__ import annotations

from collections import Counter

import pytest

from streamer.kafka.sender import Partitioner, key_partition

#: Java's ``Utils.murmur2`` of these keys (signed 32-bit), as Kafka's own ``UtilsTest.testMurmur2`` pins them.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 12])
@pytest.mark.parametrize(("key", "java_hash"), sorted(JAVA_MURMUR2.items()))
def test_keyed_records_land_where_the_java_client_puts_them(key: bytes, java_hash: int, partitions: int) -> None:
    # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions, toPositive being ``& 0x7fffffff``.
    assert key_partition(key, list(range(partitions))) == (java_hash & 0x7FFFFFFF) % partitions


def test_a_key_keeps_its_partition_across_batches_and_ids_follow_the_sorted_list() -> None:
    p = Partitioner()
    parts = p.known("t", {5, 3, 4})  # partition ids as a set, like producer.partitions_for
    assert parts == [3, 4, 5]
    first = {k: p.partition("t", k, parts) for k in JAVA_MURMUR2}
    for _ in range(5):
        p.next_batch()
        assert {k: p.partition("t", k, parts) for k in JAVA_MURMUR2} == first
    assert first == {k: [3, 4, 5][(h & 0x7FFFFFFF) % 3] for k, h in JAVA_MURMUR2.items()}


def test_keys_are_placed_again_when_the_partition_count_changes() -> None:
    p = Partitioner()
    three = p.known("t", [0, 1, 2])
    before = {k: p.partition("t", k, three) for k in JAVA_MURMUR2}
    seven = p.known("t", range(7))
    after = {k: p.partition("t", k, seven) for k in JAVA_MURMUR2}
    assert after == {k: key_partition(k, seven) for k in JAVA_MURMUR2}
    assert after != before  # at least one key moves: the cache did not keep the 3-partition answer


def test_records_without_a_key_share_one_partition_per_batch_and_spread_over_batches() -> None:
    p = Partitioner()
    parts = p.known("t", range(6))
    used: Counter[int] = Counter()
    for _ in range(60):
        p.next_batch()
        batch = {p.partition("t", None, parts) for _ in range(50)}
        assert len(batch) == 1  # one produce request per keyless batch, not fifty
        used.update(batch)
    assert used == dict.fromkeys(range(6), 10)  # every partition gets its turn, evenly


def test_the_key_cache_is_bounded() -> None:
    p = Partitioner(max_keys=10)
    parts = p.known("t", range(4))
    for i in range(25):
        key = f"k{i}".encode()
        assert p.partition("t", key, parts) == key_partition(key, parts)
    assert len(p._by_key) <= 10
