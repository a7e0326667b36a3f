"""``streamer replay``: re-run a window of tickets or log lines through a bundle and report what would change."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from streamer.errors import ConfigError, StreamerError
from streamer.topics import LOGS, LOGS_ENRICHED, TICKETS, TICKETS_ENRICHED

#: What each replayable topic is compared with by default.
LIVE_TOPICS = {TICKETS: TICKETS_ENRICHED, LOGS: LOGS_ENRICHED}

_EPILOG = """\
Offsets come from --from/--to (offsets_for_times, checked against each partition's first and end
offsets; --to and --to-offset are exclusive) and/or --from-offset/--to-offset, which narrow them.
Without one of these, --all must say that the whole topic is meant (a missing window is an error, not
everything). A --from after the last record replays nothing. The replay joins no consumer group and commits
nothing, so live workers are unaffected; it writes enriched records to <topic>.replay.<run-id>
(one-day retention) unless --dry-run.

--topic ops.logs.v1 replays log lines through a fresh log triage (templates, incident classes, alerts,
routes) and compares with ops.logs.enriched.v1. Each partition's earlier records are replayed first,
without comparing, to rebuild the state the live worker had (--no-warmup: start from a clean state).

examples:
  streamer replay --from 2026-11-27T00:00Z --to 2026-11-28T00:00Z --bundle var/bundles/v4 \\
      --report replay.json --html replay.html
  streamer replay --partitions 0,2 --from-offset 1200 --to-offset 1500 --bundle var/bundles/v4 --dry-run
  streamer replay --topic ops.logs.v1 --from 2026-11-27T10:00Z --to 2026-11-27T11:00Z --dry-run --html logs.html
