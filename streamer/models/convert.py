"""Convert a Hugging Face BERT or MPNet checkpoint (safetensors) to a CTranslate2 encoder without torch.

``ctranslate2.specs`` accepts numpy arrays, so reading ``model.safetensors`` with ``safetensors.numpy`` and
filling the same spec as CTranslate2's own ``BertLoader`` gives a ``model.bin`` byte-identical to
``TransformersConverter``'s, in a fraction of the time and memory and without torch/transformers installed.
MPNet, which ``TransformersConverter`` does not handle at all, is mapped onto the same encoder spec (see
:class:`InputLayout`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
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


ENCODER_CONFIG = "streamer_encoder.json"
"""Written beside ``model.bin``: how the runtime must feed the model (see :class:`InputLayout`)."""


@dataclass(frozen=True)
class InputLayout:
    """How token positions reach a converted model.

    BERT models get their absolute positions from CTranslate2's position table. MPNet adds learned
    absolute positions *and* a T5-style relative attention bias; CTranslate2 allows only one of the two
    per encoder, so the absolute table is stored as the second input embedding (where BERT keeps its
    token types) and the runtime passes ``position_offset + i`` as that input for token ``i``.
    """

    positions_as_second_input: bool = False
    position_offset: int = 0

    @classmethod
    def read(cls, model_dir: Path) -> InputLayout:
        path = model_dir / ENCODER_CONFIG
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(bool(data.get("positions_as_second_input")), int(data.get("position_offset", 0)))


def convert_checkpoint(
    source_dir: Path, output_dir: Path, *, quantization: str | None = None, force: bool = False
) -> ConversionResult:
    """Convert the BERT or MPNet checkpoint in ``source_dir`` into a CTranslate2 model directory.

    ``quantization=None`` keeps the checkpoint's float32 weights so the compute type can be chosen at load
    time (int8 on CPU, float16 on CUDA) from one artefact.
    """
    started = time.perf_counter()
    config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in _SPEC_BUILDERS:
        supported = " or ".join(repr(t) for t in _SPEC_BUILDERS)
        raise ConversionError(f"{source_dir}: model_type {model_type!r} is not {supported}")
    activation = _ACTIVATIONS.get(config.get("hidden_act", "gelu"))
    if activation is None:
        raise ConversionError(f"{source_dir}: unsupported activation {config.get('hidden_act')!r}")
    weights = _Weights(load_file(str(source_dir / "model.safetensors")), source_dir, model_type)
    spec, layout = _SPEC_BUILDERS[model_type](config, weights, activation)

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
    if layout != InputLayout():
        (output_dir / ENCODER_CONFIG).write_text(json.dumps(asdict(layout), indent=2) + "\n", encoding="utf-8")
    max_positions = int(config.get("max_position_embeddings", 512)) - layout.position_offset
    return ConversionResult(
        output_dir=output_dir,
        dim=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        vocab_size=len(tokens),
        max_positions=max_positions,
        quantization=quantization,
        seconds=time.perf_counter() - started,
    )


def _bert_spec(config: dict[str, Any], weights: _Weights, activation: Any) -> tuple[Any, InputLayout]:
    """The same spec CTranslate2's own ``BertLoader`` fills."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{weights.source}: only absolute position embeddings are supported")
    spec = _post_norm_encoder(config, weights, activation, relative_attention_bias=False)
    spec.encoder.embeddings[1].weight = weights["embeddings.token_type_embeddings.weight"]
    spec.encoder.position_encodings.encodings = weights["embeddings.position_embeddings.weight"]
    for i, layer in enumerate(spec.encoder.layer):
        p = f"encoder.layer.{i}"
        _attention(layer.self_attention, weights, [f"{p}.attention.self.{n}" for n in ("query", "key", "value")])
        _linear(layer.self_attention.linear[1], weights, f"{p}.attention.output.dense")
        _layer_norm(layer.self_attention.layer_norm, weights, f"{p}.attention.output.LayerNorm")
        _ffn(layer.ffn, weights, p)
    return spec, InputLayout()


