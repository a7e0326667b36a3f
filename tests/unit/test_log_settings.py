"""The log path's knobs as ``STREAMER_LOG_*`` settings: same defaults as the core, validated, and wired in."""

from __future__ import annotations

import asyncio
import typing
from types import SimpleNamespace
from typing import Any

import pytest

from streamer.errors import ConfigError
from streamer.logs.bursts import BurstConfig
from streamer.logs.decode import SEVERITY_RANK
from streamer.logs.templates import MinerConfig
from streamer.logs.triage import LogTriageConfig
from streamer.settings import LogSeverity, Settings, load_settings, log_triage_config


def test_defaults_are_the_cores_own() -> None:
    """Nothing changes for a worker that sets none of them."""
    assert log_triage_config(Settings()) == LogTriageConfig()
    assert set(typing.get_args(LogSeverity)) == set(SEVERITY_RANK) - {"unknown"}


def test_every_knob_reaches_the_core_config(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "STREAMER_LOG_BURST_WINDOW_MS": "30000",
        "STREAMER_LOG_BURST_ALLOWED_LATENESS_MS": "0",
        "STREAMER_LOG_BURST_MIN_COUNT": "7",
        "STREAMER_LOG_BURST_FACTOR": "2.5",
        "STREAMER_LOG_BURST_ALPHA": "1",
        "STREAMER_LOG_BURST_MIN_SEVERITY": "error",
        "STREAMER_LOG_BURST_SAMPLE_SIZE": "4",
        "STREAMER_LOG_ESCALATE_SEVERITY": "critical",
        "STREAMER_LOG_NEW_TEMPLATE_SEVERITY": "warning",
        "STREAMER_LOG_ESCALATION_SAMPLE_SIZE": "2",
        "STREAMER_LOG_MAX_MESSAGE_CHARS": "500",
        "STREAMER_LOG_MAX_MINING_CHARS": "256",
        "STREAMER_LOG_MAX_TEMPLATES": "99",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert log_triage_config(load_settings()) == LogTriageConfig(
        miner=MinerConfig(max_templates=99),
        bursts=BurstConfig(
            window_ms=30_000,
            allowed_lateness_ms=0,
            min_count=7,
            factor=2.5,
            alpha=1.0,
            min_severity="error",
            sample_size=4,
        ),
        escalate_severity="critical",
        new_template_severity="warning",
        sample_size=2,
        max_message_chars=500,
        max_mining_chars=256,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STREAMER_LOG_MAX_BATCH", "0", "greater than or equal to 1"),
        ("STREAMER_LOG_MAX_WAIT_MS", "soon", "valid integer"),
        ("STREAMER_LOG_BURST_ALPHA", "0", "greater than 0"),
        ("STREAMER_LOG_BURST_ALPHA", "1.5", "less than or equal to 1"),
        ("STREAMER_LOG_BURST_FACTOR", "-1", "greater than 0"),
        ("STREAMER_LOG_BURST_WINDOW_MS", "10", "greater than or equal to 1000"),
        ("STREAMER_LOG_BURST_MIN_SEVERITY", "loud", "'warning'"),
        ("STREAMER_LOG_ESCALATE_SEVERITY", "unknown", "'error'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as caught:
        load_settings()
    assert says in str(caught.value) and "\n" not in str(caught.value)


class _Head:
    """The incident head's classes: those the shipped log routes name, and ``other``."""

    labels = ("auth", "payment", "storage", "database", "network", "resource", "deployment", "other")


def test_the_log_runtime_and_service_take_their_knobs_from_settings() -> None:
    from streamer.runtime import load_log_runtime
    from streamer.worker import log_service

    settings = Settings(
        log_max_batch=321,
        log_max_wait_ms=7,
        log_burst_min_count=3,
        log_new_template_severity="critical",
        log_max_templates=10,
    )
    bundle = SimpleNamespace(heads={"incident": _Head()}, name="b", version="v1")
    runtime = load_log_runtime(settings, bundle)
    assert runtime.state.config == log_triage_config(settings)
    assert runtime.state.bursts.config.min_count == 3
    assert runtime.state.miner.config.max_templates == 10

    async def build(**kwargs: Any) -> Any:  # the consumer and producer are only made on start
        return log_service(settings, runtime, inline=True, **kwargs)

    service = asyncio.run(build())
    assert (service.max_batch, service.max_wait_s) == (321, 0.007)
    assert asyncio.run(build(max_batch=5)).max_batch == 5  # a caller's own batch size still wins
