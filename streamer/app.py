"""The Faust application: group membership, partition assignment, batching and offset commits.

Faust consumes raw bytes (decoding is ours, so bad input becomes a dead letter instead of a crash).
Outputs go through our own producer (acks=all, idempotence on), which Faust's producer does not enable
outside transactions; an input batch is acknowledged to Faust, and so committed, only after every one of
its outputs has been acknowledged by the brokers: at-least-once.
"""

from __future__ import annotations

import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import faust
from faust.types.auth import CredentialsT

from streamer.errors import KafkaUnavailable
from streamer.kafka.clients import check_connection, connection_options
from streamer.settings import Settings

#: Exit status of a worker whose brokers cannot be reached or refuse its credentials (as every CLI error).
EXIT_KAFKA_UNAVAILABLE = 2


class TriageApp(faust.App):  # type: ignore[misc]
    """Faust's app, plus one check of the brokers (address, TLS, credentials) before anything starts.

    Faust's own clients log an authentication failure, then crash with a generic "unable to bootstrap"
    and a traceback. Checked first, the worker instead prints one line that says why and names the
    address (``streamer: error: cannot reach Kafka at ...``) and exits 2; nothing was consumed yet.
    """

    streamer_settings: Settings | None = None
    # mode names a subclass' logger after its module; keep Faust's app logs under "faust" (quiet at INFO).
    logger = logging.getLogger("faust.app.streamer")

    async def on_first_start(self) -> None:
        if self.streamer_settings is not None:
            try:
                await check_connection(self.streamer_settings)
            except KafkaUnavailable as exc:
                print(f"streamer: error: {exc}", file=sys.stderr, flush=True)
                # SystemExit passes through Faust's handlers (they would log a traceback and exit 1).
                raise SystemExit(EXIT_KAFKA_UNAVAILABLE) from None
        await super().on_first_start()


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Our security settings in Faust's terms (the same SSL context our own clients use)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    options = connection_options(settings)
    context: ssl.SSLContext | None = options.get("ssl_context")
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol == "SASL_PLAINTEXT":
        context = None
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def create_app(settings: Settings, *, datadir: Path | None = None, **overrides: Any) -> faust.App:
    """A Faust app for the triage workers; topics are created by ``topics apply``, never by Faust."""
    options: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in settings.bootstrap_servers],
        "broker_credentials": faust_credentials(settings),
        "broker_client_id": settings.kafka_client_id,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": False,
        "datadir": str(datadir or Path("var") / "faust"),
        "stream_wait_empty": True,
        "broker_commit_interval": 1.0,
        # Faust's own BROKER_SESSION_TIMEOUT / BROKER_HEARTBEAT_INTERVAL / CONSUMER_GROUP_INSTANCE_ID
        # environment variables still win over these, as Faust documents.
        "broker_session_timeout": settings.kafka_session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.heartbeat_interval_ms / 1000,
        "broker_request_timeout": max(90.0, settings.kafka_session_timeout_ms / 1000 + 30),
        "consumer_group_instance_id": settings.group_instance_id,
    }
    options.update(overrides)
    app = TriageApp(settings.group_id, **options)
    app.streamer_settings = settings
    return app
