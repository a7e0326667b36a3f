"""GPU benchmark: CTranslate2 encoders on CUDA against the CPU int8 path, parity, and the ticket core on a GPU.

    python bench/bench_gpu.py --bundle DIR --json out.json [--device cuda] [--budget-s 330]
    python bench/bench_gpu.py --bundle DIR --preflight      # exit 0 when CTranslate2 runs the bundle on CUDA
    python bench/bench_gpu.py --show bench/results/bench-h200-gpu.json   # the tables of a finished run

Made to run once on a bare GPU machine with no network: every input is built on the spot.
- Texts: "short" are the support queries the package ships (streamer/resources/data; BANKING77-like
  lengths), "long" are synthesized multi-sentence tickets (bench_models' generator).
- MiniLM: the bundle's own encoder; its stored weights are used whatever the compute type asked for.
- MPNet: a random-weight checkpoint of all-mpnet-base-v2's exact shape, converted on the spot by
  ``streamer.models.convert``, tokenized with the bundle's tokenizer: speed only, never accuracy.
- Encoder rows: texts/s, p50/p99 latency of one ``Encoder.encode`` call (tokenize, length bucketing,
  forward, copy to host, pooling), GPU memory in use (NVML, whole device); the CPU int8 path on the same
  texts with every core is the baseline of each ratio.
- Parity: CUDA embeddings against the float32 reference in tests/fixtures (a different weight file:
  sentence-transformers' float32), and against the CPU running the same stored weights in float32
  (which separates the GPU's arithmetic from the weights' own rounding).
- Ticket core: the processor ``streamer.runtime.load_ticket_runtime`` wires for a worker (decode, model,
  language, redaction, extraction, escalation, routing, records), plus serializing the records as the
  sender does, on demo tickets: tickets/s of one process per batch size, and where the time goes.
- Encode breakdown: the stages of one ``Encoder.encode`` on CUDA, and what float16 copies or pooling on the
  GPU (PyTorch through the CUDA array interface) would give on the same sub-batches.
- Ticket workers: P processes, each a worker's core on the one GPU (or CPU int8 with one thread), started
  together for a fixed window: total tickets/s, as P worker pods on one machine would do.
- ``--gpu-backend torch``: when CTranslate2 cannot run on CUDA, the same architectures in PyTorch float16
  with random weights stand in for the GPU rows (speed only, labelled as such).
Each section rewrites the JSON file when it ends (rows also as they come), so a failure or the time
budget loses only what was not reached; ``--sections`` runs a subset.

On a machine whose CUDA is 13 (as the H200 measured here): the ctranslate2 wheel loads ``libcublas.so.12``,
so links named ``libcublas.so.12`` and ``libcublasLt.so.12`` to CUDA 13's libraries, in a folder first on
LD_LIBRARY_PATH, let it run there (the GPU image ships CUDA 12 and needs none of this).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.metadata as md
import inspect
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_models import _CLOSERS, _OPENERS, _SENTENCES  # noqa: E402

from streamer.models.encoder import Encoder, plan_batches  # noqa: E402

REFERENCE = REPO / "tests" / "fixtures" / "models" / "reference_embeddings.json"
SHORT_FILES = ("intents.jsonl", "priority.jsonl", "sentiment.jsonl")
BATCH_SIZES = (64, 256, 1024, 4096)
CORE_BATCHES = (64, 256, 1024, 4096)
MINILM_SHAPE = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
}
MPNET_SHAPE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30527,
    "max_position_embeddings": 514,
}


class Run:
    """Results so far, a deadline, and a JSON file rewritten after every section."""

    def __init__(self, path: Path | None, budget_s: float, only: Sequence[str] = ()) -> None:
        self.path = path
        self.only = set(only)
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"settings": {}, "sections": {}, "errors": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def section(self, name: str, need_s: float, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Run ``fn(out)`` unless less than ``need_s`` is left; an exception is recorded, never raised."""
        out: dict[str, Any] = {}
        if self.only and name not in self.only and name != "machine":
            return out
        if self.left() < need_s:
            self.data["errors"][name] = f"skipped: {self.left():.0f} s left, {need_s:.0f} needed"
            print(f"== {name}: skipped ({self.left():.0f} s left)", flush=True)
            self.save()
            return out
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        self.data["sections"][name] = out
        t0 = time.perf_counter()
        try:
            fn(out)
        except Exception as exc:  # one broken section must not lose the others
            self.data["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
            print(f"!! {name} failed: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
        out["section_s"] = round(time.perf_counter() - t0, 1)
        self.save()
        return out


# --------------------------------------------------------------------------------------------- inputs


def short_texts(seed: int = 0) -> list[str]:
    """The support queries shipped with the package (intent, priority and sentiment seed sets)."""
    folder = REPO / "streamer" / "resources" / "data"
    texts = []
    for name in SHORT_FILES:
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    random.Random(seed).shuffle(texts)
    return texts


def long_texts(n: int, seed: int = 0) -> list[str]:
    """Multi-sentence tickets, as bench_models builds them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = " ".join(rng.sample(_SENTENCES, rng.randint(4, 10)))
        out.append(f"{rng.choice(_OPENERS)} {body} {rng.choice(_CLOSERS)}".strip())
    return out


def pool_of(texts: Sequence[str], size: int) -> list[str]:
    """``size`` texts cycling through ``texts``; a repeat costs the encoder what a new text costs."""
    return [texts[i % len(texts)] for i in range(size)]


def token_stats(tokenizer_path: Path, texts: Sequence[str]) -> dict[str, float]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(256)
    lens = np.array([len(e.ids) for e in tok.encode_batch(list(texts))])
    return {
        "texts": len(texts),
        "mean_tokens": round(float(lens.mean()), 1),
        "p95_tokens": float(np.percentile(lens, 95)),
    }


# ------------------------------------------------------------------------------------------ machine


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


def version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def cublas_shim() -> dict[str, str]:
    """Where ``libcublas.so.12`` resolves on LD_LIBRARY_PATH (a link to CUDA 13's on the test machine)."""
    found = {}
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        for name in ("libcublas.so.12", "libcublasLt.so.12"):
            path = Path(folder) / name
            if folder and name not in found and path.exists():
                found[name] = f"{path} -> {path.resolve()}"
    return found


def machine(out: dict[str, Any]) -> None:
    import ctranslate2

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpus = ctranslate2.get_cuda_device_count()
    smi = sh(["nvidia-smi"])
    out |= {
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": sh(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                "--format=csv,noheader",
            ]
        ),
        "cuda_driver_api": smi.split("CUDA Version:")[-1].split("|")[0].strip() if "CUDA Version:" in smi else None,
        "ctranslate2_cuda_devices": gpus,
        "ctranslate2_cuda_compute_types": sorted(ctranslate2.get_supported_compute_types("cuda")) if gpus else [],
        "ctranslate2_cpu_compute_types": sorted(ctranslate2.get_supported_compute_types("cpu")),
        "cublas_shim": cublas_shim(),
        "versions": {
            n: version(n)
            for n in (
                "ctranslate2",
                "tokenizers",
                "numpy",
                "torch",
                "transformers",
                "nvidia-cublas",
                "orjson",
                "jsonschema",
                "py3langid",
                "faust-streaming",
            )
        },
        "env": {k: v for k, v in os.environ.items() if k.startswith(("CT2_", "ONEDNN_", "OMP_", "LD_LIBRARY"))},
    }


class GpuMemory:
    """Device memory in use, from NVML (the whole device; CTranslate2 keeps freed blocks in its cache)."""

    def __init__(self) -> None:
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML here (CPU machine): memory is simply not reported
            self._handle = None

    def used_mib(self) -> float | None:
        if self._handle is None:
            return None
        return round(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20, 1)


# ------------------------------------------------------------------------------------------ encoders


def timed_batches(
    fn: Callable[[Sequence[Any]], Any],
    pool: Sequence[Any],
    batch: int,
    min_s: float,
    max_s: float,
    min_calls: int = 5,
) -> dict[str, float]:
    """Call ``fn`` on consecutive batches of ``pool`` (after one warm-up call) until ``min_s`` and
    ``min_calls`` are both reached, or ``max_s``; items per second and per-call latency percentiles."""
    doubled = list(pool) + list(pool)
    fn(doubled[:batch])
    latencies: list[float] = []
    done = pos = 0
    started = time.perf_counter()
    while True:
        chunk = doubled[pos : pos + batch]
        t0 = time.perf_counter()
        fn(chunk)
        latencies.append(time.perf_counter() - t0)
        done += len(chunk)
        pos = (pos + batch) % len(pool)
        elapsed = time.perf_counter() - started
        if (elapsed >= min_s and len(latencies) >= min_calls) or elapsed >= max_s:
            break
    return {
        "per_s": round(done / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
        "calls": len(latencies),
        "items": done,
        "seconds": round(elapsed, 2),
    }


class TorchEncoder:
    """Stand-in for the GPU rows when CTranslate2 cannot use CUDA: the same architecture and pipeline
    (tokenize, length bucketing, forward, mean pooling, L2) in PyTorch float16 with random weights."""

    def __init__(self, kind: str, shape: dict[str, int], tokenizer_path: Path, batch_size: int = 64) -> None:
        import torch
        import transformers
        from tokenizers import Tokenizer

        self._torch = torch
        config_cls = transformers.MPNetConfig if kind == "mpnet" else transformers.BertConfig
        torch.manual_seed(0)
        self.model = transformers.AutoModel.from_config(config_cls(**shape)).to("cuda", torch.float16).eval()
        self.device, self.compute_type = "cuda", "torch-float16"
        self.batch_size, self.dim = batch_size, shape["hidden_size"]
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(256)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for group in plan_batches([len(i) for i in ids], self.batch_size):
                lens = torch.tensor([len(ids[i]) for i in group])
                dense = torch.zeros((len(group), int(lens.max())), dtype=torch.long)
                for row, i in enumerate(group):
                    dense[row, : len(ids[i])] = torch.tensor(ids[i])
                mask = (torch.arange(dense.shape[1])[None, :] < lens[:, None]).to("cuda")
                hidden = self.model(input_ids=dense.to("cuda"), attention_mask=mask.long()).last_hidden_state
                pooled = (hidden.float() * mask[..., None]).sum(1) / lens.to("cuda")[:, None]
                out[group] = pooled.cpu().numpy()
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_encoder(model_dir: Path, tokenizer: Path, device: str, compute_type: str, **kw: Any) -> Encoder:
    enc = Encoder(model_dir, tokenizer, device=device, compute_type=compute_type, **kw)  # type: ignore[arg-type]
    if enc.device != device:
        raise RuntimeError(f"asked for {device}, CTranslate2 gave {enc.device} (no CUDA device visible to it)")
    return enc


def encoder_rows(
    run: Run,
    out: dict[str, Any],
    make: Callable[[str], Any],
    sets: dict[str, list[str]],
    *,
    compute_types: Sequence[str],
    batch_sizes: Sequence[int],
    min_s: float,
    max_s: float,
    mem: GpuMemory,
    label: str = "",
) -> None:
    """One row per (compute type, text set, batch size); ``make(compute_type)`` loads the encoder."""
    rows = out.setdefault("rows", [])
    for ct in compute_types:
        if run.left() < max_s * 2:
            out.setdefault("skipped", []).append(ct)
            continue
        before = mem.used_mib()
        t0 = time.perf_counter()
        enc = make(ct)
        load_s = round(time.perf_counter() - t0, 2)
        for set_name, pool in sets.items():
            for batch in batch_sizes:
                if run.left() < max_s * 1.5:
                    out.setdefault("skipped", []).append(f"{ct}/{set_name}/{batch}")
                    continue
                enc.batch_size = batch
                row: dict[str, Any] = {
                    "device": enc.device,
                    "compute_type": enc.compute_type,
                    "texts": set_name,
                    "batch": batch,
                }
                if label:
                    row["label"] = label
                row |= timed_batches(enc.encode, pool, batch, min_s, max_s)
                used = mem.used_mib()
                row["gpu_mem_used_mib"] = used
                row["gpu_mem_before_load_mib"] = before
                row["load_s"] = load_s
                rows.append(row)
                print(
                    f"   {row['device']:4} {row['compute_type']:13} {set_name:5} b={batch:5} {row['per_s']:10.1f} "
                    f"texts/s p50 {row['p50_ms']:8.1f} ms p99 {row['p99_ms']:8.1f} ms GPU {used} MiB",
                    flush=True,
                )
            run.save()
        del enc
        gc.collect()


def mpnet_checkpoint(root: Path, tokenizer: Path, shape: dict[str, int], seed: int = 0) -> Path:
    """An MPNet checkpoint of ``shape`` with random weights, in the HF layout the converter reads."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    hidden, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]

    def w(*dims: int) -> np.ndarray:
        return rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": w(vocab, hidden),
        "embeddings.position_embeddings.weight": w(shape["max_position_embeddings"], hidden),
        "embeddings.LayerNorm.weight": ones(hidden),
        "embeddings.LayerNorm.bias": w(hidden),
        "encoder.relative_attention_bias.weight": w(32, shape["num_attention_heads"]),
    }
    for i in range(shape["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        for name in ("q", "k", "v", "o"):
            tensors[f"{p}.attention.attn.{name}.weight"] = w(hidden, hidden)
            tensors[f"{p}.attention.attn.{name}.bias"] = w(hidden)
        for norm in ("attention.LayerNorm", "output.LayerNorm"):
            tensors[f"{p}.{norm}.weight"] = ones(hidden)
            tensors[f"{p}.{norm}.bias"] = w(hidden)
        tensors[f"{p}.intermediate.dense.weight"] = w(inter, hidden)
        tensors[f"{p}.intermediate.dense.bias"] = w(inter)
        tensors[f"{p}.output.dense.weight"] = w(hidden, inter)
        tensors[f"{p}.output.dense.bias"] = w(hidden)
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(root / "model.safetensors"))
    config = {
        "model_type": "mpnet",
        "architectures": ["MPNetModel"],
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "relative_attention_num_buckets": 32,
        "pad_token_id": 1,
        **shape,
    }
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    shutil.copy(tokenizer, root / "tokenizer.json")
    return root


# ------------------------------------------------------------------------------------------- parity


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(c.min()), 6), "mean": round(float(c.mean()), 6)}


def parity(out: dict[str, Any], model_dir: Path, tokenizer: Path, cuda_types: Sequence[str], extra: list[str]) -> None:
    """Every compute type's embeddings against the float32 reference and against CPU float32, same weights."""
    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    texts, reference = ref["texts"], np.asarray(ref["embeddings"], dtype=np.float32)
    out["reference"] = {"model": ref["model"], "produced_by": ref["produced_by"], "texts": len(texts)}
    out["same_weights_texts"] = len(texts) + len(extra)
    paths = [("cpu", "float32"), ("cpu", "int8")] + [("cuda", ct) for ct in cuda_types]
    emb: dict[str, np.ndarray] = {}
    for dev, ct in paths:
        key = f"{dev}/{ct}"
        try:
            enc = load_encoder(model_dir, tokenizer, dev, ct, intra_threads=os.cpu_count() or 0)
        except Exception as exc:  # a compute type a build lacks (bfloat16, say): say so and go on
            out[key] = f"{type(exc).__name__}: {exc}"
            continue
        emb[key] = enc.encode(list(texts) + extra)
        out[key] = {"vs_float32_reference": cosines(emb[key][: len(texts)], reference)}
        del enc
    base = emb.get("cpu/float32")
    for key, e in emb.items():
        if base is not None and key != "cpu/float32":
            out[key]["vs_cpu_float32_same_weights"] = cosines(e, base)
            out[key]["max_abs_diff_vs_cpu_float32"] = round(float(np.abs(e - base).max()), 6)


# ---------------------------------------------------------------------------------------- ticket core


def raw_tickets(n: int, seed: int = 7) -> tuple[list[Any], list[dict[str, Any]]]:
    """Demo tickets as the bytes a worker consumes."""
    import orjson

    from streamer.demo import demo_tickets
    from streamer.events import RawEvent, Source

    docs = list(demo_tickets(n, seed=seed))
    raws = [
        RawEvent(
            value=orjson.dumps(d),
            source=Source("support.tickets.v1", 0, i, 1_700_000_000_000 + i),
            key=d["id"].encode(),
        )
        for i, d in enumerate(docs)
    ]
    return raws, docs


def ticket_runtime(bundle_dir: Path, device: str, compute_type: str | None, intra_threads: int) -> Any:
    """The processor exactly as ``load_ticket_runtime`` wires it for a worker with these settings."""
    from streamer.runtime import load_ticket_runtime
    from streamer.settings import Settings

    settings = Settings(bundle_dir=bundle_dir, device=device, compute_type=compute_type, intra_threads=intra_threads)  # type: ignore[call-arg]
    runtime = load_ticket_runtime(settings)
    if runtime.bundle.encoder.device != device:
        raise RuntimeError(f"the worker's encoder runs on {runtime.bundle.encoder.device}, not {device}")
    return runtime


def process_and_serialize(runtime: Any) -> Callable[[Sequence[Any]], Any]:
    """One worker batch: the processor, then every output serialized as the sender does."""
    import streamer.events as events

    def call(chunk: Sequence[Any]) -> Any:
        result = runtime.processor(chunk)
        for output in result.outputs:
            events.encode(output.value)
        return result

    return call


def core_rows(
    run: Run,
    rows: list[dict[str, Any]],
    runtime: Any,
    raws: list[Any],
    batches: Sequence[int],
    label: str,
    min_s: float,
    max_s: float,
) -> None:
    """tickets/s of one processor per worker batch (``STREAMER_MAX_BATCH``), encoder sub-batch = worker batch."""
    encoder = runtime.bundle.encoder
    wired = encoder.batch_size
    call = process_and_serialize(runtime)
    for batch in batches:
        if run.left() < max_s * 1.5:
            return
        encoder.batch_size = batch
        row: dict[str, Any] = {"label": label, "max_batch": batch}
        row |= timed_batches(call, raws, batch, min_s, max_s, min_calls=4)
        row["tickets_per_s"] = row.pop("per_s")
        rows.append(row)
        print(
            f"   {label:24} batch {batch:5} {row['tickets_per_s']:9.1f} tickets/s "
            f"p50 {row['p50_ms']:8.1f} ms p99 {row['p99_ms']:8.1f} ms",
            flush=True,
        )
        run.save()
    encoder.batch_size = wired


class Profiler:
    """Wraps the core's stages with timers while active and restores them after; seconds are inclusive."""

    STAGES: ClassVar[dict[str, tuple[str, str]]] = {
        "decode": ("streamer.pipeline.tickets", "decode_ticket"),
        "schema": ("jsonschema.validators", "Draft202012Validator.iter_errors"),
        "records": ("streamer.pipeline.tickets", "ticket_outputs"),
        "serialize": ("streamer.pipeline.tickets", "encode"),
        "language": ("streamer.triage.tickets", "detect_languages"),
        "redact": ("streamer.triage.tickets", "redact"),
        "extract": ("streamer.triage.tickets", "extract"),
        "escalation": ("streamer.triage.tickets", "ticket_reasons"),
        "route": ("streamer.triage.routing", "Router.route"),
        "model": ("streamer.models.bundle", "Bundle.predict"),
        "encode": ("streamer.models.encoder", "Encoder.encode"),
        "tokenize": ("streamer.models.encoder", "Encoder.tokenize"),
        "forward": ("streamer.models.encoder", "Encoder._forward"),
        "pool": ("streamer.models.encoder", "Encoder._pool"),
        "torch_encode": ("__main__", "TorchEncoder.encode"),
    }

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Time the outermost call only (validators recurse); a generator is drained inside the timer."""
        seconds = self.seconds
        depth = [0]
        drain = inspect.isgeneratorfunction(fn)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return iter(list(fn(*args, **kwargs))) if drain else fn(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - t0
                depth[0] -= 1

        return timed

    def __enter__(self) -> Profiler:
        for stage, (module, attr) in self.STAGES.items():
            owner: Any = importlib.import_module(module)
            name = attr
            if "." in attr:
                cls, name = attr.split(".")
                owner = getattr(owner, cls, None)
            if owner is None or not hasattr(owner, name):
                continue
            own = name in vars(owner)
            self._saved.append((owner, name, vars(owner)[name] if own else None))
            setattr(owner, name, self._wrap(stage, getattr(owner, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            if original is None:
                delattr(owner, name)  # it was inherited: the base class's shows through again
            else:
                setattr(owner, name, original)
        self._saved.clear()


def profile_core(runtime: Any, raws: list[Any], batch: int, seconds: float) -> dict[str, Any]:
    """Where one processor's time goes at worker batch ``batch``: exclusive seconds per stage, per ticket."""
    encoder = runtime.bundle.encoder
    wired = encoder.batch_size
    encoder.batch_size = batch
    call = process_and_serialize(runtime)
    call(raws[:batch])
    done = pos = 0
    doubled = raws + raws
    with Profiler() as prof:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or done < 4 * batch:
            chunk = doubled[pos : pos + batch]
            call(chunk)
            done += len(chunk)
            pos = (pos + batch) % len(raws)
        total = time.perf_counter() - started
    encoder.batch_size = wired
    s = prof.seconds
    encode = s["encode"] + s["torch_encode"]
    exclusive = {
        "decode: JSON parse and checks": s["decode"] - s["schema"],
        "decode: schema validation": s["schema"],
        "tokenize": s["tokenize"],
        "encoder forward (device, copy to host)": s["forward"],
        "mean pooling (host)": s["pool"],
        "encode other (bucketing, normalise; torch stand-in: all of it)": encode
        - s["tokenize"]
        - s["forward"]
        - s["pool"],
        "heads": s["model"] - encode,
        "language": s["language"],
        "redact": s["redact"],
        "extract": s["extract"],
        "escalation rules": s["escalation"],
        "route": s["route"],
        "records (output dicts)": s["records"],
        "serialize records (orjson, as the sender)": s["serialize"],
    }
    exclusive["other (processor loop, decisions)"] = total - sum(exclusive.values())
    return {
        "max_batch": batch,
        "tickets": done,
        "seconds": round(total, 2),
        "tickets_per_s_profiled": round(done / total, 1),
        "stages": {
            k: {"share": round(v / total, 4), "us_per_ticket": round(v / done * 1e6, 1)} for k, v in exclusive.items()
        },
    }


def decision_agreement(bundle_dir: Path, docs: list[dict[str, Any]], cuda_type: str) -> dict[str, Any]:
    """Labels of every ticket head on CUDA against the CPU int8 path; intent accuracy on the demo labels."""
    from streamer.events import ticket_text
    from streamer.models.bundle import load_bundle
    from streamer.triage.tickets import TICKET_HEADS

    texts = [ticket_text(d) for d in docs]
    expected = [set(d.get("metadata", {}).get("expected", {}).get("intents", [])) for d in docs]
    labels: dict[str, dict[str, list[str]]] = {}
    for dev, ct in (("cpu", "int8"), ("cuda", cuda_type)):
        bundle = load_bundle(bundle_dir, device=dev, compute_type=ct, intra_threads=os.cpu_count() or 0)  # type: ignore[arg-type]
        bundle.encoder.batch_size = 256
        out = bundle.predict(texts, TICKET_HEADS)
        labels[f"{dev}/{ct}"] = {h: [o.labels[i] for i in np.argmax(o.probs, axis=1)] for h, o in out.items()}
    (a, la), (b, lb) = labels.items()
    result: dict[str, Any] = {"tickets": len(texts), "compared": f"{b} vs {a}"}
    for head in TICKET_HEADS:
        same = [x == y for x, y in zip(la[head], lb[head], strict=True)]
        result[f"{head}_agreement"] = round(float(np.mean(same)), 4)
    for key, lab in labels.items():
        hits = [lbl in exp for lbl, exp in zip(lab["intent"], expected, strict=True) if exp]
        result[f"intent_accuracy_on_demo_labels {key}"] = round(float(np.mean(hits)), 4) if hits else None
    return result


# ------------------------------------------------------------------------------- inside one GPU encode


def encode_breakdown(
    out: dict[str, Any],
    model_dir: Path,
    tokenizer: Path,
    sets: dict[str, list[str]],
    min_s: float,
    device: str = "cuda",
) -> None:
    """Where ``Encoder.encode`` spends its time on CUDA, stage by stage, and what two other ways of
    getting the pooled vectors off the GPU would cost on the same sub-batches: A, float16 to the host
    then pooling there (half the bytes); B, pooling on the GPU with PyTorch through the CUDA array
    interface (only ``(batch, dim)`` crosses to the host)."""
    import ctranslate2

    try:
        import torch
    except ImportError:
        torch = None
    enc = load_encoder(model_dir, tokenizer, device, "float16" if device == "cuda" else "float32")
    if device != "cuda":
        torch = None
    gpu_pool = "alt B: pool on GPU (torch), copy (batch, dim) to host"
    for set_name, batch in (("short", 1024), ("long", 64), ("long", 1024)):
        t: dict[str, float] = {}
        diffs: dict[str, float] = {}

        def tick(key: str, t0: float, t: dict[str, float] = t) -> float:
            now = time.perf_counter()
            t[key] = t.get(key, 0.0) + now - t0
            return now

        def note(key: str, a: np.ndarray, b: np.ndarray, diffs: dict[str, float] = diffs) -> None:
            diffs[key] = max(diffs.get(key, 0.0), float(np.abs(a - b).max()))

        def one_call(chunk: Sequence[str], batch: int = batch) -> None:
            t0 = time.perf_counter()
            ids = enc.tokenize(chunk)
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
            groups = plan_batches(lengths, batch, enc.max_padding)
            t0 = tick("tokenize + plan", t0)
            for group in groups:
                rows = [ids[i] for i in group]
                lens = np.fromiter((len(x) for x in rows), dtype=np.int32, count=len(rows))
                dense = np.zeros((len(rows), int(lens.max())), dtype=np.int32)
                for r, seq in enumerate(rows):
                    dense[r, : len(seq)] = seq
                t0 = tick("pad to dense", t0)
                hidden = enc._model.forward_batch(
                    ctranslate2.StorageView.from_array(dense), ctranslate2.StorageView.from_array(lens)
                ).last_hidden_state
                t0 = tick("forward_batch (GPU, synchronised)", t0)
                h32 = hidden.to(ctranslate2.DataType.float32)
                t0 = tick("now: widen to float32 on GPU", t0)
                host = h32.to_device(ctranslate2.Device.cpu)
                t0 = tick("now: copy float32 hidden states to host", t0)
                arr = np.asarray(host).astype(np.float32, copy=False)
                t0 = tick("now: numpy view", t0)
                pooled = enc._pool(arr, lens.astype(np.int64))
                t0 = tick("now: mean pooling on host (einsum)", t0)
                mask = (np.arange(arr.shape[1])[None, :] < lens[:, None]).astype(np.float32)
                mm = np.matmul(mask[:, None, :], arr)[:, 0, :] / lens[:, None].astype(np.float32)
                t0 = tick("alt: mean pooling on host (matmul)", t0)
                h16 = np.asarray(hidden.to_device(ctranslate2.Device.cpu))
                t0 = tick("alt A: copy float16 hidden states to host", t0)
                a_pooled = np.matmul(mask[:, None, :], h16.astype(np.float32))[:, 0, :] / lens[:, None]
                t0 = tick("alt A: widen + pool on host (matmul)", t0)
                if torch is not None:
                    th = torch.as_tensor(hidden, device="cuda")
                    m = torch.as_tensor(mask, device="cuda").to(th.dtype)
                    n = torch.as_tensor(lens, device="cuda")[:, None]
                    b_pooled = ((m[:, None, :] @ th)[:, 0, :].float() / n).cpu().numpy()
                    t0 = tick(gpu_pool, t0)
                    note("alt B", b_pooled, pooled)
                note("alt matmul", mm, pooled)
                note("alt A", a_pooled, pooled)

        pool = sets[set_name] + sets[set_name]
        one_call(pool[:batch])  # warm-up: shapes and allocator, not counted
        t.clear()
        done = pos = 0
        started = time.perf_counter()
        while time.perf_counter() - started < min_s or done < 4 * batch:
            one_call(pool[pos : pos + batch])
            done += batch
            pos = (pos + batch) % (len(pool) // 2)
        per = {k: round(v / done * 1e6, 2) for k, v in t.items()}
        common = sum(v for k, v in per.items() if not k.startswith(("now:", "alt")))
        now = common + sum(v for k, v in per.items() if k.startswith("now:"))
        alt_a = common + sum(v for k, v in per.items() if k.startswith("alt A"))
        row: dict[str, Any] = {
            "texts": set_name,
            "batch": batch,
            "texts_done": done,
            "us_per_text": per,
            "max_abs_diff_of_pooled_vs_now": {k: round(v, 6) for k, v in diffs.items()},
            "texts_per_s_now": round(1e6 / now, 1),
            "texts_per_s_alt_A_float16_copy": round(1e6 / alt_a, 1),
        }
        if gpu_pool in per:
            row["texts_per_s_alt_B_gpu_pool"] = round(1e6 / (common + per[gpu_pool]), 1)
        out.setdefault("rows", []).append(row)
        print(f"   {set_name} b={batch}: " + ", ".join(f"{k} {v}" for k, v in per.items()), flush=True)


# ------------------------------------------------------------------------------ worker processes per GPU


def core_process(
    bundle_dir: str,
    device: str,
    compute_type: str | None,
    intra: int,
    batch: int,
    window_s: float,
    barrier: Any,
    results: Any,
) -> None:
    """One worker's core in a process of its own: load, warm up, wait for the others, run ``window_s``."""
    try:
        runtime = ticket_runtime(Path(bundle_dir), device, compute_type, intra_threads=intra)
        runtime.bundle.encoder.batch_size = batch
        raws, _ = raw_tickets(4096)
        call = process_and_serialize(runtime)
        call(raws[:batch])
        barrier.wait(timeout=300)
        done = pos = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < window_s:
            call(raws[pos : pos + batch])
            done += batch
            pos = (pos + batch) % (len(raws) - batch)
        results.put((done, time.perf_counter() - t0, None))
    except Exception as exc:  # reported to the parent, which records it
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put((0, 0.0, f"{type(exc).__name__}: {exc}"))


def ticket_workers(
    run: Run,
    out: dict[str, Any],
    bundle_dir: Path,
    configs: Sequence[tuple[str, str | None, int, int, int]],
    window_s: float,
    mem: GpuMemory,
) -> None:
    """tickets/s of P worker cores side by side (each a process, as P worker pods on one machine would be)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = out.setdefault("rows", [])
    out["env"] = "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 in every worker process"
    for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = "1"
    for device, ct, intra, batch, procs in configs:
        if run.left() < window_s + 40:
            out.setdefault("skipped", []).append(f"{device} x{procs} batch {batch}")
            continue
        barrier = ctx.Barrier(procs + 1)
        results = ctx.Queue()
        started = time.perf_counter()
        children = [
            ctx.Process(
                target=core_process, args=(str(bundle_dir), device, ct, intra, batch, window_s, barrier, results)
            )
            for _ in range(procs)
        ]
        for child in children:
            child.start()
        barrier.wait(timeout=300)
        load_s = time.perf_counter() - started
        time.sleep(window_s / 2)
        used = mem.used_mib()
        got = [results.get(timeout=window_s + 120) for _ in children]
        for child in children:
            child.join(timeout=30)
        errors = [e for _, _, e in got if e]
        row: dict[str, Any] = {
            "device": device,
            "compute_type": ct or "default",
            "intra_threads": intra,
            "max_batch": batch,
            "processes": procs,
            "tickets_per_s": round(sum(d / s for d, s, e in got if not e and s), 1),
            "per_process": [round(d / s, 1) for d, s, e in got if not e and s],
            "gpu_mem_used_mib": used,
            "start_s": round(load_s, 1),
            "errors": errors[:3],
        }
        rows.append(row)
        print(
            f"   {device} {ct} x{procs} batch {batch}: {row['tickets_per_s']} tickets/s, GPU {used} MiB {errors[:1]}",
            flush=True,
        )
        run.save()


# ------------------------------------------------------------------------------------------- report


def table(data: dict[str, Any]) -> str:
    """Encoder rows with their ratio to the CPU int8 row of the same model and texts, then the core."""
    lines = []
    sec = data["sections"]
    for model in ("minilm", "mpnet"):
        rows = sec.get(f"{model}_gpu", {}).get("rows", []) + sec.get(f"{model}_cpu", {}).get("rows", [])
        if not rows:
            continue
        base = {r["texts"]: r["per_s"] for r in rows if r["device"] == "cpu" and r.get("threads") == "all"}
        lines.append(f"\n{model}: texts/s (ratio to CPU int8, all cores, same texts), latency of one batch call")
        lines.append(
            f"{'device':6} {'compute':13} {'texts':5} {'batch':>6} {'texts/s':>10} {'ratio':>7} "
            f"{'p50 ms':>9} {'p99 ms':>9} {'GPU MiB':>8}"
        )
        for r in rows:
            ratio = r["per_s"] / base[r["texts"]] if r["texts"] in base else float("nan")
            lines.append(
                f"{r['device']:6} {r['compute_type'][:13]:13} {r['texts']:5} {r['batch']:6d} {r['per_s']:10.1f} "
                f"{ratio:6.1f}x {r['p50_ms']:9.1f} {r['p99_ms']:9.1f} {r.get('gpu_mem_used_mib')!s:>8}"
                + (f"  threads {r['threads']}" if "threads" in r else "")
            )
    core = sec.get("ticket_core", {})
    rows = core.get("rows", [])
    if rows:
        base_core = next((r["tickets_per_s"] for r in rows if r["label"].startswith("cpu")), None)
        lines.append("\nticket core (processor + serializing records), one process: tickets/s (ratio to CPU int8)")
        for r in rows:
            ratio = r["tickets_per_s"] / base_core if base_core else float("nan")
            lines.append(
                f"{r['label']:24} batch {r['max_batch']:5} {r['tickets_per_s']:9.1f} {ratio:5.1f}x "
                f"p50 {r['p50_ms']:8.1f} ms p99 {r['p99_ms']:8.1f} ms"
            )
    for name, prof in core.get("profile", {}).items():
        lines.append(f"\nwhere the time goes, {name}: {prof['tickets_per_s_profiled']} tickets/s under the profiler")
        for stage, v in sorted(prof["stages"].items(), key=lambda kv: -kv[1]["share"]):
            lines.append(f"  {stage:64} {v['share'] * 100:5.1f}%  {v['us_per_ticket']:8.1f} us/ticket")
    for r in sec.get("encode_breakdown", {}).get("rows", []):
        lines.append(f"\ninside Encoder.encode on CUDA, {r['texts']} texts, batch {r['batch']}: us per text")
        for stage, us in r["us_per_text"].items():
            lines.append(f"  {stage:58} {us:8.1f}")
        lines.append(
            f"  texts/s: as built {r['texts_per_s_now']}, float16 copy {r['texts_per_s_alt_A_float16_copy']}, "
            f"pooling on the GPU {r.get('texts_per_s_alt_B_gpu_pool')}"
        )
    workers = sec.get("ticket_workers", {}).get("rows", [])
    if workers:
        lines.append("\nticket cores in parallel processes on one machine: tickets/s in total")
        for r in workers:
            lines.append(
                f"  {r['device']:4} {r['compute_type']:8} x{r['processes']:<3} batch {r['max_batch']:5} "
                f"{r['tickets_per_s']:9.1f}  GPU {r['gpu_mem_used_mib']} MiB"
            )
    par = sec.get("parity", {})
    if par:
        lines.append("\nparity (cosine min / mean)")
        for key, v in par.items():
            if isinstance(v, dict) and "vs_float32_reference" in v:
                same = v.get("vs_cpu_float32_same_weights", {})
                lines.append(
                    f"  {key:20} vs reference {v['vs_float32_reference']['min']:.6f} / "
                    f"{v['vs_float32_reference']['mean']:.6f}   vs CPU float32 same weights "
                    f"{same.get('min', float('nan')):.6f} / {same.get('mean', float('nan')):.6f}"
                )
    for name, err in data.get("errors", {}).items():
        lines.append(f"\n{name}: {err.splitlines()[0]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def preflight(bundle_dir: Path) -> int:
    """CTranslate2 runs the bundle's encoder on CUDA in both GPU compute types (in a process of its own,
    so a crash there cannot take the benchmark down)."""
    import ctranslate2

    print("cuda devices:", ctranslate2.get_cuda_device_count(), flush=True)
    texts = ["I am still waiting on my card?", "Refund the second charge please, it was a duplicate."]
    cpu = load_encoder(bundle_dir / "model", bundle_dir / "tokenizer.json", "cpu", "float32").encode(texts)
    for ct in ("float16", "int8_float16"):
        e = load_encoder(bundle_dir / "model", bundle_dir / "tokenizer.json", "cuda", ct).encode(texts)
        print(ct, "cosine to CPU float32:", cosines(e, cpu), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="ticket bundle (its encoder is the MiniLM measured)")
    parser.add_argument("--json", type=Path, help="results file, rewritten after every section")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu only to try the script")
    parser.add_argument("--gpu-backend", default="ct2", choices=("ct2", "torch"))
    parser.add_argument("--preflight", action="store_true", help="check CTranslate2 on CUDA and exit")
    parser.add_argument("--preflight-log", type=Path, help="output of --preflight, kept in the results")
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no work after this")
    parser.add_argument("--min-s", type=float, default=1.0, help="least time per measured row")
    parser.add_argument("--max-s", type=float, default=4.0, help="most time per measured row")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--core-batches", default=",".join(map(str, CORE_BATCHES)))
    parser.add_argument("--pool", type=int, default=16384, help="texts in each text pool")
    parser.add_argument("--tickets", type=int, default=16384, help="demo tickets for the core")
    parser.add_argument("--parity-texts", type=int, default=1024, help="short + long texts for same-weight parity")
    parser.add_argument("--mpnet-layers", type=int, default=MPNET_SHAPE["num_hidden_layers"])
    parser.add_argument("--sections", default="", help="comma-separated sections to run (default: all)")
    parser.add_argument("--worker-window-s", type=float, default=6.0, help="timed window of the multi-process rows")
    parser.add_argument("--show", type=Path, help="print the tables of a finished run and exit")
    args = parser.parse_args()
    if args.show:
        print(table(json.loads(args.show.read_text(encoding="utf-8"))))
        return 0
    if args.bundle is None:
        parser.error("--bundle is required")
    bundle_dir = args.bundle.resolve()
    if args.preflight:
        return preflight(bundle_dir)

    run = Run(args.json, args.budget_s, [x for x in args.sections.split(",") if x])
    dev, torch_gpu = args.device, args.device == "cuda" and args.gpu_backend == "torch"
    gpu_types: tuple[str, ...] = ("float16", "int8_float16") if dev == "cuda" else ("float32",)
    if torch_gpu:
        gpu_types = ("float16",)
    cpu_threads = os.cpu_count() or 1
    batches = [int(b) for b in args.batch_sizes.split(",")]
    core_batches = [int(b) for b in args.core_batches.split(",")]
    model_dir, tokenizer = bundle_dir / "model", bundle_dir / "tokenizer.json"
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    mem = GpuMemory()
    timing = {"min_s": args.min_s, "max_s": args.max_s}
    short = short_texts()
    longs = long_texts(2048)
    sets = {"short": pool_of(short, args.pool), "long": pool_of(longs, args.pool)}
    run.data["settings"] = {
        "device": dev,
        "gpu_backend": "pytorch float16, random weights (speed only)" if torch_gpu else "ctranslate2",
        "bundle": {k: manifest.get(k) for k in ("name", "version", "base_model", "encoder", "source")},
        "batch_sizes": batches,
        "core_batches": core_batches,
        "row_seconds": [args.min_s, args.max_s],
        "cpu_threads": cpu_threads,
        "pool": args.pool,
        "tickets": args.tickets,
        "mpnet": {
            **MPNET_SHAPE,
            "num_hidden_layers": args.mpnet_layers,
            "weights": "random, same shape as all-mpnet-base-v2: speed only",
        },
        "encoder_call": "streamer.models.encoder.Encoder.encode: tokenize, length bucketing (max padding 0.25), "
        "forward, copy to host, mean pooling, L2; 'batch' is Encoder.batch_size, the most texts per forward",
        "texts": {
            "short": {"source": f"shipped support queries ({', '.join(SHORT_FILES)})", **token_stats(tokenizer, short)},
            "long": {
                "source": "synthesized tickets of 4-10 sentences (bench_models' generator)",
                **token_stats(tokenizer, longs),
            },
        },
    }
    if args.preflight_log and args.preflight_log.is_file():
        run.data["settings"]["preflight"] = args.preflight_log.read_text(encoding="utf-8")[-4000:]
    run.save()

    run.section("machine", 0, lambda out: (machine(out), out.update(gpu_mem_idle_mib=mem.used_mib())))
    print(json.dumps(run.data["sections"].get("machine", {}), indent=1), flush=True)

    def gpu_minilm(ct: str) -> Any:
        if torch_gpu:
            return TorchEncoder("bert", MINILM_SHAPE, tokenizer)
        return load_encoder(model_dir, tokenizer, dev, ct)

    def cpu_encoder(model: Path, threads: int) -> Callable[[str], Any]:
        return lambda ct: load_encoder(model, tokenizer, "cpu", ct, intra_threads=threads)

    def cpu_rows(out: dict[str, Any], model: Path, threads: Sequence[tuple[str, int]], max_s: float) -> None:
        for name, n in threads:
            before = len(out.get("rows", []))
            encoder_rows(
                run,
                out,
                cpu_encoder(model, n),
                sets if name == "all" else {"short": sets["short"]},
                compute_types=("int8",),
                batch_sizes=(64,),
                mem=mem,
                min_s=args.min_s,
                max_s=max_s,
            )
            for row in out["rows"][before:]:
                row["threads"] = name
                row["intra_threads"] = n

    run.section(
        "minilm_gpu",
        30,
        lambda out: encoder_rows(
            run,
            out,
            gpu_minilm,
            sets,
            compute_types=gpu_types,
            batch_sizes=batches,
            mem=mem,
            **timing,
            label="torch stand-in, random weights: speed only" if torch_gpu else "",
        ),
    )
    # intra_threads 0 is what a worker gets by default: CTranslate2 picks its own count then.
    run.section(
        "minilm_cpu", 20, lambda out: cpu_rows(out, model_dir, (("all", cpu_threads), ("default 0", 0)), args.max_s)
    )
    if dev == "cuda" and not torch_gpu:
        n = args.parity_texts // 2
        run.section(
            "parity",
            20,
            lambda out: parity(
                out, model_dir, tokenizer, ("float16", "int8_float16", "bfloat16"), short[:n] + long_texts(n, seed=3)
            ),
        )

    def ticket_core(out: dict[str, Any]) -> None:
        raws, docs = raw_tickets(args.tickets)
        rows: list[dict[str, Any]] = []
        out["rows"] = rows
        out["tickets"] = f"{len(raws)} demo tickets (streamer.demo.demo_tickets, seed 7)"
        out["profile"] = {}
        cpu = ticket_runtime(bundle_dir, "cpu", "int8", intra_threads=cpu_threads)
        core_rows(run, rows, cpu, raws, (64,), f"cpu int8 {cpu_threads} threads", **timing)
        out["profile"]["cpu int8 batch 64"] = profile_core(cpu, raws, 64, args.min_s)
        run.save()
        if torch_gpu:
            gpu = ticket_runtime(bundle_dir, "cpu", "int8", intra_threads=cpu_threads)
            gpu.bundle.encoder = TorchEncoder("bert", MINILM_SHAPE, tokenizer)
            label = "cuda torch fp16 stand-in"
        else:
            gpu = ticket_runtime(bundle_dir, dev, None, intra_threads=0)
            label = f"{dev} {gpu.bundle.encoder.compute_type}"
        core_rows(run, rows, gpu, raws, core_batches, label, **timing)
        mine = [r for r in rows if r["label"] == label]
        if mine:
            best = max(mine, key=lambda r: r["tickets_per_s"])
            out["profile"][f"{label} batch {best['max_batch']}"] = profile_core(
                gpu, raws, best["max_batch"], max(args.min_s, 2.0)
            )
            run.save()
        if dev == "cuda" and not torch_gpu:
            out["decisions"] = decision_agreement(bundle_dir, docs[:2048], "float16")

    run.section("ticket_core", 40, ticket_core)
    if not torch_gpu:
        run.section(
            "encode_breakdown",
            20,
            lambda out: encode_breakdown(out, model_dir, tokenizer, sets, args.min_s, device=dev),
        )
    if dev == "cuda" and not torch_gpu:
        gpu_configs = [("cuda", None, 0, 256, p) for p in (1, 4, 8, 16)] + [("cuda", None, 0, 64, 16)]
    else:
        gpu_configs = []
    run.section(
        "ticket_workers",
        60,
        lambda out: ticket_workers(
            run, out, bundle_dir, [*gpu_configs, ("cpu", "int8", 1, 64, cpu_threads)], args.worker_window_s, mem
        ),
    )

    with tempfile.TemporaryDirectory() as tmp:
        shape = {**MPNET_SHAPE, "num_hidden_layers": args.mpnet_layers}
        mp = Path(tmp) / "ct2"

        def mpnet_build(out: dict[str, Any]) -> None:
            from streamer.models.convert import convert_checkpoint

            t0 = time.perf_counter()
            src = mpnet_checkpoint(Path(tmp) / "src", tokenizer, shape)
            out["checkpoint_s"] = round(time.perf_counter() - t0, 1)
            result = convert_checkpoint(src, mp)
            out["convert_s"] = round(result.seconds, 1)
            out["model_bin_mib"] = round((mp / "model.bin").stat().st_size / 2**20, 1)
            (src / "model.safetensors").unlink()

        def gpu_mpnet(ct: str) -> Any:
            if torch_gpu:
                return TorchEncoder("mpnet", shape, tokenizer)
            return load_encoder(mp, tokenizer, dev, ct)

        label = "same shape, random weights: speed only"
        if run.section("mpnet_build", 60, mpnet_build).get("model_bin_mib"):
            run.section(
                "mpnet_gpu",
                30,
                lambda out: encoder_rows(
                    run,
                    out,
                    gpu_mpnet,
                    sets,
                    compute_types=gpu_types,
                    batch_sizes=batches,
                    mem=mem,
                    **timing,
                    label=label,
                ),
            )
            run.section("mpnet_cpu", 15, lambda out: cpu_rows(out, mp, (("all", cpu_threads),), args.max_s * 2))

    run.save()
    print(table(run.data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
