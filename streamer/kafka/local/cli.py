"""``python -m streamer.kafka.local start|stop|status|fetch|<kafka tool>`` (and ``streamer kafka``)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from streamer.kafka.local._common import LocalKafkaError
from streamer.kafka.local.config import (
    DEFAULT_HOST,
    cluster_ports,
    default_cluster_dir,
    default_port,
    is_cluster_dir,
    resolve_dir,
)
from streamer.kafka.local.jars import CONSOLE_TOOLS, console_tool_cmd, ensure_jars, kafka_version
from streamer.kafka.local.process import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    cluster_status,
    start,
    start_cluster,
    status,
    stop,
    stop_cluster,
)

__all__ = ["main"]


def _run_tool(tool: str, args: list[str], data_dir: Path | None) -> int:
    has_bootstrap = any(a == "--bootstrap-server" or a.startswith("--bootstrap-server=") for a in args)
    if tool != "storage" and not has_bootstrap:
        running = status(data_dir)
        port = running.port if running else default_port()
        args = ["--bootstrap-server", f"{DEFAULT_HOST}:{port}", *args]
    try:
        return subprocess.call(console_tool_cmd(tool, args))
    except KeyboardInterrupt:
        return 130


def _cluster_command(ns: argparse.Namespace) -> int:
    root = Path(ns.data_dir).expanduser().resolve() if ns.data_dir else default_cluster_dir()
    try:
        if ns.command == "start":
            base = ns.port if ns.port is not None else default_port()
            cluster = start_cluster(cluster_ports(base, ns.brokers), root, brokers=ns.brokers, timeout=2 * ns.timeout)
            state = "already running" if cluster.already_running else f"ready (started in {cluster.startup_s:.1f} s)"
            print(f"kafka cluster of {len(cluster.nodes)} {state}: {cluster.bootstrap_servers} ({root})")
            return 0
        if ns.command == "stop":
            stopped = stop_cluster(root, timeout=ns.timeout)
            print(f"kafka cluster stopped ({stopped} nodes)" if stopped else f"kafka cluster not running ({root})")
            return 0
        nodes = cluster_status(root)
        if not any(nodes):
            print(f"kafka cluster not running ({root})", file=sys.stderr if ns.bootstrap else sys.stdout)
            return 3
        if ns.bootstrap:
            print(",".join(node.bootstrap_servers for node in nodes if node is not None))
            return 0 if all(node is not None and node.ready for node in nodes) else 1
        for i, node in enumerate(nodes, 1):
            state = "down" if node is None else ("running" if node.ready else "running but NOT answering")
            where = f" on {node.bootstrap_servers} (pid {node.pid})" if node is not None else ""
            print(f"node {i}: {state}{where}")
        return 0 if all(node is not None and node.ready for node in nodes) else 1
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamer.kafka.local start|stop|status|fetch|<tool> [...]``; returns the exit code."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args_in and args_in[0] in CONSOLE_TOOLS:
        # Everything after the tool name goes to Kafka's tool untouched (--bootstrap-server is added).
        try:
            return _run_tool(args_in[0], args_in[1:], None)
        except LocalKafkaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    parser = argparse.ArgumentParser(
        prog="python -m streamer.kafka.local",
        description="Local single-node Kafka (KRaft) broker. Kafka tools: "
        + ", ".join(CONSOLE_TOOLS)
        + " (arguments are passed through; --bootstrap-server is added).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start the broker (no-op if running) and wait until ready")
    p_start.add_argument("--port", type=int, default=None, help="client port (default 9092 / env)")
    p_start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S)
    p_start.add_argument("--auto-create-topics", action="store_true")
    p_stop = sub.add_parser("stop", help="stop the broker")
    p_stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S)
    p_status = sub.add_parser("status", help="exit 0 if running and ready, 3 if not running")
    p_status.add_argument(
        "--bootstrap", action="store_true", help="print only host:port (for STREAMER_KAFKA_BOOTSTRAP)"
    )
    sub.add_parser("fetch", help="download the Kafka jars (Maven) if not cached")
    for p in (p_start, p_stop, p_status):
        p.add_argument("--data-dir", default=None, help="broker state dir (default: <repo>/var/kafka / env)")
        p.add_argument(
            "--brokers",
            type=int,
            default=1,
            help="nodes: 1, or a cluster of 3 (replication 3, min.insync.replicas 2) in <data dir>-cluster; "
            "node i listens on port + 2(i - 1)",
        )
    ns = parser.parse_args(args_in)
    if ns.command in ("start", "stop", "status") and (ns.brokers > 1 or (ns.data_dir and is_cluster_dir(ns.data_dir))):
        return _cluster_command(ns)

    try:
        if ns.command == "fetch":
            print(f"kafka {kafka_version()} jars in {ensure_jars()}")
            return 0
        if ns.command == "start":
            broker = start(ns.port, ns.data_dir, timeout=ns.timeout, auto_create_topics=ns.auto_create_topics)
            if broker.already_running:
                print(f"kafka already running on {broker.bootstrap_servers} (pid {broker.pid})")
            else:
                print(f"kafka ready on {broker.bootstrap_servers} (started in {broker.startup_s:.1f} s)")
            if ns.port is None and broker.port != default_port():
                print(
                    f"port {default_port()} is in use, so it took a free one: point clients at it with "
                    f"STREAMER_KAFKA_BOOTSTRAP={broker.bootstrap_servers} (`streamer kafka status --bootstrap`)"
                )
            return 0
        if ns.command == "stop":
            root = resolve_dir(ns.data_dir)
            print("kafka stopped" if stop(root, timeout=ns.timeout) else f"kafka not running ({root})")
            return 0
        running = status(ns.data_dir)
        if running is None:
            print(f"kafka not running ({resolve_dir(ns.data_dir)})", file=sys.stderr if ns.bootstrap else sys.stdout)
            return 3
        if ns.bootstrap:
            print(running.bootstrap_servers)
            return 0 if running.ready else 1
        state = "running" if running.ready else "running but NOT answering"
        print(f"kafka {state} on {running.bootstrap_servers} (pid {running.pid}, data {running.data_dir})")
        return 0 if running.ready else 1
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
