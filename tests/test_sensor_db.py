"""Tests of the SQLite storage against real database files: schema, exactly-once rows, lock retries, unwritable files."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest
from loguru import logger

from consumers.sensor_db import Batch, DatabaseBusy, DatabaseUnavailable, SensorDatabase

RECEIVED_AT = "2026-12-04T08:00:00.500Z"


def reading_row(offset: int, machine_id: str = "M-001", partition: int = 0, topic: str = "sensors") -> tuple:
    return (machine_id, "2026-12-04T08:00:00.000Z", 71.5, 301.2, 2.4, offset + 1, topic, partition, offset,
            RECEIVED_AT, "normal")


def alert_row(offset: int, metric: str = "temperature", kind: str = "limit") -> tuple:
    return ("M-001", metric, 95.0, 90.0, None, kind, "2026-12-04T08:00:00.000Z", "sensors", 0, offset, RECEIVED_AT)


def reject_row(offset: int, raw: bytes | None = b"garbage") -> tuple:
    return ("sensors", 1, offset, raw, "invalid JSON", RECEIVED_AT)


@pytest.fixture
def database(tmp_path):
    db = SensorDatabase(tmp_path / "data" / "sensors.sqlite", busy_timeout_ms=100).open()
    yield db
    db.close()


@pytest.fixture
def log_lines():
    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(handler)


def count(db: SensorDatabase, table: str) -> int:
    return db.connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_open_creates_schema_wal(database):
    tables = {row[0] for row in database.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    indexes = {row[0] for row in database.connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    assert {"readings", "alerts", "rejects"} <= tables
    assert {"readings_machine_time", "alerts_machine_time"} <= indexes
    assert database.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert database.connection.execute("PRAGMA busy_timeout").fetchone()[0] == 100


def test_write_batch_counts(database):
    batch = Batch(readings=[reading_row(i) for i in range(5)], alerts=[alert_row(2)], rejects=[reject_row(9)])

    result = database.write(batch)

    assert result.readings_stored == 5
    assert result.readings_skipped == 0
    assert result.alerts_stored == 1
    assert result.rejects_stored == 1
    assert count(database, "readings") == 5


def test_redelivery_is_noop(database):
    first = Batch(readings=[reading_row(i) for i in range(5)], alerts=[alert_row(2)], rejects=[reject_row(9)])
    database.write(first)
    again = Batch(readings=[reading_row(i) for i in range(3, 8)], alerts=[alert_row(2)], rejects=[reject_row(9)])

    result = database.write(again)

    assert result.readings_stored == 3
    assert result.readings_skipped == 2
    assert result.alerts_stored == 0
    assert result.rejects_stored == 0
    assert result.rejects_skipped == 1
    assert count(database, "readings") == 8
    assert count(database, "alerts") == 1
    assert count(database, "rejects") == 1


def test_same_offset_other_partition_stored(database):
    database.write(Batch(readings=[reading_row(0, partition=0), reading_row(0, partition=1),
                                   reading_row(0, topic="other")]))

    assert count(database, "readings") == 3


def test_reopen_keeps_rows(tmp_path):
    path = tmp_path / "sensors.sqlite"
    first = SensorDatabase(path).open()
    first.write(Batch(readings=[reading_row(0)]))
    first.close()

    second = SensorDatabase(path).open()
    result = second.write(Batch(readings=[reading_row(0)]))

    assert result.readings_skipped == 1
    assert count(second, "readings") == 1
    second.close()


def test_sql_text_stored_literally(database):
    machine_id = "M-001'); DROP TABLE readings;--"
    database.write(Batch(readings=[reading_row(0, machine_id=machine_id)], rejects=[reject_row(1, b"'; DELETE --")]))

    assert database.connection.execute("SELECT machine_id FROM readings").fetchone()[0] == machine_id
    assert database.connection.execute("SELECT raw FROM rejects").fetchone()[0] == b"'; DELETE --"


def test_null_raw_value_stored(database):
    database.write(Batch(rejects=[reject_row(3, None)]))

    assert database.connection.execute("SELECT raw, reason FROM rejects").fetchone() == (None, "invalid JSON")


def hold_write_lock(path) -> sqlite3.Connection:
    """Open a second, independent connection and take the write lock with BEGIN IMMEDIATE."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO consumer_runs (started_at) VALUES ('lock holder')")
    return holder


