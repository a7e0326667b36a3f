"""OpenTelemetry spans: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, otherwise nothing at all.

Disabled (the default), no span is made and no OpenTelemetry call runs on the hot path: a record's trace
context is only carried over, header to header (``streamer.headers.TraceParent``). Enabled, a process makes
these spans, with OpenTelemetry's messaging semantic-convention attributes:

* ``receive <topic>`` (consumer): one per input record, a child of the context in its ``traceparent`` header
  (or the root of a new trace); it lasts until the record's outputs are acknowledged;
* ``triage batch`` (internal): one per batch, the root of a trace of its own, linked to every input's
  ``receive`` span (a batch serves many traces; links are how OpenTelemetry says so);
* ``model`` (internal): the model's part of the batch, a child of the batch span;
* ``send <topic>`` (producer): one per output record, a child of its input's ``receive`` span; the output's
  ``traceparent`` names this span, so whoever reads the output continues the same trace;
* in the bridge, ``chat <model>`` (client): the call to the large model, whose ``traceparent`` header names
  it.

Spans leave through OTLP (http/protobuf by default, ``grpc`` when ``OTEL_EXPORTER_OTLP_PROTOCOL`` says so and
its exporter is installed) in batches; sampling, resource attributes and limits follow the standard
``OTEL_*`` variables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamer.errors import ConfigError
from streamer.headers import TraceParent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

#: Attribute values OpenTelemetry accepts.
Attributes = Mapping[str, str | int | float | bool]


@dataclass(slots=True)
class InputTrace:
    """One input's trace: the context its outputs continue and, when tracing is on, its ``receive`` span."""

    trace: TraceParent
    span: Any = None


