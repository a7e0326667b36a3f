"""What the processors and the wiring use of a loaded model bundle, as a type.

``streamer.models.bundle.Bundle`` is the implementation; the pipeline and ``streamer.runtime`` only name
this protocol, so tests can hand in a small stand-in and nothing here loads model files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Bundle", "BundleHead"]


class BundleHead(Protocol):
    """One classification head of a bundle, as far as wiring reads it."""

    @property
    def labels(self) -> Sequence[str]: ...

    @property
    def oos_threshold(self) -> float: ...


class Bundle(Protocol):
    """A loaded bundle: one encoder, the heads that share its embeddings, its name and version.

    ``predict`` makes it a ``streamer.triage.tickets.TicketModel``; ``embed`` and ``predict_embeddings``
    let a shadow bundle reuse the live embeddings (``streamer.pipeline.shadow``).
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def manifest(self) -> Mapping[str, Any]: ...

    @property
    def heads(self) -> Mapping[str, BundleHead]: ...

    @property
    def encoder(self) -> Any: ...

    def embed(self, texts: Sequence[str]) -> Any: ...

    def predict(self, texts: Sequence[str], heads: Sequence[str] | None = None) -> Mapping[str, Any]: ...

    def predict_embeddings(self, embeddings: Any, heads: Sequence[str] | None = None) -> Mapping[str, Any]: ...
