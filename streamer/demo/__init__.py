"""Deterministic demo traffic (support tickets, service log lines) and ``streamer demo``, the job ``make run`` runs.

Demos, benchmarks and tests need realistic input without real customer data, and they need the same
input on every run, so everything comes from one seeded ``random.Random`` and a fixed start time (never
the wall clock). The wording lives in ``phrasings/*.yaml``, deliberately separate from the labelled
training data in ``streamer/resources/data`` so that accuracy measured on demo traffic is not inflated
by memorised text.

- ``tickets``: ``demo_tickets``; ``logs``: ``demo_log_lines``, ``demo_log_story``; ``identifiers``:
  checksum-valid cards and IBANs; ``slots``: placeholder values; ``phrasings``: the data files' loader.
- ``run``: the ``streamer demo`` command (topics, bundle, worker, traffic, summary, replay);
  ``report``: what it counts and prints (pure).
"""

from __future__ import annotations

from streamer.demo.identifiers import valid_iban, valid_luhn_card
from streamer.demo.logs import STORY_BURST, codename, demo_log_lines, demo_log_story, first_seen_error
from streamer.demo.tickets import demo_tickets

__all__ = [
    "STORY_BURST",
    "codename",
    "demo_log_lines",
    "demo_log_story",
    "demo_tickets",
    "first_seen_error",
    "valid_iban",
    "valid_luhn_card",
]