def messaging_attributes(
    operation: str,
    topic: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str | int | float | bool]:
    """The messaging semantic conventions for Kafka (``messaging.*``) of one operation on ``topic``."""
    attrs: dict[str, str | int | float | bool] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    if partition is not None:
        attrs["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attrs["messaging.kafka.offset"] = offset
    for name, value in (extra or {}).items():
        if value is not None:
            attrs[name] = value
    return attrs


class Tracing:
    """The spans of one process; ``Tracing()`` (no provider) is off and costs nothing.

    Args:
        provider: an OpenTelemetry SDK ``TracerProvider`` (``configure_tracing`` makes one from the
            environment; tests pass one with an in-memory exporter). ``None``: tracing is off.
    """

    def __init__(
        self, provider: TracerProvider | None = None, *, topic_prefix: str = "", consumer_group: str | None = None
    ) -> None:
        self.provider = provider
        self.enabled = provider is not None
        #: Put before declared topic names in span attributes (``STREAMER_TOPIC_PREFIX``).
        self.topic_prefix = topic_prefix
        #: The consumer group of the inputs (``messaging.consumer.group.name``).
        self.consumer_group = consumer_group
        self._tracer: Tracer | None = provider.get_tracer("streamer") if provider is not None else None

    # --- inputs and outputs --------------------------------------------------------------------------

    def receive(
        self, incoming: TraceParent | None, topic: str, *, partition: int, offset: int, key: bytes | None = None
    ) -> InputTrace:
        """An input's trace: its ``receive`` span when on; when off, its own context or a new trace."""
        if self._tracer is None:
            return InputTrace(incoming if incoming is not None else TraceParent.new())
        from opentelemetry import trace
        from opentelemetry.context import Context

        attributes = messaging_attributes(
            "receive",
            topic,
            partition=partition,
            offset=offset,
            extra={"messaging.consumer.group.name": self.consumer_group, "messaging.kafka.message.key": _text(key)},
        )
        parent = trace.set_span_in_context(trace.NonRecordingSpan(_span_context(incoming))) if incoming else Context()
        span = self._tracer.start_span(
            f"receive {topic}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
        )
        return InputTrace(_trace_of(span, incoming), span)

    def send(
        self,
        parent: InputTrace,
        topic: str,
        pending: list[Any],
        *,
        key: bytes | None = None,
        message_id: str | None = None,
    ) -> TraceParent:
        """The context an output record carries; when on, a ``send`` span (kept in ``pending`` until acked)."""
        if self._tracer is None or parent.span is None:
            return parent.trace
        from opentelemetry import trace

        name = self.topic_prefix + topic
        attributes = messaging_attributes(
            "send",
            name,
            extra={"messaging.kafka.message.key": _text(key), "messaging.message.id": message_id},
        )
        span = self._tracer.start_span(
            f"send {name}",
            context=trace.set_span_in_context(parent.span),
            kind=trace.SpanKind.PRODUCER,
            attributes=attributes,
        )
        pending.append(span)
        return _trace_of(span, parent.trace)

    @contextmanager
    def batch(self, inputs: Sequence[InputTrace], *, size: int) -> Iterator[Any]:
        """The ``triage batch`` span, linked to every input's context (``None`` when off)."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import trace
        from opentelemetry.context import Context

        attributes: dict[str, str | int | float | bool] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "triage",
            "messaging.batch.message_count": size,
        }
        links = [
            trace.Link(item.span.get_span_context() if item.span is not None else _span_context(item.trace))
            for item in inputs
        ]
        with self._tracer.start_as_current_span(
            "triage batch", context=Context(), links=links, attributes=attributes, end_on_exit=True
        ) as span:
            yield span

    @contextmanager
    def span(
        self, name: str, parent: Any, attributes: Attributes | None = None, *, client: bool = False, batch: int = 0
    ) -> Iterator[Any]:
        """A child span of ``parent`` (a span or an ``InputTrace``) for a step: ``model``, ``chat <model>``.

        ``attributes`` of the model (``name``, ``version``) are recorded as ``streamer.model.*``.
        """
        if self._tracer is None or parent is None:
            yield None
            return
        from opentelemetry import trace

        attrs: dict[str, str | int | float | bool] = {
            k if "." in k else f"streamer.model.{k}": v for k, v in (attributes or {}).items()
        }
        if batch:
            attrs["messaging.batch.message_count"] = batch
        if isinstance(parent, InputTrace):
            parent = parent.span
            if parent is None:
                yield None
                return
        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        with self._tracer.start_as_current_span(
            name, context=trace.set_span_in_context(parent), kind=kind, attributes=attrs
        ) as span:
            yield span

    def current(self, span: Any, fallback: TraceParent) -> TraceParent:
        """The context naming ``span`` (``fallback`` when off): what to send with a call made inside it."""
        if span is None:
            return fallback
        return _trace_of(span, fallback)

    def end(self, spans: Sequence[Any], *, error: BaseException | None = None) -> None:
        """End spans kept open until their records were acknowledged (no-op when off)."""
        if not spans:
            return
        for span in spans:
            if error is not None:
                span.record_exception(error)
            span.end()

    def shutdown(self) -> None:
        """Export what is left and stop (at process exit)."""
        if self.provider is not None:
            self.provider.shutdown()


def _text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


def _span_context(parent: TraceParent) -> Any:
    from opentelemetry import trace

    return trace.SpanContext(
        int(parent.trace_id, 16),
        int(parent.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(parent.flags, 16)),
        trace_state=trace.TraceState.from_header([parent.tracestate]) if parent.tracestate else None,
    )


def _trace_of(span: Span, incoming: TraceParent | None) -> TraceParent:
    ctx = span.get_span_context()
    state = ctx.trace_state.to_header() if ctx.trace_state else (incoming.tracestate if incoming else None)
    return TraceParent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{int(ctx.trace_flags):02x}", state or None)


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for spans: an OTLP endpoint is set and the SDK is not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> Tracing:
    """A ``Tracing`` exporting over OTLP when the environment sets an endpoint, else one that is off.

    ``service_name`` is the default of ``OTEL_SERVICE_NAME`` (``streamer-worker``, ``streamer-bridge``).
    """
    env = os.environ if environ is None else environ
    if not tracing_configured(env):
        return Tracing()
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    )
    exporter: Any
    try:
        if protocol.strip().lower() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporter = GrpcExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporter = HttpExporter()
    except ImportError:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter ({protocol}) is not installed: "
            "pip install 'streamer[otlp]' (or unset the endpoint)"
        ) from None
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)
