"""Brokers of a test's own, for faults in the broker itself: one node, or a KRaft cluster of several.

Each runs from the same jars as the session broker, on free ports, with a temporary data dir, and is
stopped whatever happened; the session broker is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamer.kafka import local


@contextmanager
def own_broker(
    data_dir: Path, *, port: int | None = None, timeout: float = 120, **options: Any
) -> Iterator[local.Broker]:
    """A single broker (``local.start``; ``options`` such as ``sasl_ssl``), stopped on exit."""
    broker = local.start(port=port or local.free_port_pair(), data_dir=data_dir, timeout=timeout, **options)
    try:
        yield broker
    finally:
        local.stop(data_dir)


@contextmanager
def own_cluster(root: Path, nodes: int = 3, *, timeout: float = 300) -> Iterator[local.LocalCluster]:
    """``nodes`` KRaft nodes, each broker and controller (``local.start_cluster``), stopped on exit."""
    cluster = local.start_cluster(local.free_cluster_ports(nodes), root, timeout=timeout)
    try:
        yield cluster
    finally:
        local.stop_cluster(root, timeout=20)
