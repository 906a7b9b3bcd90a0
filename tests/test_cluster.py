"""Integration: the producer and consumer CLIs on a real three-node KRaft cluster.

The module starts its own cluster with `python -m broker.local_kafka start --brokers 3` on
free loopback ports, with its data in a temporary folder, and stops it at the end. Topics
use the cluster profile: 6 partitions, replication factor 3, min.insync.replicas 2.

Checks:
- the topic is created with the profile, and an existing topic with other settings gets a warning;
- SIGKILL of a partition leader mid-stream: the producer fails no reading, two consumers
  in one group store every reading exactly once, and the node restarts and rejoins the ISR;
- SIGTERM of one of two consumers mid-stream: its partitions move to the other, and
  nothing is lost or stored twice.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest
from kafka.admin import ConfigResource, ConfigResourceType
from loguru import logger

from broker import local_kafka
from broker.node_config import CONTROLLER_PORT_OFFSET, Node, cluster_nodes
from tests.helpers import cli_env, query, run_cli, start_cli, unique_name
from utils.utils_config import Settings, load_settings
from utils.utils_kafka import create_admin, ensure_topic

PARTITIONS, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS = 6, 3, 2
READINGS = 10_000
# 20 machine ids hash onto all 6 partitions; the default 5 would leave partitions 1, 2 and 3 empty.
MACHINES = 20
RATE_PER_S = 400  # 10,000 readings take about 25 s, so the kill and the stop land mid-stream.
STORED_BEFORE_DISRUPTION = 2_500
PRODUCER = "producers.sensor_producer"
CONSUMER = "consumers.sensor_consumer"
ASSIGNMENT_PATTERN = re.compile(r"partitions (assigned|revoked|lost)[^:]*: (.*)$")


@dataclasses.dataclass
class Cluster:
    nodes: list[Node]
    bootstrap: str
    env: dict[str, str]  # The environment of the broker CLI: ports and data folder of this cluster.

    def broker_cli(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
        return run_cli("broker.local_kafka", *args, "--brokers", str(len(self.nodes)), env=self.env,
                       timeout_s=timeout_s)

    def node(self, node_id: int) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)

    def settings(self, topic: str, **overrides) -> Settings:
        """Build client settings for this cluster with the cluster profile, ignoring any `.env` file."""
        values = {"bootstrap_servers": self.bootstrap, "topic": topic, "topic_partitions": PARTITIONS,
                  "replication_factor": REPLICATION_FACTOR, "min_insync_replicas": MIN_INSYNC_REPLICAS}
        values.update(overrides)
        return load_settings(env_file=os.devnull, environ={}, **values)


def free_base_port() -> int:
    """Find a port P below the ephemeral range with P..P+2 and their controller ports all free on loopback."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 32_000)
        ports = [base + index + offset for index in range(3) for offset in (0, CONTROLLER_PORT_OFFSET)]
        if all(port_is_free(port) for port in ports):
            return base
    raise RuntimeError("no free set of six loopback ports found between 20000 and 32100")


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    local_dir = tmp_path_factory.mktemp("kafka-cluster")
    # The test process reads the nodes' pid files, so it needs the same data folder as the broker CLI.
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("KAFKA_LOCAL_DIR", str(local_dir))
    nodes = cluster_nodes(free_base_port(), 3)
    bootstrap = ",".join(node.address for node in nodes)
    env = {**os.environ, "KAFKA_LOCAL_DIR": str(local_dir), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    cluster = Cluster(nodes, bootstrap, env)
    try:
        started = cluster.broker_cli("start", timeout_s=400)
        if started.returncode != 0:
            pytest.fail(f"the three-node cluster could not start (exit {started.returncode}):\n"
                        f"{started.stdout[-3000:]}{started.stderr[-3000:]}", pytrace=False)
        yield cluster
    finally:
        cluster.broker_cli("stop", timeout_s=120)
        if any(local_kafka.read_pid(node) for node in nodes):
            local_kafka.stop_nodes(nodes, timeout_s=10)
        monkeypatch.undo()


# ---------------------------------------------------------------------------- helpers

def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll `condition` until it is true or `timeout_s` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def stored_count(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        return query(db_path, "SELECT COUNT(*) FROM readings")[0][0]
    except sqlite3.OperationalError:
        return 0  # The consumer has not created the schema yet.


def current_assignment(output_path: Path, topic: str) -> set[int]:
    """Replay a consumer's "partitions assigned/revoked/lost" log lines and return the partitions it owns."""
    owned: set[int] = set()
    for line in output_path.read_text(errors="replace").splitlines():
        match = ASSIGNMENT_PATTERN.search(line)
        if not match:
            continue
        partitions = {int(number) for number in re.findall(rf"{re.escape(topic)}/(\d+)", match.group(2))}
        if match.group(1) == "assigned":
            owned |= partitions
        else:
            owned -= partitions
    return owned


def summary_stored(output: str) -> int:
    match = re.search(r"^summary consumed=\d+ stored=(\d+)", output, re.MULTILINE)
    assert match, f"no summary line in the consumer output:\n{output[-3000:]}"
    return int(match.group(1))


def partition_leaders(cluster: Cluster, topic: str) -> dict[int, int]:
    admin = create_admin(cluster.settings(topic))
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
    finally:
        admin.close()
    return {partition["partition_index"]: partition["leader_id"] for partition in partitions}


def in_sync_everywhere(cluster: Cluster, topic: str, node_id: int) -> bool:
    """Tell whether `node_id` is in the ISR of every partition of `topic`."""
    try:
        admin = create_admin(cluster.settings(topic), timeout_s=5)
    except Exception:  # noqa: BLE001 - a cluster still electing leaders is polled again.
        return False
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()
    return len(partitions) == PARTITIONS and all(node_id in partition["isr_nodes"] for partition in partitions)


def utc_text(epoch_s: float) -> str:
    """Format a time like the consumer's `received_at` and the producer's `timestamp`, so text order is time order."""
    moment = datetime.fromtimestamp(epoch_s, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def seconds_after(start_s: float, text: str | None) -> float | None:
    if text is None:
        return None
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return moment.timestamp() - start_s


def start_consumers(env: dict[str, str], tmp_path: Path, names: list[str]) -> dict[str, subprocess.Popen]:
    return {name: start_cli(CONSUMER, "--no-chart", env=env, log_path=tmp_path / f"{name}.out") for name in names}


def wait_for_split(outputs: list[Path], topic: str) -> bool:
    """Wait until the consumers own disjoint, non-empty sets of partitions that cover the whole topic."""
    def split() -> bool:
        owned = [current_assignment(path, topic) for path in outputs]
        disjoint = sum(len(part) for part in owned) == len(set().union(*owned))
        return all(owned) and disjoint and set().union(*owned) == set(range(PARTITIONS))
    return wait_until(split, timeout_s=120, interval_s=0.5)


def stop_all(processes: list[subprocess.Popen], timeout_s: float = 60) -> list[int | None]:
    """Send SIGTERM to the processes still running and return their exit statuses (None: killed after timeout_s)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    statuses = []
    for process in processes:
        try:
            statuses.append(process.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            statuses.append(None)
    return statuses


def assert_exactly_once(db_path: Path) -> None:
    """Check that SQLite contains all READINGS readings, each once, with no gap in any machine's seq."""
    total, distinct = query(db_path, "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT machine_id, seq "
                                     "FROM readings)) FROM readings")[0]
    assert total == READINGS
    assert distinct == READINGS
    per_machine = {machine_id: (count, low, high) for machine_id, count, low, high in query(
        db_path, "SELECT machine_id, COUNT(*), MIN(seq), MAX(seq) FROM readings GROUP BY machine_id")}
    expected = READINGS // MACHINES
    missing = {machine_id: row for machine_id, row in per_machine.items() if row != (expected, 1, expected)}
    assert len(per_machine) == MACHINES
    assert missing == {}, f"machines with readings missing or repeated, as (count, min seq, max seq): {missing}"
    assert query(db_path, "SELECT COUNT(*) FROM rejects")[0][0] == 0


# ---------------------------------------------------------------------------- topic settings

def test_topic_created_with_cluster_profile(cluster):
    topic = unique_name("cluster-profile")
    assert ensure_topic(cluster.settings(topic)) is True

    admin = create_admin(cluster.settings(topic))
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    assert len(partitions) == PARTITIONS
    assert {len(partition["replica_nodes"]) for partition in partitions} == {REPLICATION_FACTOR}
    assert configs["topic"][topic]["min.insync.replicas"]["value"] == str(MIN_INSYNC_REPLICAS)


def test_existing_topic_warns_on_differences(cluster):
    topic = unique_name("cluster-profile")
    ensure_topic(cluster.settings(topic))
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING", format="{message}")
    try:
        same = ensure_topic(cluster.settings(topic))
        same_warnings = list(warnings)
        other = ensure_topic(cluster.settings(topic, topic_partitions=3, replication_factor=1, min_insync_replicas=1))
    finally:
        logger.remove(sink)

    assert same is False
    assert same_warnings == []
    assert other is False
    assert len(warnings) == 1
    assert f"topic={topic} exists with partitions=6 replication_factor=3 min_insync_replicas=2" in warnings[0]
    assert "settings ask for 3 / 1 / 1" in warnings[0]


# ---------------------------------------------------------------------------- failover and rebalance

def test_leader_kill_loses_nothing(cluster, tmp_path, record_property):
    """SIGKILL the leader of a busy partition mid-stream; every reading is still acknowledged and stored once."""
    topic = unique_name("cluster-failover")
    assert ensure_topic(cluster.settings(topic)) is True
    env = cli_env(tmp_path, cluster.bootstrap, topic, KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
                  KAFKA_TOPIC_PARTITIONS=PARTITIONS, KAFKA_REPLICATION_FACTOR=REPLICATION_FACTOR,
                  KAFKA_MIN_INSYNC_REPLICAS=MIN_INSYNC_REPLICAS)
    db_path = Path(env["SQLITE_PATH"])
    consumers = start_consumers(env, tmp_path, ["consumer-a", "consumer-b"])
    producer = None
    killed_id = None
    try:
        assert wait_for_split([tmp_path / "consumer-a.out", tmp_path / "consumer-b.out"], topic), \
            "the two consumers did not split the partitions between them"
        producer = start_cli(PRODUCER, "--count", str(READINGS), "--rate", str(RATE_PER_S), "--machines",
                             str(MACHINES), "--seed", "8", env=env, log_path=tmp_path / "producer.out")
        assert wait_until(lambda: stored_count(db_path) >= STORED_BEFORE_DISRUPTION, timeout_s=120)

        busiest = query(db_path, "SELECT partition FROM readings GROUP BY partition ORDER BY COUNT(*) DESC LIMIT 1")
        leaders = partition_leaders(cluster, topic)
        killed_id = leaders[busiest[0][0]]
        led_partitions = sorted(partition for partition, leader in leaders.items() if leader == killed_id)
        pid = local_kafka.read_pid(cluster.node(killed_id))
        assert pid is not None, f"no running broker process for node {killed_id}"
        assert producer.poll() is None, "the producer finished before the kill"
        os.kill(pid, signal.SIGKILL)
        killed_at_s = time.time()
        stored_at_kill = stored_count(db_path)

        producer_status = producer.wait(timeout=300)
        assert wait_until(lambda: stored_count(db_path) >= READINGS, timeout_s=180, interval_s=0.5)
    finally:
        statuses = stop_all(list(consumers.values()) + ([producer] if producer else []))

    producer_output = (tmp_path / "producer.out").read_text(errors="replace")
    outputs = {name: (tmp_path / f"{name}.out").read_text(errors="replace") for name in consumers}
    assert producer_status == 0, producer_output[-3000:]
    assert f"summary sent={READINGS} acknowledged={READINGS} failed=0" in producer_output
    assert statuses[:2] == [0, 0], "\n".join(output[-3000:] for output in outputs.values())
    assert stored_at_kill < READINGS
    assert_exactly_once(db_path)
    assert sum(summary_stored(output) for output in outputs.values()) == READINGS

    # The failover time is measured on the first reading created after the kill on a partition that
    # the killed node led, because that reading had to wait for a new leader. A row received after
    # the kill may have been fetched before it, so the second figure can understate the failover.
    placeholders = ",".join("?" * len(led_partitions))
    first_created_after = query(db_path, f"SELECT MIN(received_at) FROM readings WHERE partition IN ({placeholders}) "
                                         f"AND timestamp > ?", *led_partitions, utc_text(killed_at_s))[0][0]
    first_received_after = query(db_path, f"SELECT MIN(received_at) FROM readings WHERE partition IN "
                                          f"({placeholders}) AND received_at > ?",
                                 *led_partitions, utc_text(killed_at_s))[0][0]
    recovery_s = seconds_after(killed_at_s, first_created_after)
    assert recovery_s is not None
    record_property("kill_to_first_stored_s", round(recovery_s, 2))
    print(f"\nkilled node {killed_id} (leader of partitions {led_partitions}) after {stored_at_kill} stored readings; "
          f"first reading created after the kill stored on those partitions after {recovery_s:.2f} s; first row "
          f"received after the kill on them after {seconds_after(killed_at_s, first_received_after):.2f} s")

    restarted = cluster.broker_cli("start", "--node", str(killed_id))
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert local_kafka.answers_metadata(cluster.node(killed_id).address, 5.0)
    assert wait_until(lambda: in_sync_everywhere(cluster, topic, killed_id), timeout_s=120, interval_s=1.0), \
        f"node {killed_id} did not rejoin the ISR of every partition of {topic}"
    status = cluster.broker_cli("status", "--node", str(killed_id), timeout_s=60)
    assert status.returncode == 0, status.stdout
    assert f"node {killed_id}: running" in status.stdout


def test_consumer_leaving_hands_over_partitions(cluster, tmp_path):
    """SIGTERM one of two consumers mid-stream; the other takes its partitions and nothing is lost or repeated."""
    topic = unique_name("cluster-rebalance")
    assert ensure_topic(cluster.settings(topic)) is True
    env = cli_env(tmp_path, cluster.bootstrap, topic, KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
                  KAFKA_TOPIC_PARTITIONS=PARTITIONS, KAFKA_REPLICATION_FACTOR=REPLICATION_FACTOR,
                  KAFKA_MIN_INSYNC_REPLICAS=MIN_INSYNC_REPLICAS)
    db_path = Path(env["SQLITE_PATH"])
    staying_path, leaving_path = tmp_path / "consumer-staying.out", tmp_path / "consumer-leaving.out"
    consumers = start_consumers(env, tmp_path, ["consumer-staying", "consumer-leaving"])
    producer = None
    try:
        assert wait_for_split([staying_path, leaving_path], topic), \
            "the two consumers did not split the partitions between them"
        handed_over = current_assignment(leaving_path, topic)
        producer = start_cli(PRODUCER, "--count", str(READINGS), "--rate", str(RATE_PER_S), "--machines",
                             str(MACHINES), "--seed", "9", env=env, log_path=tmp_path / "producer.out")
        assert wait_until(lambda: stored_count(db_path) >= STORED_BEFORE_DISRUPTION, timeout_s=120)

        assert producer.poll() is None, "the producer finished before the consumer left"
        leaving_status = stop_all([consumers["consumer-leaving"]])[0]
        stored_at_leave = stored_count(db_path)
        took_over = wait_until(lambda: current_assignment(staying_path, topic) == set(range(PARTITIONS)),
                               timeout_s=90, interval_s=0.5)

        producer_status = producer.wait(timeout=300)
        assert wait_until(lambda: stored_count(db_path) >= READINGS, timeout_s=180, interval_s=0.5)
    finally:
        statuses = stop_all(list(consumers.values()) + ([producer] if producer else []))

    producer_output = (tmp_path / "producer.out").read_text(errors="replace")
    staying_output = staying_path.read_text(errors="replace")
    leaving_output = leaving_path.read_text(errors="replace")
    assert leaving_status == 0, leaving_output[-3000:]
    assert statuses[0] == 0, staying_output[-3000:]
    assert took_over, f"the staying consumer did not take over partitions {sorted(handed_over)}:\n" \
                      f"{staying_output[-3000:]}"
    assert stored_at_leave < READINGS
    assert producer_status == 0, producer_output[-3000:]
    assert f"summary sent={READINGS} acknowledged={READINGS} failed=0" in producer_output
    assert_exactly_once(db_path)
    assert summary_stored(leaving_output) > 0
    assert summary_stored(staying_output) + summary_stored(leaving_output) == READINGS
