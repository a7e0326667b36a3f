"""What every part of the local broker shares: its error, the checkout's locations, a file lock."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEPLOY_DIR", "LOCK_FILE", "REPO_ROOT", "LocalKafkaError", "locked", "tail_text"]

REPO_ROOT = Path(__file__).resolve().parents[3]
#: pom.xml (the jars to fetch) and the log4j2 configurations.
DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
LOCK_FILE = ".lock"


class LocalKafkaError(RuntimeError):
    """The local broker could not be set up, started or stopped; the message says why (and what to do)."""


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent start()/stop()/ensure_jars() calls take turns."""
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def tail_text(text: str, n: int) -> str:
    lines = text.rstrip().splitlines()[-n:]
    return "\n".join(lines) if lines else "(no output)"
