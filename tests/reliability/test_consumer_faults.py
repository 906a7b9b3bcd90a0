"""Consumer CLI under faults: SIGKILL, SIGTERM and SIGINT mid-stream, a locked database, an unwritable database.

Each test streams readings with the producer CLI (fixed `--seed`), runs the consumer CLI
as a subprocess on a real SQLite file, and checks the file against what the producer
reported as acknowledged: every reading stored, none twice. Committed offsets are read
with an admin client and compared with the rows stored per partition.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumers.sensor_db import SensorDatabase
from tests.helpers import cli_env, run_cli
from tests.reliability.common import (CONSUMER, PRODUCER, assert_stored_exactly_once, committed_offsets, drain,
                                      expected_readings, kill_leftovers, output_of, query, start_consumer,
                                      start_producer, stop_process, stored_count, summary_of, wait_committed_to_end, wait_for)

MACHINES = 5


def offsets_per_partition(db_path: Path, topic: str) -> dict[int, list[int]]:
    """Return the sorted offsets of the rows in `readings` and `rejects`, per partition of `topic`."""
    rows = query(db_path, "SELECT partition, offset FROM readings WHERE topic = ? "
                          "UNION ALL SELECT partition, offset FROM rejects WHERE topic = ?", topic, topic)
    offsets: dict[int, list[int]] = {}
    for partition, offset in rows:
        offsets.setdefault(partition, []).append(offset)
    return {partition: sorted(values) for partition, values in offsets.items()}


def assert_committed_only_stored(db_path: Path, topic: str, committed: dict[int, int]) -> None:
    """Assert every offset below each committed offset has its row in SQLite: nothing committed past what is stored."""
    stored = offsets_per_partition(db_path, topic)
    for partition, offset in committed.items():
        assert stored.get(partition, [])[:offset] == list(range(offset)), \
            f"partition {partition}: offset {offset} committed, but not every record below it is stored"


# ---------------------------------------------------------------------------- killed and restarted

def test_sigkill_restart_stores_once(kafka_bootstrap, kafka_settings, topic, tmp_path):
    count = 5000
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    db_path = Path(env["SQLITE_PATH"])
    kill_after_rows = random.randint(100, 4000)
    print(f"SIGKILL once {kill_after_rows} rows are stored")
    consumer = producer = None
    try:
        consumer = start_consumer(env, tmp_path / "consumer-killed.out")
        producer = start_producer(env, tmp_path / "producer.out", count, rate=1000, seed=101)

        wait_for(lambda: stored_count(db_path) >= kill_after_rows, 90, f"{kill_after_rows} stored rows")
        consumer.send_signal(signal.SIGKILL)
        assert consumer.wait(timeout=10) == -signal.SIGKILL
        rows_at_kill = stored_count(db_path)
        producer_status = producer.wait(timeout=90)
    finally:
        kill_leftovers(consumer, producer)

    produced = summary_of(output_of(tmp_path / "producer.out"))
    assert producer_status == 0
    assert produced == {"sent": count, "acknowledged": count, "failed": 0}
    assert "summary" not in output_of(tmp_path / "consumer-killed.out")

    restarted = drain(env, tmp_path / "consumer-restarted.out", db_path, count, kafka_settings, kafka_bootstrap)

    assert_stored_exactly_once(db_path, expected_readings(MACHINES, count))
    assert restarted["stored"] == count - rows_at_kill
    assert restarted["rejected"] == 0
    # Records stored before the kill whose offsets were not committed come again and are skipped.
    assert restarted["consumed"] == restarted["stored"] + restarted["duplicates_skipped"]


# ---------------------------------------------------------------------------- clean stop on a signal

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_stream_clean_stop(kafka_bootstrap, kafka_settings, topic, tmp_path, signum):
    count = 3000
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    db_path = Path(env["SQLITE_PATH"])
    group = env["CONSUMER_GROUP_ID"]
    log_path = tmp_path / "consumer-stopped.out"
    consumer = producer = None
    try:
        consumer = start_consumer(env, log_path)
        producer = start_producer(env, tmp_path / "producer.out", count, rate=1000, seed=102)

        wait_for(lambda: stored_count(db_path) >= 800, 90, "800 stored rows")
        status, stop_s = stop_process(consumer, signum, 30)
        producer_status = producer.wait(timeout=90)
    finally:
        kill_leftovers(consumer, producer)

    output = output_of(log_path)
    assert status == 0, output[-3000:]
    assert stop_s < 8.0
    assert f"{signal.Signals(signum).name} received" in output
    assert "Traceback" not in output
    summary = summary_of(output)
    assert summary["stored"] == stored_count(db_path)
    assert summary["commit_failures"] == 0
    committed = committed_offsets(kafka_settings, group)
    assert sum(committed.values()) == summary["stored"]
    assert_committed_only_stored(db_path, topic, committed)

    produced = summary_of(output_of(tmp_path / "producer.out"))
    assert producer_status == 0
    assert produced["acknowledged"] == count

    restarted = drain(env, tmp_path / "consumer-restarted.out", db_path, count, kafka_settings, kafka_bootstrap)

    assert restarted["duplicates_skipped"] == 0
    assert restarted["stored"] == count - summary["stored"]
    assert_stored_exactly_once(db_path, expected_readings(MACHINES, count))


# ---------------------------------------------------------------------------- locked database

# Holds SQLite's write lock (BEGIN IMMEDIATE) until a line arrives on stdin, at most 120 s.
LOCK_HOLDER = """
import select, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
select.select([sys.stdin], [], [], 120)
connection.execute("ROLLBACK")
connection.close()
"""


def hold_write_lock(db_path: Path) -> subprocess.Popen:
    """Start a second process that holds the write lock on `db_path` until `release_lock` is called."""
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def release_lock(holder: subprocess.Popen) -> None:
    holder.stdin.write("release\n")
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0


def busy_attempts(log_path: Path) -> int:
    return output_of(log_path).count("sqlite_busy attempt=")


def test_locked_database_batch_kept(kafka_bootstrap, kafka_settings, topic, tmp_path):
    """The write lock outlasts the 500 ms busy timeout: the consumer retries and commits nothing it has not stored."""
    count = 1500
    env = cli_env(tmp_path, kafka_bootstrap, topic, SQLITE_BUSY_TIMEOUT_MS=500)
    db_path = Path(env["SQLITE_PATH"])
    group = env["CONSUMER_GROUP_ID"]
    log_path = tmp_path / "consumer.out"
    consumer = producer = holder = None
    try:
        consumer = start_consumer(env, log_path)
        producer = start_producer(env, tmp_path / "producer.out", count, rate=300, seed=103)
        wait_for(lambda: stored_count(db_path) >= 300, 60, "300 stored rows")

        holder = hold_write_lock(db_path)
        rows_while_locked = stored_count(db_path)
        wait_for(lambda: busy_attempts(log_path) >= 3, 30, "three sqlite_busy retries in the consumer's log")
        committed_while_locked = committed_offsets(kafka_settings, group)
        assert consumer.poll() is None
        assert stored_count(db_path) == rows_while_locked
        assert sum(committed_while_locked.values()) <= rows_while_locked
        assert_committed_only_stored(db_path, topic, committed_while_locked)

        release_lock(holder)
        assert producer.wait(timeout=60) == 0
        wait_for(lambda: stored_count(db_path) >= count, 60, f"{count} stored rows after the lock is released")
        wait_committed_to_end(kafka_settings, group, kafka_bootstrap, topic)
        status, _ = stop_process(consumer, signal.SIGTERM, 30)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        kill_leftovers(consumer, producer)

    output = output_of(log_path)
    assert status == 0, output[-3000:]
    assert "sqlite_write_ok attempt=" in output
    assert "Traceback" not in output
    assert summary_of(output_of(tmp_path / "producer.out"))["acknowledged"] == count
    assert summary_of(output)["stored"] == count
    assert_stored_exactly_once(db_path, expected_readings(MACHINES, count))


def test_locked_database_sigterm_exit_1(kafka_bootstrap, kafka_settings, topic, tmp_path):
    """Stopped while the batch cannot be written: exit status 1, no offset committed for it, stored on restart."""
    count = 600
    env = cli_env(tmp_path, kafka_bootstrap, topic, SQLITE_BUSY_TIMEOUT_MS=500)
    db_path = Path(env["SQLITE_PATH"])
    group = env["CONSUMER_GROUP_ID"]
    log_path = tmp_path / "consumer-locked.out"
    produced = run_cli(PRODUCER, "--count", "300", "--rate", "max", "--machines", str(MACHINES), "--seed", "104",
                       env=env)
    assert produced.returncode == 0, produced.stderr[-3000:]
    consumer = holder = None
    try:
        consumer = start_consumer(env, log_path)
        wait_for(lambda: stored_count(db_path) >= 300, 60, "300 stored rows")
        wait_committed_to_end(kafka_settings, group, kafka_bootstrap, topic)

        holder = hold_write_lock(db_path)
        more = run_cli(PRODUCER, "--count", "300", "--rate", "max", "--machines", "3", "--seed", "105", env=env)
        assert more.returncode == 0, more.stderr[-3000:]
        wait_for(lambda: busy_attempts(log_path) >= 2, 30, "two sqlite_busy retries in the consumer's log")
        status, stop_s = stop_process(consumer, signal.SIGTERM, 40)
        committed = committed_offsets(kafka_settings, group)
        release_lock(holder)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        kill_leftovers(consumer)

    output = output_of(log_path)
    assert status == 1, output[-3000:]
    assert stop_s < 20.0
    assert "could not store the last" in output
    assert "Traceback" not in output
    assert sum(committed.values()) == 300
    assert_committed_only_stored(db_path, topic, committed)

    restarted = drain(env, tmp_path / "consumer-restarted.out", db_path, count, kafka_settings, kafka_bootstrap)

    assert restarted["stored"] == 300
    assert restarted["duplicates_skipped"] == 0
    rows = query(db_path, "SELECT COUNT(*), COUNT(DISTINCT partition || '/' || offset) FROM readings")[0]
    assert rows == (count, count)


# ---------------------------------------------------------------------------- database not writable

def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True, timeout=10)


def immutable_target(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """Prepare the database path of `case`; return (SQLITE_PATH, the path to mark immutable)."""
    folder = tmp_path / "db"
    folder.mkdir()
    db_path = folder / "sensors.sqlite"
    if case != "folder-empty":
        SensorDatabase(db_path).open().close()
    return db_path, (db_path if case == "file" else folder)


@pytest.mark.parametrize("case", ["file", "folder-empty", "folder-with-file"])
def test_unwritable_database_exit_2(kafka_bootstrap, kafka_settings, topic, tmp_path, case):
    """The file or folder is immutable (chattr +i), which stops root too: exit 2 at start, nothing committed."""
    produced = run_cli(PRODUCER, "--count", "20", "--rate", "max", "--seed", "106",
                       env=cli_env(tmp_path, kafka_bootstrap, topic))
    assert produced.returncode == 0, produced.stderr[-3000:]
    db_path, target = immutable_target(tmp_path, case)
    env = cli_env(tmp_path, kafka_bootstrap, topic, SQLITE_PATH=db_path)
    try:
        chattr("+i", target)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"this filesystem or container does not allow chattr +i: {error}")
    try:
        started = time.monotonic()
        result = run_cli(CONSUMER, "--no-chart", "--idle-timeout-s", "5", env=env, timeout_s=60)
        elapsed_s = time.monotonic() - started
    finally:
        chattr("-i", target)

    assert result.returncode == 2, result.stderr[-3000:]
    assert elapsed_s < 15
    assert f"SQLite database {db_path}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "summary" not in result.stdout
    assert committed_offsets(kafka_settings, env["CONSUMER_GROUP_ID"]) == {}
    if case != "folder-empty":
        assert query(db_path, "SELECT COUNT(*) FROM readings") == [(0,)]
