"""Delivery accounting for the sensor producer: every send ends acknowledged or failed, is counted, and shows in progress lines."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from loguru import logger

from utils.utils_producer import DELIVERY_TIMEOUT_MS

# The first failures are logged at ERROR, which reaches the console. Later ones are logged
# at DEBUG, which only the log file records, so a broker outage does not flood the terminal.
FAILURES_LOGGED_AT_ERROR = 20
PROGRESS_INTERVAL_S = 5.0
STALL_WARNING_INTERVAL_S = 30.0


@dataclass(frozen=True)
class DeliveryCounts:
    """Readings handed to the client, acknowledged by the broker, and failed."""

    sent: int
    acknowledged: int
    failed: int

    @property
    def pending(self) -> int:
        return self.sent - self.acknowledged - self.failed


class DeliveryTracker:
    """Counter of sends and their outcomes. The callbacks run on the client's sender thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = 0  # written only by the sending thread, so it needs no lock
        self._acknowledged = 0
        self._failed = 0
        self._closed = False

    def count_send(self) -> None:
        """Count a reading about to be handed to the client. Call it before `send()`, so pending never goes negative."""
        self._sent += 1

    def on_acknowledged(self, _metadata: object) -> None:
        with self._lock:
            if not self._closed:
                self._acknowledged += 1

    def on_failed(self, machine_id: str, seq: int, error: BaseException) -> None:
        """Count and log a reading the client gave up on, or one that `send()` rejected at once."""
        with self._lock:
            if self._closed:
                return
            self._failed += 1
            failed = self._failed
        level = "ERROR" if failed <= FAILURES_LOGGED_AT_ERROR else "DEBUG"
        logger.log(level, "delivery failed machine_id={} seq={} error={!r}", machine_id, seq, error)
        if failed == FAILURES_LOGGED_AT_ERROR:
            logger.error("{} deliveries failed; further failures are logged at DEBUG in the log file and "
                         "counted in the progress lines", failed)

    def count_unconfirmed(self) -> int:
        """Count every reading still pending as failed and ignore outcomes that arrive later.

        Returns how many were pending. Call it once, after the producer is closed or has
        failed to close, so the final counts cannot change any more.
        """
        with self._lock:
            pending = self._sent - self._acknowledged - self._failed
            self._failed += pending
            self._closed = True
        return pending

    def counts(self) -> DeliveryCounts:
        with self._lock:
            return DeliveryCounts(self._sent, self._acknowledged, self._failed)


class ProgressLog:
    """Periodic progress lines with the send rate and totals, and a rate-limited warning on stalls."""

    def __init__(self, tracker: DeliveryTracker, now: float) -> None:
        self.tracker = tracker
        self.last_counts = tracker.counts()
        self.last_time = now
        self.next_time = now + PROGRESS_INTERVAL_S
        self.next_stall_warning = now

    def log(self, now: float) -> None:
        """Log the send rate since the last line and the totals, and warn when delivery outcomes stopped."""
        counts = self.tracker.counts()
        last = self.last_counts
        rate = (counts.sent - last.sent) / (now - self.last_time) if now > self.last_time else 0.0
        logger.info("progress rate_per_s={:.0f} sent={} acknowledged={} failed={} pending={}", rate, counts.sent,
                    counts.acknowledged, counts.failed, counts.pending)

        stalled = counts.pending and counts.acknowledged == last.acknowledged and counts.failed == last.failed
        if stalled and now >= self.next_stall_warning:
            logger.warning("no delivery outcome in the last {:.0f} s with pending={}: the broker may be down, and "
                           "the client retries each reading for up to {} s", now - self.last_time, counts.pending,
                           DELIVERY_TIMEOUT_MS // 1000)
            self.next_stall_warning = now + STALL_WARNING_INTERVAL_S
        elif not stalled:
            self.next_stall_warning = now

        self.last_counts, self.last_time = counts, now
        self.next_time = now + PROGRESS_INTERVAL_S
