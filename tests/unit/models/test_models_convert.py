"""Conversion without torch: checked against a float64 numpy BERT forward on a tiny random model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from streamer.models.convert import convert_checkpoint
from streamer.models.encoder import Encoder
from streamer.models.errors import ConversionError


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _post_norm_layers(
    t: dict[str, np.ndarray],
    x: np.ndarray,
    names: dict[str, str],
    *,
    heads: int,
    eps: float,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """BERT-style post-norm layers in float64 (exact erf GELU); ``names`` maps the attention tensors of an
    architecture (query/key/value/output/norm) and ``bias`` is an optional ``(n, n, heads)`` score bias."""
    erf = np.vectorize(math.erf)
    layer = 0
    while f"encoder.layer.{layer}.{names['query']}.weight" in t:
        p = f"encoder.layer.{layer}"

        def lin(name: str, h: np.ndarray, p: str = p) -> np.ndarray:
            return h @ t[f"{p}.{name}.weight"].T + t[f"{p}.{name}.bias"]

        q, k, v = (lin(names[m], x) for m in ("query", "key", "value"))
        d = q.shape[-1] // heads
        ctx = np.zeros_like(x)
        for h in range(heads):
            s = slice(h * d, (h + 1) * d)
            scores = q[:, s] @ k[:, s].T / math.sqrt(d) + (0.0 if bias is None else bias[:, :, h])
            att = np.exp(scores - scores.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx[:, s] = att @ v[:, s]
        norm = names["norm"]
        x = _layer_norm(x + lin(names["output"], ctx), t[f"{p}.{norm}.weight"], t[f"{p}.{norm}.bias"], eps)
        inter = lin("intermediate.dense", x)
        inter = 0.5 * inter * (1 + erf(inter / math.sqrt(2)))
        x = _layer_norm(
            x + lin("output.dense", inter), t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"], eps
        )
        layer += 1
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


_BERT_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "output": "attention.output.dense",
    "norm": "attention.output.LayerNorm",
}
_MPNET_NAMES = {
    "query": "attention.attn.q",
    "key": "attention.attn.k",
    "value": "attention.attn.v",
    "output": "attention.attn.o",
    "norm": "attention.LayerNorm",
}


def _tensors(root: Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in load_file(str(root / "model.safetensors")).items()}


def numpy_bert_mean_pooled(root: Path, ids: list[int], heads: int = 2) -> np.ndarray:
    """Reference BERT forward, mean-pooled and normalised."""
    t = _tensors(root)
    n = len(ids)
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
    x = x + t["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    return _post_norm_layers(t, x, _BERT_NAMES, heads=heads, eps=1e-12)


def test_tiny_bert_matches_numpy_reference(tiny_bert: Path, tmp_path: Path) -> None:
    result = convert_checkpoint(tiny_bert, tmp_path / "ct2")
    assert result.dim == 8 and result.num_layers == 2
    assert {"model.bin", "config.json"} <= {p.name for p in (tmp_path / "ct2").iterdir()}
    config = json.loads((tmp_path / "ct2" / "config.json").read_text())
    assert config["unk_token"] == "[UNK]"
    enc = Encoder(tmp_path / "ct2", tiny_bert / "tokenizer.json", device="cpu", compute_type="float32")
    texts = ["hello world", "my card is late", "refund", "hello my card is late refund world hello"]
    got = enc.encode(texts)
    for text, ids, vec in zip(texts, enc.tokenize(texts), got, strict=True):
        ref = numpy_bert_mean_pooled(tiny_bert, ids)
        assert float(vec @ ref) > 0.9999, text


def _relative_bucket(relative: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """MPNet's (and T5's bidirectional) bucket of ``key position - query position``."""
    half = num_buckets // 2
    bucket = half if relative > 0 else 0
    n = abs(relative)
    exact = half // 2
    if n < exact:
        return bucket + n
    large = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return bucket + min(large, half - 1)


def numpy_mpnet_mean_pooled(root: Path, ids: list[int], heads: int = 2, pad_id: int = 1) -> np.ndarray:
    """Reference MPNet forward: positions start after the padding index, and one relative attention bias
    table is added to every layer's scaled scores."""
    t = _tensors(root)
    n = len(ids)
    positions = t["embeddings.position_embeddings.weight"][pad_id + 1 : pad_id + 1 + n]
    x = _layer_norm(
        t["embeddings.word_embeddings.weight"][ids] + positions,
        t["embeddings.LayerNorm.weight"],
        t["embeddings.LayerNorm.bias"],
        1e-5,
    )
    table = t["encoder.relative_attention_bias.weight"]
    bias = np.array([[table[_relative_bucket(j - i)] for j in range(n)] for i in range(n)])
    return _post_norm_layers(t, x, _MPNET_NAMES, heads=heads, eps=1e-5, bias=bias)


