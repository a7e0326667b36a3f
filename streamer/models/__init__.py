"""Model runtime: a CTranslate2 sentence encoder and numpy classification heads, loaded from bundles.

Knows nothing of Kafka or tickets: texts in, embeddings and per-head predictions out.
"""

from streamer.models.bundle import FORMAT_VERSION, Bundle, load_bundle
from streamer.models.encoder import Encoder, plan_batches, resolve_device
from streamer.models.errors import BundleError, ConversionError, DataError, ModelError, SourceError
from streamer.models.heads import Head, HeadOutput

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "ConversionError",
    "DataError",
    "Encoder",
    "Head",
    "HeadOutput",
    "ModelError",
    "SourceError",
    "load_bundle",
    "plan_batches",
    "resolve_device",
]