"""


def add_replay_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``replay`` to a top-level parser's subparsers (its handler is ``args.handler``)."""
    from streamer.replay.ranges import parse_partitions, parse_time

    def time_arg(value: str) -> int:
        try:
            return parse_time(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def partitions_arg(value: str) -> tuple[int, ...]:
        try:
            return parse_partitions(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    replay = subparsers.add_parser(
        "replay",
        help="re-run a window of tickets or log lines through a bundle and diff against live decisions",
        description="Replay tickets or log lines through the worker's triage with a given bundle; report what changes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "--topic", default=TICKETS, choices=sorted(LIVE_TOPICS), help=f"input topic, as declared (default: {TICKETS})"
    )
    replay.add_argument("--from", dest="from_ms", type=time_arg, metavar="TIME", help="window start, ISO 8601 or ms")
    replay.add_argument("--to", dest="to_ms", type=time_arg, metavar="TIME", help="window end (exclusive)")
    replay.add_argument("--from-offset", type=int, metavar="N", help="first offset, in every chosen partition")
    replay.add_argument("--to-offset", type=int, metavar="M", help="end offset (exclusive), in every chosen partition")
    replay.add_argument(
        "--all", dest="whole_topic", action="store_true", help="replay the whole topic (no window given)"
    )
    replay.add_argument("--partitions", type=partitions_arg, metavar="LIST", help="only these partitions, e.g. 0,2")
    replay.add_argument(
        "--bundle", type=Path, metavar="DIR", help="bundle to replay with (default: STREAMER_BUNDLE_DIR)"
    )
    where = replay.add_mutually_exclusive_group()
    where.add_argument("--output", metavar="TOPIC", help="output topic (default: <topic>.replay.<run-id>)")
    where.add_argument("--dry-run", action="store_true", help="write nothing; only report")
    replay.add_argument("--run-id", help="id of this run, part of the output topic (default: time + random)")
    replay.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")
    replay.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report here")
    replay.add_argument(
        "--live-topic",
        default=TICKETS_ENRICHED,
        help=f"live decisions to compare with (default: {TICKETS_ENRICHED}; {LOGS_ENRICHED} for {LOGS})",
    )
    replay.add_argument("--no-diff", action="store_true", help="do not read live decisions or compare")
    replay.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="tickets per model batch (default: STREAMER_MAX_BATCH); log lines per batch (default: 2000)",
    )
    replay.add_argument(
        "--no-warmup", action="store_true", help="logs: replay from a clean state, without the earlier records"
    )
    replay.add_argument(
        "--warmup-from",
        dest="warmup_from_ms",
        type=time_arg,
        metavar="TIME",
        help="logs: warm up on the records from this time on only (default: every retained record before --from)",
    )
    replay.add_argument("--examples", type=int, default=5, metavar="N", help="examples per kind of change (5)")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    replay.set_defaults(handler=run_replay_command)


def check_window_given(args: argparse.Namespace) -> None:
    """A replay reads and copies what its window holds: without a window that is the whole topic, so it
    must be asked for with ``--all``, never reached by forgetting ``--from``."""
    bounds = [args.from_ms, args.to_ms, args.from_offset, args.to_offset]
    given = any(bound is not None for bound in bounds)
    if args.whole_topic and given:
        raise ConfigError("--all replays the whole topic; leave out --from/--to/--from-offset/--to-offset")
    if not args.whole_topic and not given:
        raise ConfigError(
            "replay needs a window: --from/--to (time), --from-offset/--to-offset, or --all for the whole topic"
        )


def run_replay_command(args: argparse.Namespace) -> int:
    """Load the bundle and the worker's processor, replay, print the table, write the reports."""
    from aiokafka.errors import KafkaError

    from streamer.models.bundle import load_bundle
    from streamer.models.errors import ModelError
    from streamer.replay.ranges import Window
    from streamer.replay.report import render_text, write_html, write_json
    from streamer.replay.run import ReplayRequest, check_run_id, new_run_id, run_replay
    from streamer.runtime import load_ticket_runtime
    from streamer.settings import load_settings

    check_window_given(args)
    settings = load_settings()
    if args.bundle is not None:
        settings = settings.model_copy(update={"bundle_dir": args.bundle})
    logs = args.topic == LOGS
    if args.batch is not None:
        batch = args.batch
    else:
        from streamer.replay.logs import DEFAULT_BATCH

        batch = DEFAULT_BATCH if logs else settings.max_batch
    if batch < 1 or args.examples < 0:
        raise ConfigError("--batch must be at least 1 and --examples 0 or more")
    if args.warmup_from_ms is not None and (args.no_warmup or args.topic != LOGS):
        raise ConfigError("--warmup-from bounds the warm-up of a log replay (--topic ops.logs.v1 without --no-warmup)")
    window = Window(args.from_ms, args.to_ms, args.from_offset, args.to_offset)
    # Log lines are compared with log records: the tickets' default stands for the topic's own.
    live_topic = LIVE_TOPICS[args.topic] if args.live_topic == TICKETS_ENRICHED else args.live_topic
    request = ReplayRequest(
        window=window,
        run_id=check_run_id(args.run_id) if args.run_id else new_run_id(),
        topic=args.topic,
        partitions=args.partitions,
        output=args.output,
        dry_run=args.dry_run,
        live_topic=None if args.no_diff else live_topic,
        batch_size=batch,
        max_examples=args.examples,
        progress=not args.no_progress,
        warmup=not args.no_warmup,
        warmup_from_ms=args.warmup_from_ms,
    )
    try:
        bundle = load_bundle(
            settings.bundle_dir,
            device=settings.device,
            compute_type=settings.compute_type,
            intra_threads=settings.intra_threads,
            inter_threads=settings.inter_threads,
            batch_size=batch,
        )
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    from streamer.runtime import tune_garbage_collector

    try:
        if logs:
            from streamer.replay.logs import load_log_replay_runtime, run_log_replay

            log_runtime = load_log_replay_runtime(settings, bundle)
            tune_garbage_collector()
            report = asyncio.run(run_log_replay(settings, log_runtime, request))
        else:
            from streamer.runtime import load_ticket_runtime

            ticket_runtime = load_ticket_runtime(settings, bundle=bundle)
            tune_garbage_collector()
            report = asyncio.run(run_replay(settings, ticket_runtime, request))
    except KafkaError as exc:
        raise StreamerError(f"replay {request.run_id} stopped: Kafka error {type(exc).__name__}: {exc}") from None
    sys.stdout.write(render_text(report))
    if args.report:
        write_json(report, args.report)
        print(f"report: {args.report}")
    if args.html:
        write_html(report, args.html)
        print(f"html: {args.html}")
    return 0