def test_locked_write_raises_busy(database):
    holder = hold_write_lock(database.path)
    try:
        with pytest.raises(DatabaseBusy):
            database.write(Batch(readings=[reading_row(0)]))
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert count(database, "readings") == 0
    assert not database.connection.in_transaction


def test_locked_write_retried_until_free(database, log_lines):
    holder = hold_write_lock(database.path)
    release = threading.Timer(1.5, lambda: (holder.execute("COMMIT"), holder.close()))
    release.start()
    batch = Batch(readings=[reading_row(i) for i in range(10)], rejects=[reject_row(20)])

    started = time.monotonic()
    result = database.write_with_retry(batch)
    elapsed_s = time.monotonic() - started
    release.join()

    assert result is not None
    assert result.readings_stored == 10
    assert result.rejects_stored == 1
    assert elapsed_s >= 1.4
    assert count(database, "readings") == 10
    assert any("sqlite_busy" in line for line in log_lines)
    assert any("sqlite_write_ok" in line for line in log_lines)


def test_locked_write_give_up_keeps_nothing(database):
    holder = hold_write_lock(database.path)
    try:
        result = database.write_with_retry(Batch(readings=[reading_row(0)]), give_up=lambda: True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert result is None
    assert count(database, "readings") == 0
    assert database.write(Batch(readings=[reading_row(0)])).readings_stored == 1


def test_open_folder_is_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")

    with pytest.raises(DatabaseUnavailable) as caught:
        SensorDatabase(blocker / "sensors.sqlite").open()

    assert str(blocker) in str(caught.value)
    assert "SQLITE_PATH" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files and folders anyway")
def test_open_read_only_file(tmp_path):
    path = tmp_path / "sensors.sqlite"
    SensorDatabase(path).open().close()
    path.chmod(stat.S_IRUSR)

    with pytest.raises(DatabaseUnavailable) as caught:
        SensorDatabase(path).open()

    assert "cannot write" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files and folders anyway")
def test_open_read_only_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(DatabaseUnavailable):
            SensorDatabase(folder / "sensors.sqlite").open()
    finally:
        folder.chmod(stat.S_IRWXU)


def test_open_query_only_rejected(tmp_path, monkeypatch):
    """A file SQLite opens read-only (here through a read-only URI) fails the write probe at open()."""
    path = tmp_path / "sensors.sqlite"
    SensorDatabase(path).open().close()
    real_connect = sqlite3.connect

    def connect_read_only(target, *args, **kwargs):
        return real_connect(f"file:{target}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect_read_only)

    with pytest.raises(DatabaseUnavailable) as caught:
        SensorDatabase(path).open()

    assert "readonly" in str(caught.value)


def test_open_waits_for_lock(tmp_path, log_lines):
    path = tmp_path / "sensors.sqlite"
    SensorDatabase(path).open().close()
    holder = hold_write_lock(path)
    release = threading.Timer(1.5, lambda: (holder.execute("COMMIT"), holder.close()))
    release.start()

    database = SensorDatabase(path, busy_timeout_ms=100).open()
    release.join()

    assert count(database, "consumer_runs") == 3
    assert any("sqlite_busy at open" in line for line in log_lines)
    database.close()


def test_open_lock_wait_limited(tmp_path):
    path = tmp_path / "sensors.sqlite"
    SensorDatabase(path).open().close()
    holder = hold_write_lock(path)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            SensorDatabase(path, busy_timeout_ms=100).open(open_lock_wait_s=0.5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert "locked" in str(caught.value)
