"""End-to-end latency and consumer memory, measured on the real producer and consumer CLIs.

Latency of a reading: the time its SQLite transaction was first seen committed by the
bench process (`SqliteWatcher`), minus the Kafka record timestamp (CreateTime, set by
kafka-python in `send()`). Both clocks are this machine's wall clock.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from bench.common import BenchContext, BenchError, Child, create_topic, percentile, unique_name
from bench.sqlite_watch import SqliteWatcher
from bench.throughput import consumer_cli_args

READY_LINE = "partitions assigned"


@dataclass(frozen=True)
class LatencyResult:
    """Latency percentiles in milliseconds: `p*` to the SQLite commit, `delivery_p99` to the consumer's poll."""

    p50: float
    p95: float
    p99: float
    delivery_p99: float
    readings: int


def latency_run(context: BenchContext, rate_per_s: int, duration_s: float, chart: bool = False,
                **env: str) -> LatencyResult:
    """Stream `rate_per_s` readings/s for `duration_s` through the producer and consumer CLIs and measure latency.

    `chart=True` runs the consumer through `bench.frames_consumer`, which draws a chart frame
    every CHART_INTERVAL_MS with Agg. `env` adds settings such as CONSUMER_BATCH_INTERVAL_MS.
    """
    topic = unique_name("bench-latency")
    group = unique_name("bench-latency-group")
    db = context.path(f"{group}.sqlite")
    count = int(rate_per_s * duration_s)
    create_topic(context.settings, topic)

    args = consumer_cli_args(topic, group, str(db), max_messages=count)
    if chart:
        args = ["-m", "bench.frames_consumer", *args[2:]]
        args[args.index("--no-chart")] = "--snapshot"
        args.insert(args.index("--snapshot") + 1, str(context.path(f"{group}.png")))
    consumer = Child(context, group, args, env=context.child_env(**env))
    try:
        consumer.wait_for_line(READY_LINE)
        with SqliteWatcher(db) as watcher:
            producer = Child(context, unique_name("latency-producer"),
                             ["-m", "producers.sensor_producer", "--rate", str(rate_per_s), "--count", str(count),
                              "--topic", topic], env=context.child_env(**env))
            producer.wait()
            consumer.wait(timeout_s=duration_s + 120)
    finally:
        consumer.kill()

    create_ms = read_create_times(context, topic, count)
    commit_s = watcher.watch.commit_times()
    to_commit, to_poll = [], []
    with sqlite3.connect(db) as connection:
        for row_id, partition, offset, received_at in connection.execute(
                "SELECT id, partition, offset, received_at FROM readings"):
            created = create_ms[(partition, offset)]
            to_commit.append(commit_s[row_id] * 1000 - created)
            to_poll.append(datetime.fromisoformat(received_at).timestamp() * 1000 - created)
    connection.close()
    if len(to_commit) < count:
        raise BenchError(f"the consumer stored {len(to_commit)} of {count} readings in {db}")
    return LatencyResult(percentile(to_commit, 0.50), percentile(to_commit, 0.95), percentile(to_commit, 0.99),
                         percentile(to_poll, 0.99), len(to_commit))


def read_create_times(context: BenchContext, topic: str, count: int) -> dict[tuple[int, int], int]:
    """Read the topic once more and map (partition, offset) to the record's CreateTime in Unix milliseconds."""
    from kafka import KafkaConsumer, TopicPartition

    from utils.utils_kafka import client_config

    consumer = KafkaConsumer(**client_config(context.settings, "consumer"), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        times: dict[tuple[int, int], int] = {}
        empty_polls = 0
        while len(times) < count and empty_polls < 50:
            batches = consumer.poll(timeout_ms=200, max_records=2000)
            empty_polls = 0 if batches else empty_polls + 1
            for records in batches.values():
                for record in records:
                    times[(record.partition, record.offset)] = record.timestamp
    finally:
        consumer.close()
    return times


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS of the consumer process in bytes, up to `first` rows and up to `last` rows."""

    first: int
    last: int
    peak_first_bytes: int
    peak_last_bytes: int

    @property
    def growth_bytes(self) -> int:
        return self.peak_last_bytes - self.peak_first_bytes


def memory_run(context: BenchContext, topic: str, first: int, last: int) -> MemoryResult:
    """Consume `last` readings with the consumer CLI (chart off) and sample its RSS every 0.1 s."""
    group = unique_name("bench-memory")
    db = context.path(f"{group}.sqlite")
    consumer = Child(context, group, consumer_cli_args(topic, group, str(db), max_messages=last))
    try:
        with SqliteWatcher(db, pid=consumer.pid, interval_s=0.05) as watcher:
            consumer.wait()
    finally:
        consumer.kill()
    watch = watcher.watch
    if watch.rows() < last:
        raise BenchError(f"the consumer stored {watch.rows()} of {last} readings in {db}")
    return MemoryResult(first, last, watch.peak_rss_until(first), watch.peak_rss_bytes)
