"""The broker's jars: fetched once from Maven Central into a cache outside git, then used offline.

``deploy/kafka/pom.xml`` names them; ``ensure_jars`` runs Maven only while the cache lacks them, so tests
and runs after the first need no network. Kafka's own CLI tools run from the same jars.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from streamer.kafka.local._common import DEPLOY_DIR, LOCK_FILE, LocalKafkaError, locked, tail_text
from streamer.paths import cache_root

__all__ = [
    "CONSOLE_TOOLS",
    "KAFKA_VERSION",
    "TOOL_JVM_OPTS",
    "classpath",
    "console_tool_cmd",
    "ensure_jars",
    "find_java",
    "kafka_home",
    "kafka_version",
    "tools_log4j_opts",
]

KAFKA_VERSION = "4.1.1"
# Short-lived tool JVMs (StorageTool, console clients): small heap, fast start-up beats peak throughput.
TOOL_JVM_OPTS: tuple[str, ...] = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

# Short names accepted by console_tool_cmd() and the CLI; a fully qualified class name works too.
CONSOLE_TOOLS: dict[str, str] = {
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "storage": "kafka.tools.StorageTool",
}

_log = logging.getLogger(__name__)


def kafka_version() -> str:
    """Kafka version to fetch and run (env STREAMER_KAFKA_VERSION, else KAFKA_VERSION)."""
    return os.environ.get("STREAMER_KAFKA_VERSION") or KAFKA_VERSION


def kafka_home(version: str | None = None) -> Path:
    """Jar cache for one Kafka version; it lives outside git and is shared by every checkout."""
    env = os.environ.get("STREAMER_KAFKA_HOME")
    if env:
        return Path(env).expanduser()
    return cache_root() / "kafka" / (version or kafka_version())


def find_java() -> str:
    """The java executable ($JAVA_HOME/bin/java first, like Kafka's scripts, then PATH)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise LocalKafkaError("java not found on PATH: install a JDK 17+ (Kafka 4.x needs Java 17)")
    return found


def _libs_ready(libs: Path, version: str) -> bool:
    return (libs / f"kafka_2.13-{version}.jar").is_file()


def ensure_jars(version: str | None = None) -> Path:
    """Return the ``libs/`` dir with the broker's jars, running Maven once if the cache is empty.

    The download goes to a temporary dir that is renamed into place, and a lock file serialises
    concurrent callers (parallel test workers), so a half-filled cache is never used.
    """
    version = version or kafka_version()
    home = kafka_home(version)
    libs = home / "libs"
    if _libs_ready(libs, version):
        return libs
    find_java()
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError("mvn not found on PATH: install Maven 3.6+ (it fetches the Kafka jars once)")
    pom = DEPLOY_DIR / "pom.xml"
    if not pom.is_file():
        raise LocalKafkaError(f"{pom} not found: run from a streamer checkout, or fill {libs} yourself")
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / LOCK_FILE):
        if _libs_ready(libs, version):
            return libs
        tmp = home / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-Dkafka.version={version}", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        _log.info("fetching Kafka %s jars with Maven into %s (first run only)", version, libs)
        t0 = time.monotonic()
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not _libs_ready(tmp, version):
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalKafkaError(
                f"maven could not fetch Kafka {version} (exit {res.returncode}): "
                + tail_text(res.stdout + res.stderr, 30)
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        _log.info("fetched %d jars in %.1f s", len(list(libs.glob("*.jar"))), time.monotonic() - t0)
    return libs


def classpath(libs: Path) -> str:
    return f"{libs}{os.sep}*"  # the JVM expands the wildcard itself


def tools_log4j_opts() -> list[str]:
    cfg = DEPLOY_DIR / "tools-log4j2.yaml"
    return [f"-Dlog4j2.configurationFile={cfg}"] if cfg.is_file() else ["-Dlog4j2.level=WARN"]


def console_tool_cmd(tool: str, args: Sequence[str], *, jvm_opts: Sequence[str] | None = None) -> list[str]:
    """The java command that runs one of Kafka's own CLI tools from the cached jars.

    ``tool`` is a short name from CONSOLE_TOOLS ("console-producer", "console-consumer", "topics", ...) or
    a fully qualified class name. Tests use these as clients independent of the Python Kafka libraries.
    Downloads the jars if needed. Logging goes to stderr at WARN, so stdout carries only the data.
    """
    main_class = CONSOLE_TOOLS.get(tool, tool)
    if "." not in main_class:
        raise LocalKafkaError(f"unknown Kafka tool {tool!r}; known: {', '.join(CONSOLE_TOOLS)}")
    java = find_java()
    libs = ensure_jars()
    opts = list(TOOL_JVM_OPTS if jvm_opts is None else jvm_opts)
    return [java, *opts, *tools_log4j_opts(), "-cp", classpath(libs), main_class, *args]
