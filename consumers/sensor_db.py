"""SQLite storage of readings, alerts and rejected records, written in batches.

Each batch is one transaction. The consumer commits offsets to Kafka only after that
transaction, so after a crash Kafka may deliver records again. A UNIQUE key on (topic,
partition, offset) makes each such record a no-op (`INSERT OR IGNORE`), so the file
contains every record at most once. Units: temperature in °C, pressure in kPa, vibration
in mm/s RMS. Every timestamp is UTC text such as `2026-12-04T08:00:00.123Z`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from loguru import logger

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    machine_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    temperature REAL NOT NULL,
    pressure REAL NOT NULL,
    vibration REAL NOT NULL,
    seq INTEGER,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    ground_truth TEXT,  -- the producer's `fault` header, kept for scoring; detection never reads it
    UNIQUE (topic, partition, offset)
);
CREATE INDEX IF NOT EXISTS readings_machine_time ON readings (machine_id, timestamp);
CREATE INDEX IF NOT EXISTS readings_time ON readings (timestamp);

CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    machine_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    zscore REAL,
    kind TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (topic, partition, offset, metric, kind)
);
CREATE INDEX IF NOT EXISTS alerts_machine_time ON alerts (machine_id, timestamp);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (timestamp);

CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    raw BLOB,
    reason TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (topic, partition, offset)
);

CREATE TABLE IF NOT EXISTS consumer_runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL
);
"""

INSERT_READING = (
    "INSERT OR IGNORE INTO readings (machine_id, timestamp, temperature, pressure, vibration, seq, "
    "topic, partition, offset, received_at, ground_truth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
ALERT_COLUMNS = ("machine_id", "metric", "value", "threshold", "zscore", "kind", "timestamp", "topic", "partition",
                 "offset", "created_at")  # The order of a row in `Batch.alerts`.
INSERT_ALERT = (
    f"INSERT OR IGNORE INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES ({', '.join('?' * len(ALERT_COLUMNS))})")
INSERT_REJECT = (
    "INSERT OR IGNORE INTO rejects (topic, partition, offset, raw, reason, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?)")

RETRY_FIRST_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 5.0
OPEN_LOCK_WAIT_S = 60.0


class DatabaseUnavailable(RuntimeError):
    """The database file cannot be opened or written; the message names the file and the cause."""


class DatabaseBusy(RuntimeError):
    """A batch was not written because another connection held the lock past the busy timeout."""


def utc_now_text() -> str:
    """Return the current UTC time as millisecond text ending in `Z`."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def is_lock_error(error: sqlite3.OperationalError) -> bool:
    """Tell whether an error is SQLite's "database is locked" (SQLITE_BUSY) or "table is locked" (SQLITE_LOCKED)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(error)


@dataclass
class Batch:
    """Rows for one transaction, as parameter tuples in the column order of the INSERT statements."""

    readings: list[tuple] = field(default_factory=list)
    alerts: list[tuple] = field(default_factory=list)
    rejects: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.readings) + len(self.rejects)


@dataclass
class WriteResult:
    """Rows inserted by one batch, and rows skipped because the same (topic, partition, offset) was stored before."""

    readings_stored: int = 0
    readings_skipped: int = 0
    alerts_stored: int = 0
    rejects_stored: int = 0
    rejects_skipped: int = 0


