"""Integration: the producer CLI as a subprocess against the real broker, checked by a plain consumer."""

import json
import os
import re
import signal
import socket
import time
from collections import defaultdict

import pytest

from producers.message import FIELDS, LABELS
from producers.simulation import Plant
from tests.helpers import cli_env, read_topic, run_cli, start_cli

PRODUCER = "producers.sensor_producer"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
MACHINE_ID = re.compile(r"M-\d{3}")
SUMMARY = re.compile(r"summary sent=(\d+) acknowledged=(\d+) failed=(\d+)")


def parse_summary(output: str) -> tuple[int, int, int]:
    match = SUMMARY.search(output)
    assert match, f"no summary line in output:\n{output}"
    return tuple(int(group) for group in match.groups())


def reject_constant(token: str):
    raise AssertionError(f"non-finite JSON token {token}")


def check_schema(record) -> dict:
    """Assert one record follows the message contract and return its decoded value."""
    text = record.value.decode("utf-8")
    message = json.loads(text, parse_constant=reject_constant)

    assert isinstance(message, dict)
    assert tuple(message) == FIELDS
    assert text == json.dumps(message, allow_nan=False, separators=(",", ":"))
    assert TIMESTAMP.fullmatch(message["timestamp"])
    assert MACHINE_ID.fullmatch(message["machine_id"])
    for metric in ("temperature", "pressure", "vibration"):
        assert type(message[metric]) is float, (metric, message)
    assert type(message["seq"]) is int
    assert message["seq"] >= 1
    assert record.key == message["machine_id"].encode("utf-8")
    assert len(record.headers) == 1
    name, label = record.headers[0]
    assert name == "fault"
    assert label.decode("utf-8") in LABELS
    return message


