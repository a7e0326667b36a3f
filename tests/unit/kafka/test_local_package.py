"""The streamer.kafka.local package as a whole: what it imports and what it offers."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from streamer import paths
from streamer.kafka import local
from streamer.kafka.local import config, jars, process


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    return imported - {"__future__"}


PACKAGE = "streamer.kafka.local"


def test_module_imports_only_stdlib() -> None:
    """The package must work before the project's dependencies are installed: stdlib, itself, plus
    stdlib-only ``streamer.paths`` (the cache root it shares with the model weights)."""
    modules = sorted(Path(local.__file__).parent.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "__main__", "jars", "config", "probe", "process", "cli"}
    imported = set().union(*(_top_level_imports(m) for m in modules))
    own = {name for name in imported if name == PACKAGE or name.startswith(PACKAGE + ".")}
    assert {"streamer.paths"} <= imported
    rest = imported - own - {"streamer.paths"}
    assert {name.split(".")[0] for name in rest} <= set(sys.stdlib_module_names), rest
    paths_imports = _top_level_imports(Path(paths.__file__))
    assert {name.split(".")[0] for name in paths_imports} <= set(sys.stdlib_module_names), paths_imports


def test_importing_the_package_loads_no_third_party_module() -> None:
    code = (
        "import sys; before = set(sys.modules); import streamer.kafka.local; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new - set(sys.stdlib_module_names) - {'streamer'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: What ``streamer.kafka.local`` offered as one module; callers (tests, the CLI, Makefile) keep using it.
PUBLIC = {
    "CONSOLE_TOOLS", "DEFAULT_HOST", "DEFAULT_PORT", "KAFKA_VERSION", "PID_FILE", "Broker", "LocalCluster",
    "LocalKafkaError", "SaslSslListener", "cluster_ports", "cluster_properties", "cluster_status",
    "console_tool_cmd", "default_data_dir", "default_port", "ensure_jars", "find_java", "free_cluster_ports",
    "free_port_pair", "kafka_home", "kafka_version", "live_brokers", "main", "new_cluster_id", "probe",
    "read_properties", "server_properties", "start", "start_cluster", "start_node", "status", "stop",
    "stop_cluster", "stop_node", "write_properties",
}  # fmt: skip


def test_the_package_offers_what_the_module_did() -> None:
    # ``local.probe`` is the function (as before the split); the module is reached through sys.modules.
    assert set(local.__all__) == PUBLIC
    assert all(callable(getattr(local, name)) or name.isupper() for name in PUBLIC)
    probe_module = importlib.import_module("streamer.kafka.local.probe")
    assert local.start is process.start and local.ensure_jars is jars.ensure_jars and local.probe is probe_module.probe
    assert local.server_properties is config.server_properties


def test_python_m_runs_the_command(tmp_path: Path) -> None:
    """``python -m streamer.kafka.local`` (Makefile's kafka-jars) goes through ``__main__``."""
    res = subprocess.run(
        [sys.executable, "-m", PACKAGE, "status", "--data-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert res.returncode == 3 and res.stdout.strip() == f"kafka not running ({tmp_path.resolve()})"
    usage = subprocess.run([sys.executable, "-m", PACKAGE, "--help"], capture_output=True, text=True, check=True)
    assert "usage: python -m streamer.kafka.local" in usage.stdout and "console-consumer" in usage.stdout
