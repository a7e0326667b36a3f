"""Convert a Hugging Face BERT checkpoint (safetensors) to a CTranslate2 encoder without torch.

``ctranslate2.specs`` accepts numpy arrays, so reading ``model.safetensors`` with ``safetensors.numpy`` and
filling the same spec as CTranslate2's own ``BertLoader`` gives a ``model.bin`` byte-identical to
``TransformersConverter``'s, in a fraction of the time and memory and without torch/transformers installed.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ctranslate2.specs import common_spec, transformer_spec
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from streamer.models.errors import ConversionError

_ACTIVATIONS = {
    "gelu": common_spec.Activation.GELU,
    "gelu_fast": common_spec.Activation.GELUTanh,
    "gelu_new": common_spec.Activation.GELUTanh,
    "gelu_python": common_spec.Activation.GELU,
    "gelu_pytorch_tanh": common_spec.Activation.GELUTanh,
    "quick_gelu": common_spec.Activation.GELUSigmoid,
    "relu": common_spec.Activation.RELU,
    "silu": common_spec.Activation.SWISH,
    "swish": common_spec.Activation.SWISH,
}

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion produced; ``dim`` is the hidden size the pooled embeddings will have."""

    output_dir: Path
    dim: int
    num_layers: int
    vocab_size: int
    max_positions: int
    quantization: str | None
    seconds: float


def convert_bert(
    source_dir: Path, output_dir: Path, *, quantization: str | None = None, force: bool = False
) -> ConversionResult:
    """Convert the BERT checkpoint in ``source_dir`` into a CTranslate2 model directory ``output_dir``.

    ``quantization=None`` keeps the checkpoint's float32 weights so the compute type can be chosen at load
    time (int8 on CPU, float16 on CUDA) from one artefact.
    """
    started = time.perf_counter()
    config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise ConversionError(f"{source_dir}: model_type {config.get('model_type')!r} is not 'bert'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{source_dir}: only absolute position embeddings are supported")
    activation = _ACTIVATIONS.get(config.get("hidden_act", "gelu"))
    if activation is None:
        raise ConversionError(f"{source_dir}: unsupported activation {config.get('hidden_act')!r}")

    weights = _Weights(load_file(str(source_dir / "model.safetensors")), source_dir)
    has_pooler = weights.has("pooler.dense.weight")
    num_layers = int(config["num_hidden_layers"])
    encoder = transformer_spec.TransformerEncoderSpec(
        num_layers,
        int(config["num_attention_heads"]),
        pre_norm=False,
        activation=activation,
        layernorm_embedding=True,
        num_source_embeddings=2,
        embeddings_merge=common_spec.EmbeddingsMerge.ADD,
    )
    spec = transformer_spec.TransformerEncoderModelSpec(
        encoder, pooling_layer=has_pooler, pooling_activation=common_spec.Activation.Tanh
    )
    spec.encoder.scale_embeddings = False
    spec.encoder.embeddings[0].weight = weights["embeddings.word_embeddings.weight"]
    spec.encoder.embeddings[1].weight = weights["embeddings.token_type_embeddings.weight"]
    spec.encoder.position_encodings.encodings = weights["embeddings.position_embeddings.weight"]
    _layer_norm(spec.encoder.layernorm_embedding, weights, "embeddings.LayerNorm")
    if has_pooler:
        _linear(spec.pooler_dense, weights, "pooler.dense")

    for i, layer in enumerate(spec.encoder.layer):
        p = f"encoder.layer.{i}"
        qkv = [f"{p}.attention.self.{n}" for n in ("query", "key", "value")]
        layer.self_attention.linear[0].weight = np.concatenate([weights[f"{n}.weight"] for n in qkv])
        layer.self_attention.linear[0].bias = np.concatenate([weights[f"{n}.bias"] for n in qkv])
        _linear(layer.self_attention.linear[1], weights, f"{p}.attention.output.dense")
        _layer_norm(layer.self_attention.layer_norm, weights, f"{p}.attention.output.LayerNorm")
        _linear(layer.ffn.linear_0, weights, f"{p}.intermediate.dense")
        _linear(layer.ffn.linear_1, weights, f"{p}.output.dense")
        _layer_norm(layer.ffn.layer_norm, weights, f"{p}.output.LayerNorm")

    tokens = _vocabulary(source_dir / "tokenizer.json", int(config["vocab_size"]))
    spec.config.unk_token = _unk_token(source_dir)
    spec.config.layer_norm_epsilon = float(config.get("layer_norm_eps", 1e-12))
    spec.register_vocabulary(tokens)

    spec.validate()
    spec.optimize(quantization=quantization)
    if output_dir.exists():
        if not force:
            raise ConversionError(f"{output_dir} exists; pass force=True to replace it")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    spec.save(str(output_dir))
    return ConversionResult(
        output_dir=output_dir,
        dim=int(config["hidden_size"]),
        num_layers=num_layers,
        vocab_size=len(tokens),
        max_positions=int(config.get("max_position_embeddings", 512)),
        quantization=quantization,
        seconds=time.perf_counter() - started,
    )


class _Weights:
    """Name lookup tolerant of task checkpoints that prefix every tensor with ``bert.``."""

    def __init__(self, tensors: dict[str, Array], source: Path) -> None:
        self._tensors = tensors
        self._source = source
        self._prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

    def has(self, name: str) -> bool:
        return self._prefix + name in self._tensors

    def __getitem__(self, name: str) -> Array:
        try:
            return self._tensors[self._prefix + name]
        except KeyError:
            raise ConversionError(f"{self._source}: tensor {self._prefix + name!r} is missing") from None


def _linear(spec: Any, weights: _Weights, name: str) -> None:
    spec.weight = weights[f"{name}.weight"]
    spec.bias = weights[f"{name}.bias"]


def _layer_norm(spec: Any, weights: _Weights, name: str) -> None:
    spec.gamma = weights[f"{name}.weight"]
    spec.beta = weights[f"{name}.bias"]


def _vocabulary(tokenizer_path: Path, vocab_size: int) -> list[str]:
    """Tokens in id order, padded like the BertLoader when the embedding matrix is larger."""
    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    tokens.extend(f"<extra_id_{i}>" for i in range(vocab_size - len(tokens)))
    return tokens


def _unk_token(source_dir: Path) -> str:
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = source_dir / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("unk_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                return value
    return "[UNK]"