class SensorDatabase:
    """One SQLite connection in WAL mode, with the schema created if missing."""

    def __init__(self, path: Path | str, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._connection: sqlite3.Connection | None = None

    def open(self, open_lock_wait_s: float = OPEN_LOCK_WAIT_S) -> "SensorDatabase":
        """Open the file, create the schema, and prove it is writable; raise `DatabaseUnavailable` if not.

        While another connection holds the write lock, the attempt is retried with backoff
        for up to `open_lock_wait_s`.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnavailable(f"cannot create the folder {self.path.parent} for the SQLite database: "
                                      f"{error.strerror}; set SQLITE_PATH or --db to a writable place") from None
        try:
            # isolation_level=None: this class issues BEGIN and COMMIT itself. check_same_thread=False:
            # the consumer's rebalance listener writes from kafka-python's IO thread, while the
            # main thread waits inside poll(), so the two never use the connection at once.
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as error:
            raise DatabaseUnavailable(f"cannot open the SQLite database {self.path}: {error}; "
                                      "set SQLITE_PATH or --db to a writable file") from None
        self._connection = connection

        deadline = time.monotonic() + open_lock_wait_s
        delay_s = RETRY_FIRST_DELAY_S
        while True:
            try:
                self._prepare(connection)
                return self
            except sqlite3.OperationalError as error:
                if not is_lock_error(error) or time.monotonic() + delay_s > deadline:
                    self.close()
                    raise DatabaseUnavailable(self._write_failure(error)) from None
                logger.warning("sqlite_busy at open path={} retry_in_s={:.1f} error=\"{}\"", self.path, delay_s, error)
            except sqlite3.Error as error:
                self.close()
                raise DatabaseUnavailable(self._write_failure(error)) from None
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)

    def _prepare(self, connection: sqlite3.Connection) -> None:
        connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed batch survives power loss too, and offsets are committed to
        # Kafka only after it, so a lost batch could never be fetched again.
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(SCHEMA)
        # CREATE TABLE IF NOT EXISTS does not write when the tables exist, so this
        # insert is what proves the file and its folder (for the -wal file) are writable.
        connection.execute("INSERT INTO consumer_runs (started_at) VALUES (?)", (utc_now_text(),))

    def _write_failure(self, error: sqlite3.Error) -> str:
        if isinstance(error, sqlite3.OperationalError) and is_lock_error(error):
            return (f"cannot write the SQLite database {self.path}: another connection kept it locked "
                    f"({error}); stop the process that holds the lock, or set SQLITE_PATH or --db")
        return (f"cannot write the SQLite database {self.path}: {error}; check that the file and its folder "
                "are writable, or set SQLITE_PATH or --db")

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError(f"SQLite database {self.path} is not open; call open() first")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def write(self, batch: Batch) -> WriteResult:
        """Write a batch in one transaction; raise `DatabaseBusy` when the lock wait times out.

        Any other `sqlite3.Error` is raised as it is. Either way the transaction is rolled
        back, so the caller can retry the same batch.
        """
        connection = self.connection
        result = WriteResult()
        try:
            connection.execute("BEGIN IMMEDIATE")
            result.readings_stored = self._insert(INSERT_READING, batch.readings)
            result.alerts_stored = self._insert(INSERT_ALERT, batch.alerts)
            result.rejects_stored = self._insert(INSERT_REJECT, batch.rejects)
            connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            self._rollback()
            if is_lock_error(error):
                raise DatabaseBusy(f"SQLite database {self.path} is locked: {error}") from error
            raise
        except sqlite3.Error:
            self._rollback()
            raise
        result.readings_skipped = len(batch.readings) - result.readings_stored
        result.rejects_skipped = len(batch.rejects) - result.rejects_stored
        return result

    def write_with_retry(self, batch: Batch, give_up: Callable[[], bool] = lambda: False) -> WriteResult | None:
        """Write a batch, retrying with exponential backoff while the database is locked.

        Returns None only when `give_up()` turns true between attempts; the batch is then
        not stored and the caller must not commit its offsets.
        """
        delay_s = RETRY_FIRST_DELAY_S
        attempt = 1
        while True:
            try:
                result = self.write(batch)
            except DatabaseBusy as error:
                logger.warning("sqlite_busy attempt={} records={} retry_in_s={:.1f} error=\"{}\"",
                               attempt, len(batch), delay_s, error.__cause__)
            else:
                if attempt > 1:
                    logger.info("sqlite_write_ok attempt={} records={}", attempt, len(batch))
                return result
            if give_up():
                return None
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)
            attempt += 1

    def _insert(self, statement: str, rows: list[tuple]) -> int:
        if not rows:
            return 0
        before = self.connection.total_changes
        self.connection.executemany(statement, rows)
        return self.connection.total_changes - before

    def _rollback(self) -> None:
        if self.connection.in_transaction:
            try:
                self.connection.execute("ROLLBACK")
            except sqlite3.Error as error:
                logger.warning("sqlite_rollback_failed error=\"{}\"", error)
