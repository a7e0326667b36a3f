"""Kafka-free batch processing for both paths: raw records in, outputs and counters out.

Above the pure cores (``streamer.triage``, ``streamer.logs``) and the model layer, below the Kafka adapters
(``streamer.agents``): no Kafka client, no Faust, no settings; the clock, contracts and policies are
passed in. ``streamer.replay``, the worker and the benchmarks all run batches through the same processors.
"""

from streamer.pipeline.batch import Batch, Path, sealed, utc_iso

__all__ = ["Batch", "Path", "sealed", "utc_iso"]
