"""Layers import only downwards: the cores, the model layer and the pipeline know nothing of Kafka or settings.

Every module of the lower layers is parsed (imports inside functions and ``TYPE_CHECKING`` blocks count:
a lazy import is still a dependency) and may not name Faust, aiokafka, mode, the adapters, the settings
or anything that wires them. A subprocess checks that replay, which reads Kafka but runs no agent, never
loads Faust.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "streamer"

#: What no lower layer may import: the Kafka clients and Faust, and every module that reads settings or
#: wires adapters together.
ABOVE = (
    "faust",
    "aiokafka",
    "mode",
    "streamer.agents",
    "streamer.app",
    "streamer.bridge",
    "streamer.cli",
    "streamer.commands",
    "streamer.defaults",
    "streamer.demo",
    "streamer.kafka",
    "streamer.metrics",
    "streamer.observability",
    "streamer.offline",
    "streamer.replay",
    "streamer.runner",
    "streamer.runtime",
    "streamer.settings",
    "streamer.worker",
)

#: Foundation modules: wire types, headers, privacy, batching, errors, topic files, tracing, cache paths, tables.
FOUNDATION = ("events", "headers", "privacy", "batching", "errors", "topics", "tracing", "paths", "tables")

#: Layer -> what it may not import besides ``ABOVE`` (the layers above it that ``ABOVE`` does not name).
LAYERS: dict[str, tuple[str, ...]] = {
    **{f"streamer.{name}": ("streamer.pipeline", "streamer.models") for name in FOUNDATION},
    "streamer.triage": ("streamer.pipeline", "streamer.models"),
    "streamer.logs": ("streamer.pipeline", "streamer.models"),
    "streamer.models": ("streamer.pipeline",),
    "streamer.pipeline": (),
}


def module_files(module: str) -> list[tuple[str, Path]]:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    if path.with_suffix(".py").is_file():
        return [(module, path.with_suffix(".py"))]
    files = []
    for file in sorted(path.rglob("*.py")):
        parts = file.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files.append((name, file))
    return files


def imported(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports anywhere (absolute names; relative imports resolved)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def refused(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))


def test_the_checker_sees_lazy_relative_and_type_only_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from streamer.settings import Settings\n"
        "def f():\n    import aiokafka.errors\n    from ..kafka import clients\n"
        "from . import batch\n"
    )
    found = imported("streamer.pipeline.logs", source)
    assert refused(found, ABOVE) == [
        "aiokafka.errors",
        "streamer.kafka",
        "streamer.kafka.clients",
        "streamer.settings",
        "streamer.settings.Settings",
    ]
    assert "streamer.pipeline.batch" in found
    assert refused({"faustlike", "streamer.kafkaesque", "modelling"}, ABOVE) == []


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    forbidden = ABOVE + LAYERS[layer]
    files = module_files(layer)
    assert files, f"no modules found for {layer}"
    problems = []
    for module, file in files:
        names = imported(module, file.read_text(encoding="utf-8"), is_package=file.name == "__init__.py")
        problems += [f"{file.relative_to(REPO)} imports {name}" for name in refused(names, forbidden)]
    assert problems == []


def test_replay_does_not_load_faust() -> None:
    code = (
        "import sys\n"
        "import streamer.replay, streamer.replay.run, streamer.replay.cli, streamer.runtime, streamer.offline\n"
        "print(sorted(m for m in ('faust', 'mode', 'streamer.worker', 'streamer.agents') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
