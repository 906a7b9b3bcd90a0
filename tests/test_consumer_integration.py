"""The consumer CLI as a subprocess against the real broker and a real SQLite file.

Checks:
- every valid reading stored exactly once, every bad record in `rejects` with a reason,
  and the expected alerts present;
- nothing stored twice after a restart on the same group, or after `--from-beginning`;
- committed offsets that match the stored records;
- a clean stop on SIGTERM, and a rebalance between two consumers;
- exit status 2 with one clear line for a missing broker or an unwritable database.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.bad_cases import ALL_CASES
from tests.helpers import cli_env, run_cli, start_cli
from utils.utils_kafka import create_admin

MODULE = "consumers.sensor_consumer"
MACHINES = ["M-001", "M-002", "M-003", "M-004"]
READINGS_PER_MACHINE = 40
HOT_MACHINE, HOT_SEQ = "M-002", 30  # This reading is 98 °C, above the 90 °C default limit.


def valid_readings() -> list[dict]:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
    readings = []
    for seq in range(1, READINGS_PER_MACHINE + 1):
        moment = start + timedelta(seconds=seq)
        for index, machine_id in enumerate(MACHINES):
            temperature = 98.0 if (machine_id, seq) == (HOT_MACHINE, HOT_SEQ) else 70.0 + (seq % 5) * 0.3 + index
            readings.append({"timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "machine_id": machine_id,
                             "temperature": temperature, "pressure": 300.0 + (seq % 3), "vibration": 2.5,
                             "seq": seq})
    return readings


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, list]]) -> None:
    """Send (key, value, headers) records and wait until the broker has acknowledged every one."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=key, value=value, headers=headers) for key, value, headers in records]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def mixed_records() -> list[tuple[bytes | None, bytes | None, list]]:
    """Interleave the valid readings with every case of the bad-input table."""
    records = []
    bad = list(ALL_CASES)
    for i, reading in enumerate(valid_readings()):
        fault = b"overheating" if (reading["machine_id"], reading["seq"]) == (HOT_MACHINE, HOT_SEQ) else b"normal"
        records.append((reading["machine_id"].encode(), json.dumps(reading).encode(), [("fault", fault)]))
        if i % 3 == 0 and bad:
            case = bad.pop(0)
            records.append((case.id.encode(), case.value, []))
    records.extend((case.id.encode(), case.value, []) for case in bad)
    return records


def query(db_path: Path, sql: str, *params) -> list[tuple]:
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def summary_of(output: str) -> dict[str, str]:
    lines = [line for line in output.splitlines() if line.startswith("summary ")]
    assert lines, f"no summary line in output:\n{output}"
    return dict(part.split("=", 1) for part in lines[-1].split()[1:])


