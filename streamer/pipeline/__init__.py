"""Kafka-free batch processing for both paths: raw records in, outputs and counters out.

Above the pure cores (``streamer.triage``, ``streamer.logs``) and the model layer, below the Kafka adapters
(``streamer.agents``): no Kafka client, no Faust, no settings; the clock, contracts and policies are
passed in. ``streamer.replay``, the worker and the benchmarks all run batches through the same processors:
``tickets.TicketProcessor``, ``logs.LogProcessor`` (with ``logs.BundleIncidentClassifier``) and the shadow
bundle's ``shadow.ShadowRun``; ``bundle.Bundle`` types the model bundle they are given.
"""

from streamer.pipeline.batch import Batch, Path, log_dead_letter, sealed, utc_iso
from streamer.pipeline.bundle import Bundle

__all__ = ["Batch", "Bundle", "Path", "log_dead_letter", "sealed", "utc_iso"]
