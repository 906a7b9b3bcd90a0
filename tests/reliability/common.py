"""Helpers of the reliability suite: run the CLIs, wait on conditions, and read SQLite and Kafka state."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from producers.message import machine_id
from tests.helpers import query, start_cli
from utils.utils_config import Settings
from utils.utils_kafka import create_admin

PRODUCER = "producers.sensor_producer"
CONSUMER = "consumers.sensor_consumer"
ASSIGNED = re.compile(r"partitions assigned: (?!none)")


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll `condition` until it returns a true value and return that value; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def summary_of(output: str) -> dict[str, int]:
    """Parse the last `summary key=value ...` line of a CLI's output into whole numbers (`elapsed_s` dropped)."""
    lines = [line for line in output.splitlines() if line.startswith("summary ")]
    assert lines, f"no summary line in output:\n{output[-3000:]}"
    pairs = dict(part.split("=", 1) for part in lines[-1].split()[1:])
    return {key: int(value) for key, value in pairs.items() if key != "elapsed_s"}


def expected_readings(machines: int, count: int) -> set[tuple[str, int]]:
    """Return the (machine_id, seq) of the first `count` readings: the producer sends one per machine in turn."""
    return {(machine_id(index % machines + 1), index // machines + 1) for index in range(count)}


def output_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def stop_process(process: subprocess.Popen, signum: int, timeout_s: float) -> tuple[int, float]:
    """Send `signum` and wait for the exit; return (exit status, seconds it took)."""
    started = time.monotonic()
    process.send_signal(signum)
    status = process.wait(timeout=timeout_s)
    return status, time.monotonic() - started


def kill_leftovers(*processes: subprocess.Popen | None) -> None:
    """SIGKILL every process of a test that still runs, so a failed test leaves nothing behind."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


# ---------------------------------------------------------------------------- SQLite

def stored_count(db_path: Path) -> int:
    """Count rows in `readings` plus `rejects`; 0 while the consumer has not created the file or schema yet."""
    if not db_path.exists():
        return 0
    try:
        return query(db_path, "SELECT (SELECT COUNT(*) FROM readings) + (SELECT COUNT(*) FROM rejects)")[0][0]
    except sqlite3.OperationalError:
        return 0


def stored_readings(db_path: Path) -> list[tuple[str, int]]:
    """Return (machine_id, seq) of every row in `readings`, duplicates included."""
    return [(row[0], row[1]) for row in query(db_path, "SELECT machine_id, seq FROM readings")]


def assert_stored_exactly_once(db_path: Path, expected: set[tuple[str, int]]) -> None:
    """Assert the readings table contains every expected (machine_id, seq) once and nothing else."""
    rows = stored_readings(db_path)
    total, distinct = query(db_path, "SELECT COUNT(*), COUNT(DISTINCT machine_id || '/' || seq) FROM readings")[0]
    missing = expected - set(rows)
    assert not missing, f"{len(missing)} acknowledged readings missing, such as {sorted(missing)[:5]}"
    unexpected = set(rows) - expected
    assert not unexpected, f"{len(unexpected)} readings that were never sent, such as {sorted(unexpected)[:5]}"
    assert total == distinct, f"{total - distinct} readings stored twice"
    assert total == len(expected)


def rows_per_partition(db_path: Path, topic: str) -> dict[int, int]:
    """Count rows of `readings` plus `rejects` per partition of `topic`."""
    rows = query(db_path, "SELECT partition, COUNT(*) FROM (SELECT partition FROM readings WHERE topic = ? "
                          "UNION ALL SELECT partition FROM rejects WHERE topic = ?) GROUP BY partition", topic, topic)
    return dict(rows)


# ---------------------------------------------------------------------------- Kafka

def committed_offsets(settings: Settings, group: str) -> dict[int, int]:
    """Return the group's committed offset per partition, read with an admin client ({} when none)."""
    admin = create_admin(settings)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Return the end offset (the next offset to be written) of each partition of `topic`."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


# ---------------------------------------------------------------------------- consumer runs

def start_consumer(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start the consumer CLI and wait until the group has given it partitions."""
    process = start_cli(CONSUMER, "--no-chart", env=env, log_path=log_path)

    def assigned() -> bool:
        assert process.poll() is None, f"the consumer exited early:\n{output_of(log_path)[-3000:]}"
        return ASSIGNED.search(output_of(log_path)) is not None

    try:
        wait_for(assigned, 60, "the consumer's partition assignment")
    except AssertionError as error:
        kill_leftovers(process)
        raise AssertionError(f"{error}; consumer output:\n{output_of(log_path)[-3000:]}") from None
    return process


def start_producer(env: dict[str, str], log_path: Path, count: int, rate: int, seed: int,
                   machines: int = 5) -> subprocess.Popen:
    """Start the producer CLI sending `count` readings at `rate` per second (`count` 0: until stopped)."""
    limit = ["--count", str(count)] if count else []
    return start_cli(PRODUCER, *limit, "--rate", str(rate), "--machines", str(machines), "--seed", str(seed),
                     env=env, log_path=log_path)


def wait_committed_to_end(kafka_settings, group: str, bootstrap: str, topic: str) -> dict[int, int]:
    """Wait until the group's committed offsets equal the topic's end offsets, and return them."""
    ends = end_offsets(bootstrap, topic)
    wait_for(lambda: committed_offsets(kafka_settings, group) == ends, 30,
             f"committed offsets of group {group} to reach the end offsets {ends}", interval_s=0.5)
    return ends


def drain(env: dict[str, str], log_path: Path, db_path: Path, total: int, kafka_settings, bootstrap: str) -> dict:
    """Run the consumer on the same group until `total` records are stored and committed, then stop it with SIGTERM.

    Returns the consumer's summary.
    """
    process = start_cli(CONSUMER, "--no-chart", env=env, log_path=log_path)
    try:
        wait_for(lambda: stored_count(db_path) >= total, 90, f"{total} stored records")
        wait_committed_to_end(kafka_settings, env["CONSUMER_GROUP_ID"], bootstrap, env["KAFKA_TOPIC"])
        status, _ = stop_process(process, signal.SIGTERM, 30)
    finally:
        kill_leftovers(process)
    output = output_of(log_path)
    assert status == 0, output[-3000:]
    assert "Traceback" not in output
    return summary_of(output)