def test_tiny_mpnet_matches_numpy_reference(tiny_mpnet: Path, tmp_path: Path) -> None:
    result = convert_checkpoint(tiny_mpnet, tmp_path / "ct2")
    # Two of the 40 position rows sit below the first real position (the padding index and the one before).
    assert result.dim == 8 and result.max_positions == 38
    enc = Encoder(tmp_path / "ct2", tiny_mpnet / "tokenizer.json", device="cpu", compute_type="float32")
    long = " ".join(["hello my card is late refund world"] * 4)  # 30 tokens: log-spaced buckets in play
    texts = ["hello world", "my card is late", "refund", long]
    got = enc.encode(texts)  # one padded batch: positions and bias must ignore the padding
    for text, ids, vec in zip(texts, enc.tokenize(texts), got, strict=True):
        ref = numpy_mpnet_mean_pooled(tiny_mpnet, ids)
        assert float(vec @ ref) > 0.9999, text
    alone = enc.encode([long])[0]
    assert float(alone @ got[3]) > 0.99999


def test_mpnet_without_its_position_input_differs(tiny_mpnet: Path, tmp_path: Path) -> None:
    """The position input is what carries word order: dropping the layout file must change the output."""
    convert_checkpoint(tiny_mpnet, tmp_path / "ct2")
    enc = Encoder(tmp_path / "ct2", tiny_mpnet / "tokenizer.json", device="cpu", compute_type="float32")
    (tmp_path / "ct2" / "streamer_encoder.json").unlink()
    blind = Encoder(tmp_path / "ct2", tiny_mpnet / "tokenizer.json", device="cpu", compute_type="float32")
    text = ["my card is late refund"]
    assert float(enc.encode(text)[0] @ blind.encode(text)[0]) < 0.999


def test_prefixed_checkpoint_converts_like_plain(tiny_bert: Path, tmp_path: Path) -> None:
    """Task checkpoints (BertForSequenceClassification) prefix tensors with ``bert.``."""
    prefixed = tmp_path / "prefixed"
    shutil.copytree(tiny_bert, prefixed)
    tensors = load_file(str(tiny_bert / "model.safetensors"))
    save_file({f"bert.{k}": v for k, v in tensors.items()}, str(prefixed / "model.safetensors"))
    convert_checkpoint(tiny_bert, tmp_path / "a")
    convert_checkpoint(prefixed, tmp_path / "b")
    assert (tmp_path / "a" / "model.bin").read_bytes() == (tmp_path / "b" / "model.bin").read_bytes()


def test_existing_output_needs_force(tiny_bert: Path, tmp_path: Path) -> None:
    convert_checkpoint(tiny_bert, tmp_path / "out")
    with pytest.raises(ConversionError, match="exists"):
        convert_checkpoint(tiny_bert, tmp_path / "out")
    convert_checkpoint(tiny_bert, tmp_path / "out", force=True)


def test_rejects_other_architectures_and_missing_tensors(tiny_bert: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_bert, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ConversionError, match="roberta"):
        convert_checkpoint(other, tmp_path / "x")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    tensors = load_file(str(tiny_bert / "model.safetensors"))
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        convert_checkpoint(broken, tmp_path / "y")