def committed_offsets(settings, group: str) -> dict:
    admin = create_admin(settings)
    try:
        return admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_consumer_stores_and_rejects(kafka_bootstrap, kafka_settings, topic, tmp_path):
    records = mixed_records()
    produce(kafka_bootstrap, topic, records)
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    db_path = Path(env["SQLITE_PATH"])
    store_cases = [case for case in ALL_CASES if case.expect == "store"]
    reject_cases = [case for case in ALL_CASES if case.expect == "reject"]
    expected_readings = len(MACHINES) * READINGS_PER_MACHINE + len(store_cases)

    first = run_cli(MODULE, "--no-chart", "--max-messages", str(len(records)), "--idle-timeout-s", "20", env=env)

    assert first.returncode == 0, first.stderr[-3000:]
    summary = summary_of(first.stdout)
    assert summary["consumed"] == str(len(records))
    assert summary["stored"] == str(expected_readings)
    assert summary["rejected"] == str(len(reject_cases))
    assert query(db_path, "SELECT COUNT(*) FROM readings")[0][0] == expected_readings
    assert query(db_path, "SELECT COUNT(DISTINCT partition || '/' || offset) FROM readings")[0][0] == expected_readings

    for machine_id in MACHINES:
        seqs = [row[0] for row in query(db_path, "SELECT seq FROM readings WHERE machine_id = ? ORDER BY seq",
                                        machine_id)]
        assert seqs == list(range(1, READINGS_PER_MACHINE + 1)), machine_id
    for case in store_cases:
        assert query(db_path, "SELECT COUNT(*) FROM readings WHERE machine_id = ?", case.machine_id)[0][0] == 1, case.id

    rejects = query(db_path, "SELECT raw, reason FROM rejects")
    assert len(rejects) == len(reject_cases)
    for case in reject_cases:
        reasons = [reason for raw, reason in rejects if raw == case.value]
        assert len(reasons) == 1, case.id
        for text in case.reason_contains:
            assert text in reasons[0], case.id

    offset_timestamp = query(db_path, "SELECT timestamp FROM readings WHERE machine_id = 'M-102'")
    assert offset_timestamp == [("2026-12-04T08:00:02.000Z",)]
    hot = query(db_path, "SELECT ground_truth FROM readings WHERE machine_id = ? AND seq = ?", HOT_MACHINE, HOT_SEQ)
    assert hot == [("overheating",)]
    alerts = query(db_path, "SELECT machine_id, metric, kind, value, threshold FROM alerts WHERE kind = 'limit'")
    assert (HOT_MACHINE, "temperature", "limit", 98.0, 90.0) in alerts
    assert "alert kind=limit machine_id=M-002 metric=temperature" in first.stderr

    committed = committed_offsets(kafka_settings, env["CONSUMER_GROUP_ID"])
    assert sum(meta.offset for meta in committed.values()) == len(records)

    restart = run_cli(MODULE, "--no-chart", "--idle-timeout-s", "4", env=env)

    assert restart.returncode == 0, restart.stderr[-3000:]
    assert summary_of(restart.stdout)["consumed"] == "0"
    assert query(db_path, "SELECT COUNT(*) FROM readings")[0][0] == expected_readings

    replay = run_cli(MODULE, "--no-chart", "--from-beginning", "--idle-timeout-s", "4", env=env)

    assert replay.returncode == 0, replay.stderr[-3000:]
    replay_summary = summary_of(replay.stdout)
    assert replay_summary["consumed"] == str(len(records))
    assert replay_summary["stored"] == "0"
    assert replay_summary["duplicates_skipped"] == str(len(records))
    assert query(db_path, "SELECT COUNT(*) FROM readings")[0][0] == expected_readings
    assert query(db_path, "SELECT COUNT(*) FROM rejects")[0][0] == len(reject_cases)