def _mpnet_spec(config: dict[str, Any], weights: _Weights, activation: Any) -> tuple[Any, InputLayout]:
    """MPNet: BERT's post-norm layers plus one relative attention bias table shared by every layer.

    The bias uses T5's bidirectional buckets (32 buckets, max distance 128), which CTranslate2 implements.
    """
    bias = weights["encoder.relative_attention_bias.weight"]
    if int(config.get("relative_attention_num_buckets", 32)) != bias.shape[0]:
        raise ConversionError(f"{weights.source}: relative attention bias does not match its bucket count")
    spec = _post_norm_encoder(config, weights, activation, relative_attention_bias=True)
    spec.encoder.embeddings[1].weight = weights["embeddings.position_embeddings.weight"]
    for i, layer in enumerate(spec.encoder.layer):
        p = f"encoder.layer.{i}"
        _attention(layer.self_attention, weights, [f"{p}.attention.attn.{n}" for n in ("q", "k", "v")])
        _linear(layer.self_attention.linear[1], weights, f"{p}.attention.attn.o")
        _layer_norm(layer.self_attention.layer_norm, weights, f"{p}.attention.LayerNorm")
        layer.self_attention.relative_attention_bias = bias
        layer.self_attention.relative_attention_max_distance = np.dtype("int32").type(128)
        _ffn(layer.ffn, weights, p)
    # Positions start after the padding index, as in RoBERTa: token i has position pad_token_id + 1 + i.
    return spec, InputLayout(positions_as_second_input=True, position_offset=int(config.get("pad_token_id", 1)) + 1)


def _post_norm_encoder(
    config: dict[str, Any], weights: _Weights, activation: Any, *, relative_attention_bias: bool
) -> Any:
    encoder = transformer_spec.TransformerEncoderSpec(
        int(config["num_hidden_layers"]),
        int(config["num_attention_heads"]),
        pre_norm=False,
        activation=activation,
        layernorm_embedding=True,
        num_source_embeddings=2,
        embeddings_merge=common_spec.EmbeddingsMerge.ADD,
        relative_attention_bias=relative_attention_bias,
    )
    has_pooler = weights.has("pooler.dense.weight")
    spec = transformer_spec.TransformerEncoderModelSpec(
        encoder, pooling_layer=has_pooler, pooling_activation=common_spec.Activation.Tanh
    )
    spec.encoder.scale_embeddings = False
    spec.encoder.embeddings[0].weight = weights["embeddings.word_embeddings.weight"]
    _layer_norm(spec.encoder.layernorm_embedding, weights, "embeddings.LayerNorm")
    if has_pooler:
        _linear(spec.pooler_dense, weights, "pooler.dense")
    return spec


def _attention(spec: Any, weights: _Weights, qkv: list[str]) -> None:
    spec.linear[0].weight = np.concatenate([weights[f"{n}.weight"] for n in qkv])
    spec.linear[0].bias = np.concatenate([weights[f"{n}.bias"] for n in qkv])


def _ffn(spec: Any, weights: _Weights, prefix: str) -> None:
    _linear(spec.linear_0, weights, f"{prefix}.intermediate.dense")
    _linear(spec.linear_1, weights, f"{prefix}.output.dense")
    _layer_norm(spec.layer_norm, weights, f"{prefix}.output.LayerNorm")


class _Weights:
    """Name lookup tolerant of task checkpoints that prefix every tensor with the model type (``bert.``)."""

    def __init__(self, tensors: dict[str, Array], source: Path, model_type: str) -> None:
        self._tensors = tensors
        self.source = source
        prefixed = f"{model_type}.embeddings.word_embeddings.weight" in tensors
        self._prefix = f"{model_type}." if prefixed else ""

    def has(self, name: str) -> bool:
        return self._prefix + name in self._tensors

    def __getitem__(self, name: str) -> Array:
        try:
            return self._tensors[self._prefix + name]
        except KeyError:
            raise ConversionError(f"{self.source}: tensor {self._prefix + name!r} is missing") from None


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


_SPEC_BUILDERS = {"bert": _bert_spec, "mpnet": _mpnet_spec}
