"""Watch a consumer's SQLite file from the bench process: when rows become visible, and how much memory the consumer uses.

A row is visible to another connection only once its transaction has committed, so the
time a reader first sees a row id is its commit time, late by at most one poll interval.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

POLL_INTERVAL_S = 0.005


@dataclass
class Sample:
    """One observation: wall-clock time (Unix seconds), highest committed reading id, consumer RSS in bytes."""

    time_s: float
    max_id: int
    rss_bytes: int | None = None


@dataclass
class Watch:
    """Samples taken while the watched consumer ran; a sample is kept only when the row count changed."""

    samples: list[Sample] = field(default_factory=list)
    peak_rss_bytes: int = 0
    rss_samples: list[Sample] = field(default_factory=list)

    def rows(self) -> int:
        return self.samples[-1].max_id if self.samples else 0

    def rate_per_s(self) -> float:
        """Return rows per second from the first commit seen to the last, which leaves out start-up and shutdown."""
        if len(self.samples) < 2:
            raise ValueError("fewer than two commits were seen; the run was too short to measure")
        first, last = self.samples[0], self.samples[-1]
        return (last.max_id - first.max_id) / (last.time_s - first.time_s)

    def commit_times(self) -> dict[int, float]:
        """Map each reading id to the time its commit was first seen."""
        times: dict[int, float] = {}
        previous = 0
        for sample in self.samples:
            for row_id in range(previous + 1, sample.max_id + 1):
                times[row_id] = sample.time_s
            previous = sample.max_id
        return times

    def peak_rss_until(self, rows: int) -> int:
        """Return the highest RSS sampled before the row count reached `rows`, that sample included."""
        peak = 0
        for sample in self.rss_samples:
            peak = max(peak, sample.rss_bytes or 0)
            if sample.max_id >= rows:
                break
        return peak


class SqliteWatcher:
    """A thread that polls `SELECT max(id) FROM readings` and, when given a pid, the RSS of that process."""

    def __init__(self, path: Path, pid: int | None = None, interval_s: float = POLL_INTERVAL_S,
                 rss_interval_s: float = 0.1):
        self.path = path
        self.pid = pid
        self.interval_s = interval_s
        self.rss_interval_s = rss_interval_s
        self.watch = Watch()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-watch", daemon=True)

    def __enter__(self) -> "SqliteWatcher":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for_rows(self, rows: int, timeout_s: float, alive=lambda: True) -> bool:
        """Wait until `rows` readings are committed; False on timeout or when `alive()` turns false."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive():
            if self.watch.rows() >= rows:
                return True
            time.sleep(0.05)
        return self.watch.rows() >= rows

    def _run(self) -> None:
        connection = self._connect()
        process = psutil.Process(self.pid) if self.pid else None
        next_rss_s = 0.0
        try:
            while not self._stop.is_set():
                if connection is None:
                    connection = self._connect()
                max_id = self._max_id(connection) if connection is not None else 0
                now = time.time()
                watch = self.watch
                if max_id != watch.rows():
                    watch.samples.append(Sample(now, max_id))
                if process is not None and now >= next_rss_s:
                    self._sample_rss(process, now, max_id)
                    next_rss_s = now + self.rss_interval_s
                self._stop.wait(self.interval_s)
        finally:
            if connection is not None:
                connection.close()

    def _sample_rss(self, process: psutil.Process, now: float, max_id: int) -> None:
        try:
            rss = process.memory_info().rss
        except psutil.Error:
            return  # The consumer has exited.
        self.watch.rss_samples.append(Sample(now, max_id, rss))
        self.watch.peak_rss_bytes = max(self.watch.peak_rss_bytes, rss)

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        # Read-only, so the watcher can never take the write lock the consumer needs.
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0, check_same_thread=False)

    @staticmethod
    def _max_id(connection: sqlite3.Connection) -> int:
        try:
            row = connection.execute("SELECT max(id) FROM readings").fetchone()
        except sqlite3.OperationalError:
            return 0  # The consumer has not created the schema yet, or holds a lock for a moment.
        return row[0] or 0
