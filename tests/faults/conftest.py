"""What the fault suite shares beyond the harness (``tests/harness``): its settings, seed, sizes and report.

Every test here runs ``python -m streamer worker --only tickets`` as a real process (``worker_factory``, so it
can be killed with SIGKILL) against a real broker: the session broker (``topic_factory``) where the fault is
in the worker, a broker or cluster of the test's own (``broker_factory``, ``cluster_factory``) where the fault
is the broker. Inputs are keyed by their id and every output keeps the input's key, so ``harness.tally.Tally``
can count, per input, what came out, and when.

Test modules import these helpers from here (``from .conftest import ...``: ``tests/faults`` is a package).
Sizes can be set from the environment (``STREAMER_FAULTS_*``, see each test); ``STREAMER_FAULTS_SEED``
fixes the random kill points and generated inputs (the seed used is printed either way).
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from harness.kafka import REPO
from harness.tally import Tally, max_gap_s

from streamer.topics import DEADLETTER, ESCALATIONS, TICKETS, TICKETS_ENRICHED

__all__ = ["DEADLETTER", "ENRICHED", "ESCALATIONS", "REPO", "TICKETS", "Tally", "max_gap_s"]

ENRICHED = TICKETS_ENRICHED

#: Faust's own settings read from the environment. Its default session timeout (60 s) is how long a
#: SIGKILLed member keeps its partitions before the group gives them to someone else; the suite uses 10 s
#: so that five kills fit in its time budget (a deployment setting, not a correctness one).
FAUST_ENV = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}
#: What every worker of the suite runs with (plus ``FAUST_ENV`` unless a test says otherwise).
WORKER_ENV = {"STREAMER_LOG_LEVEL": "INFO", "STREAMER_SHUTDOWN_TIMEOUT_S": "20"}


def env_int(name: str, default: int) -> int:
    """``STREAMER_FAULTS_<name>`` from the environment, else ``default``."""
    value = os.environ.get(f"STREAMER_FAULTS_{name}")
    return int(value) if value else default


def report(title: str, numbers: dict[str, Any]) -> None:
    """Print a test's measured numbers (visible with ``-s``, and in the report of a failing test)."""
    width = max(len(k) for k in numbers)
    lines = [f"== {title} =="] + [f"  {k:<{width}}  {v}" for k, v in numbers.items()]
    print("\n" + "\n".join(lines), flush=True)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded random generator; the seed is ``STREAMER_FAULTS_SEED`` or a fresh one, printed."""
    seed = env_int("SEED", random.SystemRandom().randrange(1 << 30))
    print(f"\n{request.node.name}: STREAMER_FAULTS_SEED={seed}", flush=True)
    return random.Random(seed)
