"""Kafka's own Java performance tools on the same broker, for the limit the broker itself sets on this machine."""

from __future__ import annotations

import re
import subprocess

from bench.common import BenchContext, BenchError, create_topic, unique_name
from broker.node_config import libs_dir

JAVA_HEAP = "-Xmx256m"
PRODUCER_SUMMARY = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def _java(context: BenchContext, main_class: str, args: list[str]) -> str:
    from broker.local_kafka import find_java

    command = [find_java(), JAVA_HEAP, "-cp", f"{libs_dir()}/*", main_class, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise BenchError(f"{main_class} exited with status {result.returncode}:\n{tail}")
    return result.stdout


def java_producer_rate(context: BenchContext, topic: str, count: int, record_size: int, linger_ms: int) -> float:
    """Run ProducerPerformance with the project's delivery settings (acks=all, idempotence, linger); return records/s."""
    create_topic(context.settings, topic)
    output = _java(context, "org.apache.kafka.tools.ProducerPerformance", [
        "--topic", topic, "--num-records", str(count), "--record-size", str(record_size), "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={context.settings.bootstrap_servers}", "acks=all",
        "enable.idempotence=true", f"linger.ms={linger_ms}"])
    summaries = PRODUCER_SUMMARY.findall(output)
    if not summaries:
        raise BenchError(f"ProducerPerformance printed no summary line:\n{output[-800:]}")
    return float(summaries[-1][1])


def java_consumer_rate(context: BenchContext, topic: str, count: int) -> float:
    """Run ConsumerPerformance on `topic` and return its fetch rate (records/s without the group join)."""
    output = _java(context, "org.apache.kafka.tools.ConsumerPerformance", [
        "--bootstrap-server", context.settings.bootstrap_servers, "--topic", topic, "--num-records", str(count),
        "--group", unique_name("bench-java"), "--hide-header", "--timeout", "60000"])
    fields = [line.split(",") for line in output.splitlines() if line.count(",") >= 9]
    if not fields:
        raise BenchError(f"ConsumerPerformance printed no result line:\n{output[-800:]}")
    return float(fields[-1][9])


def reading_size_bytes() -> int:
    """Return the mean value size of simulated readings, as the producer encodes them."""
    import time

    from producers.message import encode_value
    from producers.simulation import Plant

    plant = Plant(5, 1, 0.0)
    now_ms = int(time.time() * 1000)
    sizes = [len(encode_value(plant.next_reading(now_ms + i).message)) for i in range(1000)]
    return round(sum(sizes) / len(sizes))
