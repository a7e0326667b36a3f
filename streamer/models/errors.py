"""Exceptions of the model runtime, so callers can tell a bad bundle from a bug."""

from __future__ import annotations

from streamer.errors import StreamerError


class ModelError(StreamerError):
    """Base class of every error raised by :mod:`streamer.models`."""


class SourceError(ModelError):
    """Base weights could not be found or are not in a supported layout."""


class ConversionError(ModelError):
    """A checkpoint could not be turned into a CTranslate2 model."""


class BundleError(ModelError):
    """A bundle is missing a file, has a file whose hash differs, or has an unknown format.

    ``path`` names the offending file (or the bundle directory) so operators can act on it.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DataError(ModelError):
    """Training or evaluation data is malformed (missing column, empty file, unknown label)."""
