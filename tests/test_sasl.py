"""Integration: producer and consumer log in to a real broker that requires SASL, and no password leaks."""

import socket
import sqlite3

import pytest

from broker import local_kafka
from broker.node_config import CONTROLLER_PORT_OFFSET, SaslUser, cluster_nodes
from tests.helpers import cli_env, run_cli, unique_name

PASSWORD = "pl4nt-Secret-9317"


def free_port_pair() -> int:
    """Find a loopback port P with P and P + 100 both free, for the client and controller listeners."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + CONTROLLER_PORT_OFFSET < 65536 and not local_kafka.port_accepts(port + CONTROLLER_PORT_OFFSET):
            return port
    raise RuntimeError("no free pair of loopback ports found")


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("KAFKA_LOCAL_DIR", str(tmp_path_factory.mktemp("sasl-kafka")))
    nodes = cluster_nodes(free_port_pair(), 1, SaslUser("plant", PASSWORD))
    try:
        local_kafka.start(nodes)
    except local_kafka.BrokerToolError as error:
        pytest.fail(f"the SASL broker could not start: {error}", pytrace=False)
    yield f"localhost:{nodes[0].port}"
    local_kafka.stop_nodes(nodes)
    monkeypatch.undo()


def sasl_env(tmp_path, bootstrap, topic, mechanism, password=PASSWORD):
    return cli_env(tmp_path, bootstrap, topic, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                   KAFKA_SASL_MECHANISM=mechanism, KAFKA_SASL_USERNAME="plant", KAFKA_SASL_PASSWORD=password)


def test_scram_producer_and_plain_consumer(sasl_broker, tmp_path):
    topic = unique_name("sasl-sensors")
    produced = run_cli("producers.sensor_producer", "--count", "60", "--rate", "max", "--seed", "7",
                       env=sasl_env(tmp_path, sasl_broker, topic, "SCRAM-SHA-512"))
    assert produced.returncode == 0, produced.stderr[-2000:]

    consumed = run_cli("consumers.sensor_consumer", "--no-chart", "--max-messages", "60", "--idle-timeout-s", "20",
                       env=sasl_env(tmp_path, sasl_broker, topic, "PLAIN"))
    assert consumed.returncode == 0, consumed.stderr[-2000:]

    with sqlite3.connect(tmp_path / "sensors.sqlite") as connection:
        assert connection.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 60

    for output in (produced.stdout, produced.stderr, consumed.stdout, consumed.stderr):
        assert PASSWORD not in output
    for path in [*(tmp_path / "logs").iterdir(), tmp_path / "sensors.sqlite"]:
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_wrong_password_exits_2(sasl_broker, tmp_path):
    topic = unique_name("sasl-sensors")
    produced = run_cli("producers.sensor_producer", "--count", "5",
                       env=sasl_env(tmp_path, sasl_broker, topic, "SCRAM-SHA-256", password="wrong-password"),
                       timeout_s=60)
    assert produced.returncode == 2
    assert "SASL" in produced.stderr
    assert "wrong-password" not in produced.stdout + produced.stderr
