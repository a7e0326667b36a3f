"""Run a real Apache Kafka 4.x broker (one node, KRaft) or a three-node cluster on this machine, without Docker.

Why: the pipeline's integration tests and local runs need a real broker (consumer groups, transactions,
10 MB records), and Docker is not always available. Kafka is plain Java, so its jars are fetched once from
Maven Central (``deploy/kafka/pom.xml``) into a cache outside git and the broker is launched with
``java -cp 'libs/*' kafka.Kafka server.properties``.

The package is stdlib-only on purpose: it must work before (and without) the project's heavy deps.
``jars`` fetches and finds the jars, ``config`` writes ``server.properties``, ``probe`` asks a port
whether a broker answers, ``process`` starts and stops brokers and clusters, ``cli`` is the command:

    python -m streamer.kafka.local start          # kafka ready on 127.0.0.1:9092 (started in 7.4 s)
    python -m streamer.kafka.local status
    python -m streamer.kafka.local stop
    python -m streamer.kafka.local console-consumer --topic t --from-beginning
    python -m streamer.kafka.local start --brokers 3   # nodes on 9092, 9094, 9096 (var/kafka-cluster)

Environment overrides: STREAMER_LOCAL_KAFKA_PORT, STREAMER_LOCAL_KAFKA_DIR (data dir),
STREAMER_KAFKA_HOME (jar cache holding ``libs/``), STREAMER_KAFKA_VERSION.
"""

from __future__ import annotations

from streamer.kafka.local._common import LocalKafkaError
from streamer.kafka.local.cli import main
from streamer.kafka.local.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    PID_FILE,
    SaslSslListener,
    cluster_ports,
    cluster_properties,
    default_data_dir,
    default_port,
    new_cluster_id,
    read_properties,
    server_properties,
    write_properties,
)
from streamer.kafka.local.jars import (
    CONSOLE_TOOLS,
    KAFKA_VERSION,
    console_tool_cmd,
    ensure_jars,
    find_java,
    kafka_home,
    kafka_version,
)
from streamer.kafka.local.probe import free_cluster_ports, free_port_pair, live_brokers, probe
from streamer.kafka.local.process import (
    Broker,
    LocalCluster,
    cluster_status,
    start,
    start_cluster,
    start_node,
    status,
    stop,
    stop_cluster,
    stop_node,
)

__all__ = [
    "CONSOLE_TOOLS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "PID_FILE",
    "Broker",
    "LocalCluster",
    "LocalKafkaError",
    "SaslSslListener",
    "cluster_ports",
    "cluster_properties",
    "cluster_status",
    "console_tool_cmd",
    "default_data_dir",
    "default_port",
    "ensure_jars",
    "find_java",
    "free_cluster_ports",
    "free_port_pair",
    "kafka_home",
    "kafka_version",
    "live_brokers",
    "main",
    "new_cluster_id",
    "probe",
    "read_properties",
    "server_properties",
    "start",
    "start_cluster",
    "start_node",
    "status",
    "stop",
    "stop_cluster",
    "stop_node",
    "write_properties",
]
