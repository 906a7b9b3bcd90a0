"""Producer CLI interrupted mid-run: every reading it reports as acknowledged is in Kafka, and it exits in bounded time."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.helpers import cli_env, run_cli
from tests.reliability.common import (CONSUMER, assert_stored_exactly_once, end_offsets, expected_readings,
                                      kill_leftovers, output_of, start_producer, summary_of, wait_for)

MACHINES = 5
# The producer waits up to 30 s for outstanding readings and then closes within 5 s.
STOP_LIMIT_S = 40.0


def wait_for_records(bootstrap: str, topic: str, count: int) -> None:
    wait_for(lambda: sum(end_offsets(bootstrap, topic).values()) >= count, 60, f"{count} records in {topic}",
             interval_s=0.5)


def test_sigint_acknowledged_all_in_kafka(kafka_bootstrap, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    log_path = tmp_path / "producer.out"
    producer = start_producer(env, log_path, count=0, rate="max", seed=201, machines=MACHINES)
    try:
        wait_for_records(kafka_bootstrap, topic, 3000)
        started = time.monotonic()
        producer.send_signal(signal.SIGINT)
        status = producer.wait(timeout=STOP_LIMIT_S + 10)
        stop_s = time.monotonic() - started
    finally:
        kill_leftovers(producer)

    output = output_of(log_path)
    assert status == 0, output[-3000:]
    assert stop_s < STOP_LIMIT_S
    assert "stopped reason=signal" in output
    assert "Traceback" not in output
    produced = summary_of(output)
    assert produced["failed"] == 0
    assert produced["acknowledged"] == produced["sent"]
    # Idempotence: retries inside the client add no second copy to the topic.
    assert sum(end_offsets(kafka_bootstrap, topic).values()) == produced["acknowledged"]

    consumed = run_cli(CONSUMER, "--no-chart", "--max-messages", str(produced["acknowledged"]),
                       "--idle-timeout-s", "10", env=env)

    assert consumed.returncode == 0, consumed.stderr[-3000:]
    assert_stored_exactly_once(Path(env["SQLITE_PATH"]), expected_readings(MACHINES, produced["sent"]))


def test_double_sigint_abandons_bounded(kafka_bootstrap, topic, tmp_path):
    """A second SIGINT stops the wait for acknowledgments: pending readings count as failed, acknowledged ones are in Kafka."""
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    log_path = tmp_path / "producer.out"
    producer = start_producer(env, log_path, count=0, rate="max", seed=202, machines=MACHINES)
    try:
        wait_for_records(kafka_bootstrap, topic, 3000)
        started = time.monotonic()
        producer.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping on SIGINT" in output_of(log_path), 10, "the first SIGINT in the log",
                 interval_s=0.05)
        producer.send_signal(signal.SIGINT)
        status = producer.wait(timeout=STOP_LIMIT_S)
        stop_s = time.monotonic() - started
    finally:
        kill_leftovers(producer)

    output = output_of(log_path)
    produced = summary_of(output)
    assert status == (0 if produced["failed"] == 0 else 1), output[-3000:]
    assert stop_s < 15.0
    assert "Traceback" not in output
    assert produced["acknowledged"] + produced["failed"] == produced["sent"]
    # Readings counted as failed may still have reached the broker, so the topic can hold more, never fewer.
    assert sum(end_offsets(kafka_bootstrap, topic).values()) >= produced["acknowledged"]
