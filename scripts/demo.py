"""Run the main job end to end: broker, topic, producer and consumer for a bounded time.

    python -m scripts.demo [--duration-s 30]

Starts the local broker when none responds at KAFKA_BOOTSTRAP_SERVERS (and leaves it
running for the two-terminal workflow), runs the consumer and the producer side by side,
and ends with where the SQLite file is and what it holds.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys

from broker import local_kafka
from broker.node_config import cluster_nodes
from utils.utils_config import PROJECT_ROOT, ConfigError, load_settings
from utils.utils_kafka import BrokerUnavailable, ensure_topic
from utils.utils_logger import setup_logging

CONSUMER_IDLE_TIMEOUT_S = 10
SNAPSHOT = PROJECT_ROOT / "data" / "demo_chart.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=30.0, help="seconds the producer runs (default 30)")
    parser.add_argument("--interval-s", type=float, default=0.25,
                        help="seconds between rounds of readings, one per machine (default 0.25)")
    return parser.parse_args(argv)


def ensure_broker(bootstrap_servers: str) -> None:
    address = bootstrap_servers.split(",")[0]
    if local_kafka.answers_metadata(address, 3.0):
        print(f"[demo] using the Kafka broker at {address}", flush=True)
        return
    nodes = cluster_nodes(local_kafka.first_local_port(bootstrap_servers), 1)
    local_kafka.start(nodes)
    print("[demo] the broker keeps running after the demo; stop it with `make kafka-stop`", flush=True)


def run_pipeline(duration_s: float, interval_s: float) -> tuple[int, int]:
    """Run consumer and producer as the user would in two terminals; return their exit statuses.

    Ctrl+C reaches both children from the terminal; the demo then waits for them to flush,
    commit and print their summaries instead of killing them.
    """
    python = sys.executable
    consumer = subprocess.Popen([python, "-m", "consumers.sensor_consumer", "--snapshot", str(SNAPSHOT),
                                 "--idle-timeout-s", str(CONSUMER_IDLE_TIMEOUT_S)], cwd=PROJECT_ROOT)
    producer = subprocess.Popen([python, "-m", "producers.sensor_producer", "--duration-s", str(duration_s),
                                 "--interval-s", str(interval_s)], cwd=PROJECT_ROOT)
    try:
        producer_status = producer.wait()
        consumer_status = consumer.wait(timeout=CONSUMER_IDLE_TIMEOUT_S + 60)
    except KeyboardInterrupt:
        print("[demo] stopping: waiting for the producer and the consumer to finish", flush=True)
        producer_status = _wait_or_kill(producer, 45)
        consumer_status = _wait_or_kill(consumer, 30)
    except subprocess.TimeoutExpired:
        consumer.send_signal(signal.SIGTERM)
        consumer_status = _wait_or_kill(consumer, 30)
    return producer_status, consumer_status


def _wait_or_kill(process: subprocess.Popen, timeout_s: float) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.kill()
        return process.wait()


def print_summary(database: str) -> None:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        readings, machines, first, last = connection.execute(
            "SELECT COUNT(*), COUNT(DISTINCT machine_id), MIN(timestamp), MAX(timestamp) FROM readings").fetchone()
        alerts = connection.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        rejects = connection.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
        per_machine = connection.execute(
            "SELECT machine_id, COUNT(*), AVG(temperature), AVG(pressure), AVG(vibration) "
            "FROM readings GROUP BY machine_id ORDER BY machine_id").fetchall()
    finally:
        connection.close()
    print(f"\n[demo] SQLite file: {database}")
    print(f"[demo] readings={readings} machines={machines} alerts={alerts} rejects={rejects} "
          f"from {first} to {last}")
    print("[demo] machine   readings  avg °C  avg kPa  avg mm/s")
    for machine_id, count, temperature, pressure, vibration in per_machine:
        print(f"[demo] {machine_id:<9} {count:>8}  {temperature:>6.1f}  {pressure:>7.1f}  {vibration:>8.2f}")
    if SNAPSHOT.is_file():
        print(f"[demo] chart snapshot: {SNAPSHOT}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        setup_logging("demo", settings.log_level, settings.log_folder(), settings.secrets())
        ensure_broker(settings.bootstrap_servers)
        ensure_topic(settings)
    except (ConfigError, BrokerUnavailable, local_kafka.BrokerToolError) as error:
        print(f"[demo] error: {error}", file=sys.stderr)
        return 2

    producer_status, consumer_status = run_pipeline(args.duration_s, args.interval_s)
    print(f"[demo] producer exit status {producer_status}, consumer exit status {consumer_status}")
    if settings.sqlite_file().is_file():
        print_summary(str(settings.sqlite_file()))
    return 0 if producer_status == 0 and consumer_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
