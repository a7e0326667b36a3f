"""streamer: real-time triage of support tickets and logs on Kafka with small models.

Small CTranslate2 models classify, extract, route and redact close to the data; only the hard cases
escalate to a large model.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
