"""Prometheus metrics of the large-model bridge, on a registry of their own.

Tokens are what a provider bills and latency is what users wait for, so both are counted here, next to
the outcomes (answered, dead-lettered and why) that say whether the loop is healthy. A registry per
``BridgeMetrics`` (not prometheus-client's global one) lets tests and tools run several bridges in one
process; ``streamer bridge`` serves it on ``STREAMER_BRIDGE_METRICS_PORT``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
ANSWER_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)


class BridgeMetrics:
    """The bridge's metrics; ``registry`` defaults to a new ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "streamer_llm_requests",
            "HTTP requests to the large-model endpoint by outcome (ok, rate_limited, http_5xx, timeout, ...).",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter("streamer_llm_retries", "Requests sent again after a retryable failure.", registry=r)
        self.tokens = Counter(
            "streamer_llm_tokens", "Tokens the endpoint reported as used, by kind (prompt, completion).", ["kind"],
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "streamer_llm_request_seconds",
            "Duration of one HTTP request to the endpoint.",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.answer_seconds = Histogram(
            "streamer_bridge_answer_seconds",
            "From reading an escalation to its answer or dead letter being written, retries and waits included.",
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.records = Counter(
            "streamer_bridge_records",
            "Escalations handled, by outcome (answered, invalid_answer, unredacted_pii, undecodable, ...).",
            ["outcome"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "streamer_llm_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", registry=r
        )
        self.in_flight = Gauge(
            "streamer_bridge_in_flight", "Escalations read and not yet answered or dead-lettered.", registry=r
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
