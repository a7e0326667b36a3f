"""Where streamer keeps what it fetches or unpacks once: one cache root, outside git, shared by checkouts.

Stdlib-only, like :mod:`streamer.kafka.local`, which needs it before the project's dependencies exist.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/streamer``, else ``~/.cache/streamer``: Kafka jars and unpacked weights live here."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamer"
