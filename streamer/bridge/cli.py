"""``streamer bridge`` and ``streamer feedback export``: argparse sub-commands for the top-level CLI."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from streamer.errors import StreamerError

#: Exit status of a bridge that stopped with escalations unanswered (the worker's shutdown-timeout status).
EXIT_ABANDONED = 1

_FEEDBACK_EPILOG = """\
The file holds one {"text", "label", "source": "large-model"} object per line: redacted ticket texts
labelled with the large model's intent ("other" answers are left out). Train the next bundle with it:

  streamer feedback export --since 7d --out var/feedback/intent.jsonl
  streamer models build --out var/bundles/v4 --name support --version 4 \\
      --head intent=data/intent.csv --head intent=var/feedback/intent.jsonl ...
"""


def add_bridge_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``bridge`` and ``feedback`` to a top-level parser's subparsers (handlers set as ``handler``)."""
    bridge = subparsers.add_parser(
        "bridge",
        help="answer escalations with a large model (OpenAI-compatible endpoint) until SIGTERM",
        description=(
            "Consume llm.escalations.v1, ask the endpoint at STREAMER_LLM_BASE_URL for a structured answer, "
            "write it to llm.responses.v1 (invalid answers and unredacted text go to streamer.deadletter.v1)."
        ),
    )
    bridge.set_defaults(handler=_run_bridge)

    feedback = subparsers.add_parser("feedback", help="turn the large model's answers into training data")
    actions = feedback.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="join escalations with their answers into a JSONL file for `models build --head intent=`",
        epilog=_FEEDBACK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "--since", required=True, metavar="T", help="answers written since T: ISO-8601 time, or an age like 24h, 7d"
    )
    export.add_argument("--out", required=True, type=Path, metavar="FILE", help="JSON Lines file to write")
    export.set_defaults(handler=_feedback_export)


def _run_bridge(args: argparse.Namespace) -> int:
    from streamer.bridge.service import Bridge
    from streamer.observability import configure_logging
    from streamer.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    bridge = Bridge(settings)
    if settings.bridge_metrics_port:
        from prometheus_client import start_http_server

        from streamer.metrics import cannot_listen

        host, port = settings.metrics_host, settings.bridge_metrics_port
        try:  # binds here, before Kafka: a port in use is one line and exit 2, not a traceback
            start_http_server(port, addr=host, registry=bridge.metrics.registry)
        except OSError as exc:
            raise cannot_listen(host, port, "STREAMER_BRIDGE_METRICS_PORT", exc) from None

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        await bridge.run()

    asyncio.run(serve())
    if bridge.abandoned:
        # Like a worker past its shutdown deadline: not a clean stop, so not exit 0.
        print(
            f"streamer: error: bridge stopped with {bridge.abandoned} escalation(s) unanswered after the "
            f"{settings.shutdown_timeout_s:g} s grace period (STREAMER_SHUTDOWN_TIMEOUT_S); they are read "
            "again on the next start",
            file=sys.stderr,
        )
        return EXIT_ABANDONED
    return 0


def _feedback_export(args: argparse.Namespace) -> int:
    from streamer.bridge.feedback import export_feedback, parse_since
    from streamer.settings import load_settings

    settings = load_settings()
    since = parse_since(args.since)
    report = asyncio.run(export_feedback(settings, since, args.out))
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    print(
        f"{report.written} examples written to {args.out} from {report.responses} answers and "
        f"{report.escalations} escalations since {since.isoformat(timespec='seconds')} (skipped: {skipped})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m streamer.bridge bridge|feedback ...``)."""
    parser = argparse.ArgumentParser(prog="streamer")
    add_bridge_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except StreamerError as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
