"""Kafka client options from settings: one place that knows about security protocols and secrets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from streamer.errors import ConfigError, KafkaUnavailable
from streamer.settings import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """Options every aiokafka client takes: servers, security, timeouts. Secrets are unwrapped only here."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=(settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None),
        )
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return options


def _without_secrets(settings: Settings, text: str) -> str:
    for secret in (settings.kafka_sasl_password, settings.kafka_ssl_key_password):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "***")
    return text


_Client = TypeVar("_Client", AIOKafkaConsumer, AIOKafkaProducer)


async def started(settings: Settings, client: _Client) -> _Client:
    """``client`` started; one that cannot reach the brokers is stopped and becomes ``unavailable``'s error.

    The connection is checked first: aiokafka logs a failed bootstrap itself and then raises a generic error,
    so a command would print two lines without the reason an operator can act on (refused, TLS, SASL).
    """
    try:
        await check_connection(settings)
    except KafkaUnavailable:
        await client.stop()
        raise
    try:
        await client.start()
    except (KafkaError, OSError) as exc:
        await client.stop()
        raise unavailable(settings, exc) from None
    return client


def unavailable(settings: Settings, exc: BaseException | str) -> KafkaUnavailable:
    """A one-line error that names the address, never the credentials."""
    if isinstance(exc, BaseException):
        reason = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0]
    else:
        reason = exc
    return KafkaUnavailable(
        _without_secrets(
            settings,
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({settings.kafka_security_protocol}): {reason}",
        )
    )


def _failure_reason(settings: Settings, exc: BaseException) -> str:
    """Why one connection attempt failed, in words an operator can act on."""
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"authentication failed for user {settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}); "
            "check STREAMER_KAFKA_SASL_USERNAME and STREAMER_KAFKA_SASL_PASSWORD"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"the broker does not offer SASL mechanism {settings.kafka_sasl_mechanism}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); check STREAMER_KAFKA_SSL_CAFILE"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc}); is the listener {settings.kafka_security_protocol}?"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return f"no answer within {settings.kafka_request_timeout_ms} ms"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_connection(settings: Settings) -> None:
    """Connect to the bootstrap servers the way every client will (TLS, SASL); ``KafkaUnavailable`` if none works.

    aiokafka's own clients log why a connection failed and then raise a generic "unable to bootstrap";
    this check keeps the reason (refused, certificate, credentials) for a one-line message.
    """
    options = connection_options(settings)
    failures: list[str] = []
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id=settings.kafka_client_id,
                request_timeout_ms=settings.kafka_request_timeout_ms,
                ssl_context=options.get("ssl_context"),
                security_protocol=settings.kafka_security_protocol,
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            )
        except (OSError, KafkaError, asyncio.TimeoutError, ValueError) as exc:
            failures.append(_failure_reason(settings, exc))
            continue
        conn.close()
        return
    raise unavailable(settings, failures[0] if failures else "no bootstrap servers")


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; connection failures become ``KafkaUnavailable``."""
    options = connection_options(settings)
    options.pop("client_id")
    admin = AIOKafkaAdminClient(client_id=f"{settings.kafka_client_id}-admin", **options)
    try:
        await admin.start()
    except (KafkaConnectionError, KafkaError, OSError) as exc:
        await admin.close()
        raise unavailable(settings, exc) from None
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def reader(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without a group, from the earliest offset; connection failures become
    ``KafkaUnavailable``. For commands that read a topic and commit nothing."""
    reading = await started(settings, consumer(settings, group_id=None, auto_offset_reset="earliest"))
    try:
        yield reading
    finally:
        await reading.stop()


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer for outputs: acks=all and idempotence, so a retried send never duplicates a record."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        # A batch's outputs are enqueued at once and then awaited: large per-partition batches and no
        # linger let them leave in a few requests (16 KiB batches made sends wait on each other, 5x slower).
        "linger_ms": 0,
        "max_batch_size": 512 * 1024,
        "max_request_size": max(settings.max_event_bytes * 2, 1_048_576),
        "compression_type": None,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with our connection options; callers pick group, offsets and commit policy."""
    options: dict[str, Any] = {**connection_options(settings), "enable_auto_commit": False}
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``; a consumer without subscriptions must ask the brokers first."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ConfigError(f"topic {topic!r} does not exist (run `streamer topics apply`)")
    return [TopicPartition(topic, p) for p in sorted(partitions)]
