"""Errors that streamer reports to people: each carries a one-line message that says what to fix."""

from __future__ import annotations


class StreamerError(Exception):
    """Base of every error the command line prints as one line instead of a traceback."""


class ConfigError(StreamerError):
    """A setting, topic definition or routing rule is invalid."""


class KafkaUnavailable(StreamerError):
    """The brokers at the configured address cannot be reached."""