def free_loopback_port() -> int:
    """Return a loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_producer_cli_delivers_exact_count(kafka_bootstrap, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    result = run_cli(PRODUCER, "--count", "1000", "--machines", "4", "--rate", "max", "--topic", topic,
                     "--seed", "21", "--fault-rate", "0.05", env=env)

    assert result.returncode == 0, result.stderr
    assert parse_summary(result.stdout) == (1000, 1000, 0)
    assert "Traceback" not in result.stderr
    assert "started topic=" in result.stderr
    assert "stopped reason=count" in result.stderr

    records = read_topic(kafka_bootstrap, topic, 1000, quiet_s=2.0)
    assert len(records) == 1000
    by_machine = defaultdict(list)
    for record in records:
        message = check_schema(record)
        by_machine[message["machine_id"]].append((record.partition, record.offset, message,
                                                  record.headers[0][1].decode()))

    assert sorted(by_machine) == ["M-001", "M-002", "M-003", "M-004"]
    for machine, entries in by_machine.items():
        assert len({partition for partition, _, _, _ in entries}) == 1, f"{machine} spread over partitions"
        entries.sort(key=lambda entry: entry[1])
        assert [m["seq"] for _, _, m, _ in entries] == list(range(1, 251)), machine


def test_producer_cli_reproduces_seeded_run(kafka_bootstrap, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    result = run_cli(PRODUCER, "--count", "400", "--machines", "2", "--rate", "0", "--topic", topic,
                     "--seed", "5", "--fault-rate", "0.05", env=env)
    assert result.returncode == 0, result.stderr

    plant = Plant(2, seed=5, fault_rate=0.05)
    expected = defaultdict(list)
    for _ in range(400):
        reading = plant.next_reading(0)
        message = reading.message
        expected[message["machine_id"]].append(
            (message["seq"], message["temperature"], message["pressure"], message["vibration"], reading.label))

    received = defaultdict(list)
    records = read_topic(kafka_bootstrap, topic, 400, quiet_s=2.0)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        message = json.loads(record.value)
        received[message["machine_id"]].append(
            (message["seq"], message["temperature"], message["pressure"], message["vibration"],
             record.headers[0][1].decode()))

    assert received == expected
    assert any(label != "normal" for entries in received.values() for *_, label in entries)


def test_producer_cli_duration_paced_by_rate(kafka_bootstrap, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    result = run_cli(PRODUCER, "--duration-s", "3", "--rate", "100", "--machines", "3", "--topic", topic, env=env)

    assert result.returncode == 0, result.stderr
    sent, acknowledged, failed = parse_summary(result.stdout)
    assert 250 <= sent <= 305
    assert acknowledged == sent
    assert failed == 0
    assert "stopped reason=duration" in result.stderr


def test_producer_cli_sigterm_flushes_and_exits(kafka_bootstrap, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    output_path = tmp_path / "producer.out"
    process = start_cli(PRODUCER, "--rate", "200", "--machines", "3", "--topic", topic, env=env,
                        log_path=output_path)
    try:
        deadline = time.monotonic() + 60
        while "started topic=" not in output_path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, output_path.read_text()
            time.sleep(0.2)
        time.sleep(2.0)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=45)
    finally:
        if process.poll() is None:
            process.kill()
    output = output_path.read_text()

    assert returncode == 0, output
    sent, acknowledged, failed = parse_summary(output)
    assert sent > 100
    assert (acknowledged, failed) == (sent, 0)
    assert "stopped reason=signal" in output
    assert "Traceback" not in output
    assert len(read_topic(kafka_bootstrap, topic, sent, quiet_s=2.0)) == sent


def test_producer_cli_broker_down_exits_2(tmp_path):
    address = f"127.0.0.1:{free_loopback_port()}"
    env = cli_env(tmp_path, address, "sensors-nowhere")

    started = time.monotonic()
    result = run_cli(PRODUCER, "--count", "10", env=env, timeout_s=60)
    elapsed_s = time.monotonic() - started

    assert result.returncode == 2
    assert elapsed_s < 15.0
    assert f"no Kafka broker answered at {address}" in result.stderr
    assert "make kafka-start" in result.stderr
    assert "Traceback" not in result.stderr
    assert "summary" not in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--machines", "0"], "--machines: invalid value '0'"),
    (["--rate", "-5"], "--rate: invalid value '-5'"),
    (["--rate", "fast"], "--rate: invalid value 'fast'"),
    (["--interval-s", "0"], "--interval-s: invalid value '0'"),
    (["--count", "1.5"], "--count: invalid value '1.5'"),
    (["--duration-s", "nan"], "--duration-s: invalid value 'nan'"),
    (["--fault-rate", "2"], "--fault-rate: invalid value '2'"),
    (["--topic", "bad topic"], "--topic: invalid value 'bad topic'"),
    (["--bootstrap-servers", "localhost"], "--bootstrap-servers: invalid value 'localhost'"),
    (["--seed", "x"], "--seed: invalid value 'x'"),
    (["--rate", "5", "--interval-s", "1"], "not allowed with argument"),
    (["--count", "5", "--duration-s", "1"], "not allowed with argument"),
])
def test_producer_cli_rejects_invalid_flags(tmp_path, args, expected):
    env = cli_env(tmp_path, f"127.0.0.1:{free_loopback_port()}", "sensors-unused")
    result = run_cli(PRODUCER, *args, env=env, timeout_s=30)

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_producer_cli_rejects_invalid_setting(tmp_path):
    env = cli_env(tmp_path, f"127.0.0.1:{free_loopback_port()}", "sensors-unused", PRODUCER_MACHINES="many")
    result = run_cli(PRODUCER, "--count", "1", env=env, timeout_s=30)

    assert result.returncode == 2
    assert "invalid PRODUCER_MACHINES='many'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_producer_cli_help_names_units():
    result = run_cli(PRODUCER, "--help", env=dict(os.environ), timeout_s=30)

    assert result.returncode == 0
    for flag in ("--topic", "--machines", "--interval-s", "--rate", "--count", "--duration-s", "--seed",
                 "--fault-rate", "--bootstrap-servers"):
        assert flag in result.stdout
    assert "seconds" in result.stdout
    assert "readings per second" in result.stdout