def test_consumer_snapshot_headless(kafka_bootstrap, topic, tmp_path):
    records = mixed_records()[:60]
    produce(kafka_bootstrap, topic, records)
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    snapshot = tmp_path / "chart.png"

    result = run_cli(MODULE, "--no-chart", "--snapshot", str(snapshot), "--max-messages", str(len(records)),
                     "--idle-timeout-s", "20", env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_consumer_no_display_fallback(kafka_bootstrap, topic, tmp_path):
    produce(kafka_bootstrap, topic, mixed_records()[:10])
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)

    result = run_cli(MODULE, "--max-messages", "10", "--idle-timeout-s", "20", env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("no chart window") == 1
    assert (tmp_path / "sensor_chart.png").is_file()


def test_consumer_sigterm_clean_stop(kafka_bootstrap, kafka_settings, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    log_path = tmp_path / "consumer.out"
    process = start_cli(MODULE, "--no-chart", env=env, log_path=log_path)
    try:
        records = mixed_records()[:100]
        produce(kafka_bootstrap, topic, records)
        db_path = Path(env["SQLITE_PATH"])
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline:
            if db_path.exists():
                stored = query(db_path, "SELECT (SELECT COUNT(*) FROM readings) + (SELECT COUNT(*) FROM rejects)")[0][0]
                if stored == len(records):
                    break
            time.sleep(0.5)
        assert stored == len(records)

        stop_started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=20)
        stop_s = time.monotonic() - stop_started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log_path.read_text()
    assert status == 0, output[-3000:]
    assert stop_s < 15
    assert "SIGTERM received" in output
    assert summary_of(output)["consumed"] == str(len(records))
    committed = committed_offsets(kafka_settings, env["CONSUMER_GROUP_ID"])
    assert sum(meta.offset for meta in committed.values()) == len(records)


def test_consumer_rebalance_commits(kafka_bootstrap, topic, tmp_path):
    """A second consumer joins while the first has an unstored batch: the first stores and commits it on revoke."""
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    # A batch interval longer than the test keeps the first consumer's records in its batch until the rebalance.
    holding_env = {**env, "CONSUMER_BATCH_INTERVAL_MS": "600000"}
    records = mixed_records()
    half = len(records) // 2
    first = start_cli(MODULE, "--no-chart", env=holding_env, log_path=tmp_path / "first.out")
    second = None
    try:
        time.sleep(3)
        produce(kafka_bootstrap, topic, records[:half])
        time.sleep(3)
        second = start_cli(MODULE, "--no-chart", env=env, log_path=tmp_path / "second.out")
        time.sleep(8)
        produce(kafka_bootstrap, topic, records[half:])
        time.sleep(5)
        for process in (first, second):
            process.send_signal(signal.SIGINT)
        statuses = [first.wait(timeout=30), second.wait(timeout=30)]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    first_output = (tmp_path / "first.out").read_text()
    second_output = (tmp_path / "second.out").read_text()
    assert statuses == [0, 0], first_output[-3000:] + second_output[-3000:]
    assert "partitions revoked" in first_output
    assert "committed before rebalance" in first_output
    assert first_output.count("partitions assigned") >= 2
    db_path = Path(env["SQLITE_PATH"])
    readings = query(db_path, "SELECT COUNT(*), COUNT(DISTINCT partition || '/' || offset) FROM readings")[0]
    rejects = query(db_path, "SELECT COUNT(*) FROM rejects")[0][0]
    assert readings[0] == readings[1]
    assert readings[0] + rejects == len(records)
    consumed = int(summary_of(first_output)["consumed"]) + int(summary_of(second_output)["consumed"])
    assert consumed == len(records)


def test_broker_absent_exit_2(tmp_path):
    env = cli_env(tmp_path, f"127.0.0.1:{free_loopback_port()}", "sensors-absent")

    started = time.monotonic()
    result = run_cli(MODULE, "--no-chart", env=env, timeout_s=60)
    elapsed_s = time.monotonic() - started

    assert result.returncode == 2
    assert elapsed_s < 15
    assert result.stderr.count("no Kafka broker answered") == 1
    assert "Traceback" not in result.stderr


def test_database_unwritable_exit_2(kafka_bootstrap, kafka_settings, topic, tmp_path):
    produce(kafka_bootstrap, topic, mixed_records()[:10])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    env = cli_env(tmp_path, kafka_bootstrap, topic, SQLITE_PATH=blocker / "sensors.sqlite")

    result = run_cli(MODULE, "--no-chart", "--idle-timeout-s", "5", env=env, timeout_s=60)

    assert result.returncode == 2
    assert "SQLite database" in result.stderr
    assert "Traceback" not in result.stderr
    assert committed_offsets(kafka_settings, env["CONSUMER_GROUP_ID"]) == {}


@pytest.mark.parametrize("flag, value", [("--topic", "bad topic"), ("--bootstrap-servers", "nohost"),
                                         ("--window", "1"), ("--max-messages", "0")])
def test_invalid_flag_exit_2(tmp_path, flag, value):
    env = cli_env(tmp_path, "127.0.0.1:9", "sensors")

    result = run_cli(MODULE, "--no-chart", flag, value, env=env, timeout_s=60)

    assert result.returncode == 2
    assert flag in result.stderr
