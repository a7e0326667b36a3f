"""The ``streamer`` command: workers, topics, models, traffic, the local broker.

Every command reads the same settings (``STREAMER_*``); errors meant for people print as one line and
exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from streamer import __version__
from streamer.bridge.cli import add_bridge_commands
from streamer.commands.logs import add_logs_commands
from streamer.commands.models import add_models_commands
from streamer.deadletters import add_dlq_commands
from streamer.errors import ConfigError, StreamerError
from streamer.offline import add_triage_commands
from streamer.replay.cli import add_replay_commands
from streamer.runner import add_runtime_commands
from streamer.settings import Settings, load_settings

Handler = Callable[[argparse.Namespace], int]


def _topics_apply(args: argparse.Namespace) -> int:
    from streamer.kafka.admin import apply_topics
    from streamer.topics import load_catalog

    settings = load_settings()
    catalog = load_catalog(settings.topics_file)
    specs = [catalog[name] for name in args.only] if args.only else list(catalog.topics.values())
    report = asyncio.run(apply_topics(settings, specs))
    for name in report.created:
        print(f"created   {name}")
    for name in report.unchanged:
        print(f"ok        {name}")
    for drift in report.drift:
        print(f"DRIFT     {drift}")
    print(
        f"{len(report.created)} created, {len(report.unchanged)} unchanged, "
        f"{len(report.drift)} drift(s) on {settings.kafka_bootstrap}"
    )
    return 1 if report.drift and args.strict else 0


def _topics_list(args: argparse.Namespace) -> int:
    from streamer.kafka.admin import list_topics

    settings = load_settings()
    states = asyncio.run(list_topics(settings, include_internal=args.all))
    width = max((len(s.name) for s in states), default=10)
    print(f"{'topic':<{width}}  partitions  replicas  retention.ms  cleanup")
    for s in states:
        print(
            f"{s.name:<{width}}  {s.partitions:>10}  {s.replication_factor:>8}  "
            f"{s.config.get('retention.ms', '-'):>12}  {s.config.get('cleanup.policy', '-')}"
        )
    return 0


def _topics_asyncapi(args: argparse.Namespace) -> int:
    from streamer.asyncapi import asyncapi_document, render
    from streamer.topics import SchemaRegistry, load_catalog

    settings = load_settings()
    defaults = Settings.model_construct()  # group ids as documented defaults, not this environment's
    text = render(
        asyncapi_document(
            load_catalog(settings.topics_file),
            SchemaRegistry(settings.schemas_dir),
            group_id=defaults.group_id,
            bridge_group_id=defaults.bridge_group_id,
        )
    )
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out and args.out.exists() else None
        if current != text:
            print(f"{args.out}: out of date; run: streamer topics asyncapi --out {args.out}", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date")
    elif args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from streamer.kafka import local

    if args.bootstrap and args.kafka_action != "status":
        raise ConfigError("--bootstrap goes with status: streamer kafka status --bootstrap")
    return local.main(
        [
            args.kafka_action,
            *(["--brokers", str(args.brokers)] if args.brokers != 1 else []),
            *(["--bootstrap"] if args.bootstrap else []),
        ]
    )


def _settings_show(args: argparse.Namespace) -> int:
    settings = load_settings()
    for name in Settings.model_fields:
        print(f"STREAMER_{name.upper()}={getattr(settings, name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description=(
            "Real-time triage of support tickets and logs on Kafka. Settings come from STREAMER_* "
            "environment variables (see README)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    topics = commands.add_parser("topics", help="create and inspect the topics of topics/topics.yaml")
    topic_cmds = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    apply = topic_cmds.add_parser(
        "apply",
        help="create missing topics and report drift (never deletes)",
        description=(
            "Create every topic of topics/topics.yaml that the cluster lacks, with its partitions and "
            "configs, and report drift (partition count, replication, configs) of those that exist. "
            "Idempotent; nothing is ever deleted or altered."
        ),
    )
    apply.add_argument("--only", nargs="+", metavar="TOPIC", help="apply only these topics")
    apply.add_argument("--strict", action="store_true", help="exit 1 when any drift is found")
    apply.set_defaults(handler=_topics_apply)
    listing = topic_cmds.add_parser("list", help="show the cluster's topics, partitions and retention")
    listing.add_argument("--all", action="store_true", help="include internal topics (__consumer_offsets)")
    listing.set_defaults(handler=_topics_list)
    asyncapi = topic_cmds.add_parser(
        "asyncapi",
        help="write the AsyncAPI 3 document of every topic (channels, messages, schemas, headers, groups)",
        description=(
            "Generate the AsyncAPI 3 document from topics/topics.yaml and topics/schemas/: channels with "
            "partitions, retention and compaction, messages with their JSON Schemas, keys and headers, and "
            "which program sends or reads each topic (with its consumer group)."
        ),
    )
    asyncapi.add_argument("--out", type=Path, metavar="FILE", help="write here (default: standard output)")
    asyncapi.add_argument("--check", action="store_true", help="exit 1 when FILE differs from what would be written")
    asyncapi.set_defaults(handler=_topics_asyncapi)

    kafka = commands.add_parser("kafka", help="start or stop the local broker or three-broker cluster (development)")
    kafka.add_argument("kafka_action", choices=["start", "stop", "status"], help="start, stop or status")
    kafka.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="1 (default), or a three-node KRaft cluster with replication 3 and min.insync.replicas 2",
    )
    kafka.add_argument(
        "--bootstrap", action="store_true", help="with status: print only host:port, for STREAMER_KAFKA_BOOTSTRAP"
    )
    kafka.set_defaults(handler=_kafka)

    settings = commands.add_parser("settings", help="print the effective settings (secrets masked)")
    settings.set_defaults(handler=_settings_show)

    add_models_commands(commands)
    add_runtime_commands(commands)
    add_replay_commands(commands)
    add_bridge_commands(commands)
    add_dlq_commands(commands)
    add_triage_commands(commands)
    add_logs_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except StreamerError as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
