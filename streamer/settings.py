"""One typed settings object, read from ``STREAMER_*`` environment variables.

Every knob of the service lives here so that operators find them in one place (and in the README table,
which a test keeps in step with this class). Secrets are ``SecretStr``: they never print.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamer.errors import ConfigError

if TYPE_CHECKING:
    from streamer.logs.triage import LogTriageConfig

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Device = Literal["cpu", "cuda", "auto"]
#: Log severities a threshold may name (``streamer.logs.decode.SEVERITY_RANK`` without ``unknown``).
LogSeverity = Literal["trace", "debug", "info", "notice", "warning", "error", "critical"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_topics_dir() -> Path:
    """The repository's ``topics/`` in a checkout, else ``./topics`` (container images copy it there)."""
    candidate = _REPO_ROOT / "topics"
    return candidate if candidate.is_dir() else Path("topics")


class Settings(BaseSettings):
    """Settings of every streamer process; each field is ``STREAMER_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="STREAMER_", extra="ignore", frozen=True)

    # Kafka connection
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated bootstrap servers.")
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism = Field("SCRAM-SHA-512", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret, never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key for mutual TLS.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the client key (secret).")
    kafka_client_id: str = Field("streamer", description="Client id sent to the brokers.")
    kafka_request_timeout_ms: int = Field(15000, ge=1000, description="Broker request timeout.")
    group_id: str = Field("streamer-triage", description="Consumer group of the triage workers.")
    group_instance_id: str | None = Field(
        None,
        description=(
            "Static group membership: a stable id per worker process, unique in the group (e.g. the pod name "
            "of a StatefulSet). A restarted worker takes its partitions back at once instead of after the "
            "session timeout; a worker stopped for good keeps them until the session timeout."
        ),
    )
    kafka_session_timeout_ms: int = Field(
        45000,
        ge=6000,
        le=1_800_000,
        description=(
            "How long a worker that stopped heartbeating (killed, frozen) keeps its partitions before the "
            "group gives them to others; heartbeats every third of it, at most every 3 s."
        ),
    )
    topic_prefix: str = Field("", description="Prefix for every topic name (e.g. staging.), to share a cluster.")
    topic_replication_factor: int | None = Field(
        None,
        ge=1,
        description=(
            "Replicas of every topic `topics apply` creates, instead of topics.yaml's (3 on a three-broker cluster)."
        ),
    )
    topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description=(
            "min.insync.replicas of every topic `topics apply` creates (2 with 3 replicas: an acknowledged "
            "record is on two brokers)."
        ),
    )

    # Topics and rules
    topics_dir: Path = Field(
        default_factory=_default_topics_dir, description="Folder with topics.yaml, routes.yaml and schemas/."
    )

    # Model runtime
    bundle_dir: Path = Field(Path("var/bundles/default"), description="Model bundle the worker loads.")
    shadow_bundle_dir: Path | None = Field(
        None,
        description="Candidate bundle run beside the live one on the same batches; its decisions go to "
        "<enriched topic>.shadow.<version>, its agreement to metrics (default: none).",
    )
    device: Device = Field("auto", description="cpu, cuda, or auto (cuda when a GPU is visible).")
    compute_type: str | None = Field(
        None, description="CTranslate2 compute type; default int8 on CPU, float16 on CUDA."
    )
    intra_threads: int = Field(
        0, ge=0, description="Threads inside one inference call (0: CTranslate2's default, 4 threads)."
    )
    inter_threads: int = Field(1, ge=1, description="Inference calls run in parallel.")

    # Batching and limits
    batching: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="Ticket batches: adaptive (sized by backlog and a token budget) or fixed (count or wait).",
    )
    batch_max_tokens: int = Field(
        2048, ge=16, description="Adaptive batching: most (estimated) tokens in one model batch."
    )
    latency_target_ms: int = Field(
        100, ge=1, description="Adaptive batching: while keeping up, no batch is predicted to run longer than this."
    )
    max_batch: int = Field(64, ge=1, description="Fixed batching (and replay): most events triaged in one model batch.")
    max_wait_ms: int = Field(
        50, ge=1, description="Fixed batching: longest wait to fill a batch (logs: STREAMER_LOG_MAX_WAIT_MS)."
    )
    max_event_bytes: int = Field(
        1_000_000, ge=1024, description="Larger raw events (key and value together) go to the dead-letter topic."
    )
    max_text_chars: int = Field(
        4000, ge=64, description="Longer texts are cut for the model and flagged (kept whole in output)."
    )

    # Escalation policy (defaults; a bundle may carry its own calibrated thresholds)
    escalate_min_confidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Escalate below this intent confidence (default: 0.55 for a bundle without an escalation budget).",
    )
    escalate_min_margin: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Escalate when the top two intents are closer than this (default: 0.1 without a budget).",
    )
    escalate_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Escalation budget: share of in-scope tickets escalated by the bundle's escalation score "
        "(default: the rate the bundle was built for).",
    )
    escalate_spend_window: int = Field(
        2000,
        ge=0,
        description="Tickets whose escalation scores may lower the threshold so that calm traffic still spends "
        "the budget (never above the calibrated threshold, nor below the calibrated threshold of twice the "
        "budget); 0 keeps the calibrated threshold.",
    )
    escalate_oos_threshold: float | None = Field(
        None, ge=0, le=1, description="Out-of-scope score above which to escalate (default: the bundle's)."
    )
    escalate_dedup_window_s: float = Field(
        600.0,
        ge=0,
        description="An escalation near-duplicating one sent this many seconds before (same customer or template) "
        "is folded into it, not sent (0: off).",
    )
    escalate_dedup_min_cosine: float = Field(
        0.95, gt=0, le=1, description="Embedding cosine at or above which two escalations are near-duplicates."
    )
    escalate_long_text_chars: int = Field(
        1200, ge=100, description="Texts longer than this with several issues escalate."
    )
    escalate_vip_tiers: Annotated[tuple[str, ...], NoDecode] = Field(
        ("vip",), description="Customer tiers that always escalate."
    )
    supported_languages: Annotated[tuple[str, ...], NoDecode] = Field(
        ("en",), description="Languages the small models handle; others escalate."
    )

    # Privacy
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Secret of the keyed pseudonyms (HMAC-SHA256); without it, kinds to pseudonymise are masked.",
    )
    pseudonym_key_version: int = Field(
        1, ge=1, description="Version of the pseudonym secret, written in every token (k1); raise it on rotation."
    )

    # Log path
    log_layouts: dict[str, str] = Field(
        default_factory=dict,
        description="Per-service text layouts as JSON: service (record key) -> regex with a msg group "
        "and optional ts, level and other named groups; other lines have their header inferred.",
    )

    log_hold_batch: bool = Field(
        True,
        description="Hold each batch's enriched log records until the next batch is mined (or the stream "
        "pauses), so they leave with settled template ids; adds one batch of latency.",
    )
    log_max_batch: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="Most log records per batch (one fetch): large enough that per-batch costs (a thread "
        "hand-off, one produce request per partition, one commit) vanish per line, small enough that a batch "
        "takes well under a second.",
    )
    log_max_wait_ms: int = Field(
        50,
        ge=1,
        le=60_000,
        description="Longest wait for log records before an empty poll (which also releases held records).",
    )
    log_burst_window_ms: int = Field(
        60_000, ge=1000, description="Error bursts: width of the event-time windows lines are counted in."
    )
    log_burst_allowed_lateness_ms: int = Field(
        10_000, ge=0, description="Error bursts: how long after its end a window still accepts late lines."
    )
    log_burst_min_count: int = Field(20, ge=1, description="Error bursts: a window never bursts below this many lines.")
    log_burst_factor: float = Field(
        5.0, gt=0, description="Error bursts: how many times its baseline a window's count must reach."
    )
    log_burst_alpha: float = Field(
        0.3, gt=0, le=1, description="Error bursts: weight of the latest window in the baseline (0 < alpha <= 1)."
    )
    log_burst_min_severity: LogSeverity = Field("warning", description="Error bursts: lines below it are not counted.")
    log_burst_sample_size: int = Field(
        3, ge=1, le=100, description="Error bursts: lines kept per window for the alert."
    )
    log_escalate_severity: LogSeverity = Field(
        "error", description="Bursts and new templates at this severity or above go to the large model."
    )
    log_new_template_severity: LogSeverity = Field(
        "error", description="First sightings of a template at this severity or above raise an alert."
    )
    log_escalation_sample_size: int = Field(
        5, ge=1, le=100, description="Redacted lines in a log escalation's context."
    )
    log_max_message_chars: int = Field(
        8000,
        ge=64,
        description="Longest log message redacted and kept in outputs; the rest is cut (original length noted).",
    )
    log_max_mining_chars: int = Field(1024, ge=16, description="Longest headline the template miner reads.")
    log_max_templates: int = Field(
        20_000,
        ge=1,
        description="Live templates kept; past it, unseen shapes fall into one catch-all template per length.",
    )

    # Operations
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="json, console, or auto (console in a TTY)."
    )
    shutdown_timeout_s: float = Field(20.0, gt=0, description="Grace period for in-flight batches on SIGTERM.")
    metrics_port: int = Field(
        9100, ge=0, le=65535, description="Port of /metrics, /health and /ready (0: no HTTP server)."
    )
    metrics_host: str = Field(
        "0.0.0.0",  # noqa: S104 - a container's probes and scrapers reach the pod's address, not loopback
        description="Address the metrics and health server binds to (the bridge's /metrics too).",
    )

    @field_validator("escalate_vip_tiers", "supported_languages", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_layouts")
    @classmethod
    def _layouts_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for service, pattern in value.items():
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"layout of {service!r} is not a valid regex: {exc}") from None
            if "msg" not in rx.groupindex:
                raise ValueError(f"layout of {service!r} has no (?P<msg>...) group")
        return value

    @model_validator(mode="after")
    def _check_replicas(self) -> Settings:
        rf, isr = self.topic_replication_factor, self.topic_min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(f"topic_min_insync_replicas={isr} exceeds topic_replication_factor={rf}")
        return self

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs "
                "STREAMER_KAFKA_SASL_USERNAME and STREAMER_KAFKA_SASL_PASSWORD"
            )
        return self

    @property
    def heartbeat_interval_ms(self) -> int:
        """A third of the session timeout (the usual ratio), at most 3 s (the clients' default)."""
        return min(3000, self.kafka_session_timeout_ms // 3)

    @cached_property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def topic(self, name: str) -> str:
        """The cluster's name of a declared topic."""
        return self.topic_prefix + name

    @property
    def topics_file(self) -> Path:
        return self.topics_dir / "topics.yaml"

    @property
    def routes_file(self) -> Path:
        return self.topics_dir / "routes.yaml"

    @property
    def schemas_dir(self) -> Path:
        return self.topics_dir / "schemas"

    # Large-model bridge
    llm_base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="OpenAI-compatible API base URL, with its version path (requests go to <base>/chat/completions).",
    )
    llm_model: str = Field("gpt-4o-mini", description="Model name sent with every request.")
    llm_api_key: SecretStr | None = Field(None, description="Bearer token for the endpoint (secret, never logged).")
    llm_timeout_s: float = Field(60.0, gt=0, description="Limit on one HTTP request to the endpoint.")
    llm_max_concurrency: int = Field(4, ge=1, description="Requests in flight to the endpoint at once.")
    llm_rate_per_s: float = Field(
        2.0, ge=0, description="Requests per second (token bucket, bursts up to the concurrency; 0: no limit)."
    )
    llm_max_tokens: int = Field(512, ge=16, description="Most tokens the model may write per answer.")
    llm_response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema",
        description="Structured output asked for: the answer's JSON Schema, any JSON object, or none; "
        "an endpoint whose error response names it is asked one level lower from then on.",
    )
    llm_max_retries: int = Field(5, ge=0, description="Retries of one request on 429, 5xx and timeouts.")
    llm_backoff_initial_s: float = Field(0.5, gt=0, description="First retry delay; doubles per retry, with jitter.")
    llm_backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay (a longer Retry-After is honoured).")
    llm_circuit_failures: int = Field(
        5, ge=1, description="Consecutive failed requests that open the circuit (calls stop)."
    )
    llm_circuit_reset_s: float = Field(30.0, gt=0, description="Open-circuit cool-down before one probe request.")
    bridge_group_id: str = Field("streamer-llm-bridge", description="Consumer group of the large-model bridge.")
    bridge_metrics_port: int = Field(
        9101, ge=0, le=65535, description="Port of the bridge's Prometheus /metrics (0: not served)."
    )


def log_triage_config(settings: Settings) -> LogTriageConfig:
    """The log core's configuration from ``STREAMER_LOG_*`` (the core itself never reads settings)."""
    from streamer.logs.bursts import BurstConfig
    from streamer.logs.templates import MinerConfig
    from streamer.logs.triage import LogTriageConfig

    return LogTriageConfig(
        miner=MinerConfig(max_templates=settings.log_max_templates),
        bursts=BurstConfig(
            window_ms=settings.log_burst_window_ms,
            allowed_lateness_ms=settings.log_burst_allowed_lateness_ms,
            min_count=settings.log_burst_min_count,
            factor=settings.log_burst_factor,
            alpha=settings.log_burst_alpha,
            min_severity=settings.log_burst_min_severity,
            sample_size=settings.log_burst_sample_size,
        ),
        escalate_severity=settings.log_escalate_severity,
        new_template_severity=settings.log_new_template_severity,
        sample_size=settings.log_escalation_sample_size,
        max_message_chars=settings.log_max_message_chars,
        max_mining_chars=settings.log_max_mining_chars,
    )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; a bad value becomes one readable ``ConfigError``."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"STREAMER_{'_'.join(str(p) for p in err['loc']).upper() or 'SETTINGS'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
