"""Layout and server.properties of the local KRaft nodes, one folder per client port."""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTROLLER_PORT_OFFSET = 100  # Node on client port 9092 runs its controller on 9192.
HOST = "127.0.0.1"


def state_root() -> Path:
    """Return the git-ignored folder of every node's data and logs (`KAFKA_LOCAL_DIR` moves it)."""
    return Path(os.environ.get("KAFKA_LOCAL_DIR", PROJECT_ROOT / ".kafka")).expanduser().resolve()


def libs_dir() -> Path:
    """Return the git-ignored folder of the Kafka jars, shared by every node wherever its data is."""
    return PROJECT_ROOT / ".kafka" / "libs"


def kafka_uuid() -> str:
    """Return a random id in Kafka's own form: 16 bytes, URL-safe base64 without padding.

    Kafka rejects ids that start with '-' on the command line, so those are drawn again.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class SaslUser:
    """The one client account of a local broker that requires SASL (PLAIN and SCRAM)."""

    username: str
    password: str = field(repr=False)

    def jaas_plain(self) -> str:
        # The broker's own inter-broker login and the accepted client account are the same user.
        return (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
                f'username="{self.username}" password="{self.password}" '
                f'user_{self.username}="{self.password}";')

    def scram_credentials(self) -> list[str]:
        """Return `--add-scram` arguments for the storage tool, which stores SCRAM users at format time."""
        return [f"{mechanism}=[name={self.username},password={self.password}]"
                for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")]


@dataclass(frozen=True)
class Node:
    """One combined broker+controller process of the local cluster."""

    node_id: int
    port: int
    cluster_ports: tuple[int, ...]
    sasl: SaslUser | None = None

    @property
    def client_listener(self) -> str:
        return "SASL_PLAINTEXT" if self.sasl else "PLAINTEXT"

    @property
    def controller_port(self) -> int:
        return self.port + CONTROLLER_PORT_OFFSET

    @property
    def cluster_folder(self) -> Path:
        """Return the folder of the whole cluster: one node alone and a three-node cluster never share data."""
        if len(self.cluster_ports) == 1:
            return state_root()
        return state_root() / f"cluster-{self.cluster_ports[0]}"

    @property
    def folder(self) -> Path:
        return self.cluster_folder / str(self.port)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def properties_file(self) -> Path:
        return self.folder / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.folder / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "broker.pid"

    @property
    def quorum_state_file(self) -> Path:
        """Return the file where KRaft records the quorum leader this node follows, as JSON."""
        return self.data_dir / "__cluster_metadata-0" / "quorum-state"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def quorum_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{port + CONTROLLER_PORT_OFFSET}" for port in self.cluster_ports)

    def render_properties(self) -> str:
        """Return server.properties for this node, sized for a 2-core machine."""
        replication = min(3, len(self.cluster_ports))
        min_isr = 2 if replication == 3 else 1
        lines = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.bootstrap.servers": self.quorum_bootstrap(),
            "listeners": f"{self.client_listener}://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            # Advertise the IPv4 loopback address: "localhost" can resolve to ::1 first, where nothing listens.
            "advertised.listeners": (f"{self.client_listener}://{HOST}:{self.port},"
                                     f"CONTROLLER://{HOST}:{self.controller_port}"),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": self.client_listener,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{self.client_listener}:{self.client_listener}",
            "log.dirs": self.data_dir,
            "num.partitions": 3,
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": replication,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 4,
            "log.retention.hours": 168,
            "log.segment.bytes": 268435456,
        }
        if self.sasl:
            lines.update({
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config": self.sasl.jaas_plain(),
                "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            })
        header = "# Written by broker/local_kafka.py at each start; edit that file, not this one.\n"
        return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def cluster_nodes(first_port: int, brokers: int, sasl: SaslUser | None = None) -> list[Node]:
    """Return the nodes of a local cluster on consecutive client ports starting at `first_port`."""
    ports = tuple(first_port + index for index in range(brokers))
    return [Node(node_id=index + 1, port=port, cluster_ports=ports, sasl=sasl) for index, port in enumerate(ports)]


def jvm_options(brokers: int) -> list[str]:
    """Return heap and GC options: 512 MB heap for one node, 384 MB each when three share 2 cores."""
    heap = "512m" if brokers == 1 else "384m"
    return [
        f"-Xms{heap}", f"-Xmx{heap}",
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:ActiveProcessorCount=2",
        "-Djava.awt.headless=true",
    ]
