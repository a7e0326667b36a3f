"""Shadow bundles without a broker: when the live embeddings are reused, and the agreement counted."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamer.pipeline.shadow import EmbeddingTap, shadow_topic, shares_encoder


def test_encoders_are_shared_only_with_identical_weights_tokenizer_and_settings() -> None:
    live = {"files": {"model/model.bin": "a", "tokenizer.json": "t"}, "encoder": {"max_length": 256}}
    assert shares_encoder(live, {**live})
    assert not shares_encoder(live, {**live, "files": {"model/model.bin": "b", "tokenizer.json": "t"}})
    assert not shares_encoder(live, {**live, "encoder": {"max_length": 128}})
    assert not shares_encoder({"encoder": {}}, {"encoder": {}})  # no hashes: cannot tell, so not shared
    assert shadow_topic("7") == "support.tickets.enriched.v1.shadow.7"


class _Bundle:
    def __init__(self) -> None:
        self.embedded = 0
        self.name = "live"

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += 1
        return np.arange(len(texts), dtype=np.float32)[:, None]

    def predict_embeddings(self, embeddings: np.ndarray, heads: Any = None) -> dict[str, np.ndarray]:
        return {"intent": embeddings}


def test_tap_hands_the_last_embeddings_of_the_same_texts_only() -> None:
    bundle = _Bundle()
    tap = EmbeddingTap(bundle)
    out = tap.predict(["a", "b"])
    assert bundle.embedded == 1 and tap.name == "live"
    last = tap.last(["a", "b"])
    assert last is not None and last is out["intent"]
    assert tap.last(["a", "c"]) is None
