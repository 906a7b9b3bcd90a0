"""Producer and consumer throughput: the project's CLIs against bare kafka-python loops on the same broker."""

from __future__ import annotations

import json
import re
import sqlite3
import time

from bench.common import BenchContext, BenchError, Child, create_topic, unique_name
from bench.sqlite_watch import SqliteWatcher

POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 500
STOPPED_LINE = re.compile(r"stopped reason=(\w+) sending_s=([\d.]+) rate_per_s=\d+ total_s=([\d.]+)")


# ---------------------------------------------------------------------------- producer


def producer_cli_rate(context: BenchContext, topic: str, count: int, machines: int = 5) -> float:
    """Run `producers.sensor_producer --rate max --count N` and return readings/s from its own timing.

    The time is the producer's `total_s`: sending, flushing and closing, without Python
    start-up and the broker check, which the bare loop does not pay either.
    """
    child = Child(context, unique_name("producer"),
                  ["-m", "producers.sensor_producer", "--rate", "max", "--count", str(count), "--topic", topic,
                   "--machines", str(machines), "--seed", "1"])
    stderr = child.wait()
    match = STOPPED_LINE.search(stderr)
    if not match or match.group(1) != "count":
        raise BenchError(f"the producer did not log a 'stopped reason=count' line:\n{child.tail()}")
    return count / float(match.group(3))


def prebuilt_messages(count: int, machines: int = 5) -> list[tuple[bytes, bytes]]:
    """Build `count` (key, value) pairs: simulated readings with `machines` keys in turn, encoded as the CLI does."""
    from producers.message import encode_value
    from producers.simulation import Plant

    plant = Plant(machines, 1, 0.0)
    now_ms = time.time_ns() // 1_000_000
    messages = []
    for index in range(count):
        message = plant.next_reading(now_ms + index).message
        messages.append((message["machine_id"].encode(), encode_value(message)))
    return messages


def producer_bare_rate(context: BenchContext, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Send pre-built messages in a bare loop with the CLI's producer settings; return messages/s until closed."""
    from producers.message import FAULT_HEADER, NORMAL
    from producers.sensor_producer import MAX_BLOCK_MS
    from utils.utils_producer import create_producer

    create_topic(context.settings, topic)
    headers = [(FAULT_HEADER, NORMAL.encode())]
    producer = create_producer(context.settings, max_block_ms=MAX_BLOCK_MS)
    started = time.perf_counter()
    for key, value in messages:
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close(timeout=10)
    return len(messages) / (time.perf_counter() - started)


# ---------------------------------------------------------------------------- consumer


def consumer_cli_args(topic: str, group: str, db: str, max_messages: int | None = None,
                      idle_timeout_s: float | None = None) -> list[str]:
    args = ["-m", "consumers.sensor_consumer", "--no-chart", "--from-beginning", "--topic", topic, "--group", group,
            "--db", db]
    if max_messages is not None:
        args += ["--max-messages", str(max_messages)]
    if idle_timeout_s is not None:
        args += ["--idle-timeout-s", str(idle_timeout_s)]
    return args


def consumer_cli_rate(context: BenchContext, topic: str, count: int, processes: int = 1) -> float:
    """Run `processes` consumer CLIs in one fresh group on one SQLite file; return rows/s from first to last commit.

    One process stops at `--max-messages`; several stop after 5 s without records, once
    the file contains `count` rows.
    """
    group = unique_name("bench-group")
    db = context.path(f"{group}.sqlite")
    with SqliteWatcher(db, interval_s=0.02) as watcher:
        if processes == 1:
            children = [Child(context, group, consumer_cli_args(topic, group, str(db), max_messages=count))]
        else:
            children = [Child(context, f"{group}-{index}", consumer_cli_args(topic, group, str(db), idle_timeout_s=5))
                        for index in range(processes)]
        try:
            for child in children:
                child.wait()
        finally:
            for child in children:
                child.kill()
    watch = watcher.watch
    if watch.rows() < count:
        raise BenchError(f"the consumer stored {watch.rows()} of {count} readings in {db}")
    return watch.rate_per_s()


def consumer_bare_rate(context: BenchContext, topic: str, count: int) -> float:
    """Poll `count` records with the project's consumer settings and `json.loads` each value, storing nothing.

    Timed from the first record returned to the last, like the CLI's first and last commit.
    """
    from utils.utils_consumer import create_consumer

    consumer = create_consumer(context.settings, unique_name("bench-bare"), from_beginning=True)
    consumer.subscribe([topic])
    seen = 0
    started = None
    try:
        deadline = time.monotonic() + 600
        while seen < count and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_POLL_RECORDS)
            for records in batches.values():
                if started is None:
                    started = time.perf_counter()
                for record in records:
                    json.loads(record.value)
                seen += len(records)
        elapsed = time.perf_counter() - started if started else 0.0
    finally:
        consumer.close()
    if seen < count:
        raise BenchError(f"the bare consumer read {seen} of {count} records from {topic}")
    return seen / elapsed


def consumer_teaching_rate(context: BenchContext, topic: str, count: int) -> float:
    """Consume in the style of teaching repos: per record, open SQLite, insert one row, commit and close.

    The database uses SQLite's defaults (rollback journal, synchronous=FULL), as those repos do.
    """
    from utils.utils_consumer import create_consumer

    db = context.path(f"{unique_name('teaching')}.sqlite")
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE streamed_messages (id INTEGER PRIMARY KEY, timestamp TEXT, machine_id TEXT,"
                           " temperature REAL, pressure REAL, vibration REAL, seq INTEGER)")
    connection.close()

    consumer = create_consumer(context.settings, unique_name("bench-teaching"), from_beginning=True)
    consumer.subscribe([topic])
    seen = 0
    started = None
    try:
        deadline = time.monotonic() + 600
        while seen < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_POLL_RECORDS).values():
                started = started or time.perf_counter()
                for record in records[: count - seen]:
                    _insert_one(db, json.loads(record.value))
                    seen += 1
        elapsed = time.perf_counter() - started if started else 0.0
    finally:
        consumer.close()
    if seen < count:
        raise BenchError(f"the teaching-style consumer stored {seen} of {count} records from {topic}")
    return seen / elapsed


def _insert_one(db, message: dict) -> None:
    connection = sqlite3.connect(db)
    connection.execute(
        "INSERT INTO streamed_messages (timestamp, machine_id, temperature, pressure, vibration, seq) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (message["timestamp"], message["machine_id"], message["temperature"], message["pressure"],
         message["vibration"], message["seq"]))
    connection.commit()
    connection.close()
