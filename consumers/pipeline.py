"""From polled Kafka records to SQLite rows and committed offsets.

Delivery: at-least-once from Kafka, at most once per (topic, partition, offset) in SQLite.
Records are validated, analysed and collected into a batch. A batch is written in one
SQLite transaction (readings, rejects and alerts together), and only after that
transaction has committed are the offsets (last offset + 1 per partition) committed to
Kafka. A crash between the two makes Kafka deliver those records again, and the UNIQUE
key turns them into skipped duplicates.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from loguru import logger

from consumers.insights import Alert, Insights
from consumers.sensor_db import ALERT_COLUMNS, Batch, SensorDatabase, utc_now_text
from consumers.validation import Reading, Rejection, show, validate_value
from utils.utils_config import Settings

COMMIT_TIMEOUT_MS = 5000
FAULT_HEADER = "fault"
MAX_GROUND_TRUTH_CHARS = 64


class LogLimiter:
    """Allow at most `limit` log lines per `period_s` for one kind of message, and count the rest."""

    def __init__(self, message_kind: str, limit: int = 10, period_s: float = 10.0):
        self.message_kind = message_kind
        self.limit = limit
        self.period_s = period_s
        self._period_start = time.monotonic()
        self._logged = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._period_start >= self.period_s:
            if self.suppressed:
                logger.warning("suppressed {} {} log lines in the last {:.0f} s", self.suppressed, self.message_kind,
                               now - self._period_start)
            self._period_start = now
            self._logged = 0
            self.suppressed = 0
        if self._logged < self.limit:
            self._logged += 1
            return True
        self.suppressed += 1
        return False


@dataclass
class Totals:
    """Counters of one run, printed in progress lines and the summary."""

    consumed: int = 0
    stored: int = 0
    duplicates_skipped: int = 0
    rejected: int = 0
    rejects_stored: int = 0
    alerts: int = 0
    commits: int = 0
    commit_failures: int = 0
    reject_reasons: Counter = field(default_factory=Counter)


def ground_truth(record: ConsumerRecord) -> str | None:
    """Return the producer's `fault` header as text (for scoring only), or None when absent."""
    for key, value in record.headers or ():
        if key == FAULT_HEADER and value is not None:
            return value.decode("utf-8", errors="replace")[:MAX_GROUND_TRUTH_CHARS]
    return None


class SensorPipeline:
    """Validate, analyse, batch and store records, then commit their offsets.

    Not thread-safe. The rebalance listener calls it from kafka-python's IO thread, which
    happens only while the main thread is blocked inside `consumer.poll()` or
    `consumer.close()`, so the two never run at the same time.
    """

    def __init__(self, settings: Settings, database: SensorDatabase, insights: Insights,
                 consumer: KafkaConsumer | None = None):
        self.settings = settings
        self.database = database
        self.insights = insights
        self.consumer = consumer
        self.totals = Totals()
        self.batch = Batch()
        self.batch_started_s: float | None = None
        self.pending_offsets: dict[TopicPartition, int] = {}  # In the batch, not yet in SQLite.
        self.stored_offsets: dict[TopicPartition, int] = {}  # In SQLite, not yet committed to Kafka.
        self.positions: dict[TopicPartition, int] = {}  # Next offset to process, for the lag.
        self.reading_listeners: list[Callable[[Reading, list[Alert]], None]] = []
        # Called with each alert as a dict of ALERT_COLUMNS once its row is committed to SQLite.
        self.stored_alert_listeners: list[Callable[[dict], object]] = []
        self.closing = False
        self._reject_log = LogLimiter("rejected-record")

    # ------------------------------------------------------------------ records in

    def process(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Validate and analyse polled records and add them to the batch."""
        # One clock reading per poll: the records of one poll arrived together, and
        # formatting the time per record would cost more than validating it.
        received_at = utc_now_text()
        now_s = time.time()
        for partition, partition_records in records.items():
            for record in partition_records:
                self.process_record(partition, record, received_at, now_s)

    def process_record(self, partition: TopicPartition, record: ConsumerRecord, received_at: str,
                       now_s: float) -> None:
        result = validate_value(record.value, self.settings, now_s)
        self.totals.consumed += 1

        if isinstance(result, Rejection):
            self._reject(record, result, received_at)
        else:
            self._accept(record, result, received_at)

        self.pending_offsets[partition] = record.offset + 1
        self.positions[partition] = record.offset + 1
        if self.batch_started_s is None:
            self.batch_started_s = time.monotonic()

    def _accept(self, record: ConsumerRecord, reading: Reading, received_at: str) -> None:
        alerts = self.insights.update(reading)
        self.batch.readings.append((
            reading.machine_id, reading.timestamp, reading.temperature, reading.pressure, reading.vibration,
            reading.seq, record.topic, record.partition, record.offset, received_at, ground_truth(record)))

        for alert in alerts:
            self.batch.alerts.append((
                alert.machine_id, alert.metric, alert.value, alert.threshold, alert.zscore, alert.kind,
                alert.timestamp, record.topic, record.partition, record.offset, received_at))
            zscore = "" if alert.zscore is None else f" zscore={alert.zscore:.2f}"
            logger.warning("alert kind={} machine_id={} metric={} value={:g} threshold={:g}{} timestamp={} "
                           "partition={} offset={}", alert.kind, alert.machine_id, alert.metric, alert.value,
                           alert.threshold, zscore, alert.timestamp, record.partition, record.offset)
        self.totals.alerts += len(alerts)

        for listener in self.reading_listeners:
            listener(reading, alerts)

    def _reject(self, record: ConsumerRecord, rejection: Rejection, received_at: str) -> None:
        self.batch.rejects.append((record.topic, record.partition, record.offset, record.value,
                                   rejection.reason, received_at))
        self.totals.rejected += 1
        self.totals.reject_reasons[rejection.reason.split(" ", 1)[0]] += 1
        if self._reject_log.allow():
            logger.warning("rejected topic={} partition={} offset={} key={} reason=\"{}\"", record.topic,
                           record.partition, record.offset, show(record.key), rejection.reason)

    # ------------------------------------------------------------------ SQLite, then Kafka

    def flush_due(self) -> bool:
        """Tell whether the batch is full or older than the batch interval."""
        if not len(self.batch):
            return False
        if len(self.batch) >= self.settings.batch_size:
            return True
        return (time.monotonic() - self.batch_started_s) * 1000 >= self.settings.batch_interval_ms

    def flush(self, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Store the batch in SQLite, then commit the offsets of everything stored to Kafka.

        Returns False when `give_up()` stopped the SQLite retries; the batch is then kept,
        and no offset past what SQLite contains is committed.
        """
        if not self.store_batch(give_up):
            return False
        self.commit()
        return True

    def store_batch(self, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Write the batch in one transaction, retrying while the file is locked; False if `give_up()` stopped it."""
        if not len(self.batch):
            return True
        result = self.database.write_with_retry(self.batch, give_up)
        if result is None:
            return False

        self.totals.stored += result.readings_stored
        self.totals.duplicates_skipped += result.readings_skipped + result.rejects_skipped
        self.totals.rejects_stored += result.rejects_stored
        if result.readings_skipped or result.rejects_skipped:
            logger.debug("skipped records already stored readings={} rejects={}", result.readings_skipped,
                        result.rejects_skipped)
        # NOTE: after a crash, a redelivered record raises its alerts again: SQLite skips the
        # duplicate rows, but the listeners (email, alerts topic) are called again for them.
        for row in self.batch.alerts:
            alert = dict(zip(ALERT_COLUMNS, row))
            for listener in self.stored_alert_listeners:
                listener(alert)
        self.stored_offsets.update(self.pending_offsets)
        self.pending_offsets.clear()
        self.batch = Batch()
        self.batch_started_s = None
        return True

    def drop_batch(self) -> None:
        """Forget the unstored batch; its offsets were never committed, so Kafka delivers it again."""
        for partition in self.pending_offsets:
            self.positions.pop(partition, None)
        self.pending_offsets.clear()
        self.batch = Batch()
        self.batch_started_s = None

    def commit(self, timeout_ms: int = COMMIT_TIMEOUT_MS) -> bool:
        """Commit the offsets of stored records; on failure keep them for the next commit."""
        if not self.stored_offsets or self.consumer is None:
            return True
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self.stored_offsets.items()}
        try:
            self.consumer.commit(offsets, timeout_ms=timeout_ms)
        except KafkaError as error:
            # Rows are safe in SQLite; a later commit or a redelivery (skipped as a duplicate) covers them.
            self.totals.commit_failures += 1
            logger.warning("offset commit failed, will retry with the next batch offsets={} error={!r}",
                           offsets_text(offsets), error)
            return False
        self.totals.commits += 1
        logger.debug("committed offsets={}", offsets_text(offsets))
        self.stored_offsets.clear()
        return True

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the offsets and positions of partitions this consumer no longer owns.

        Rows of those partitions still in the batch are stored with it, which is harmless
        because the new owner's copies are skipped as duplicates, but their offsets are not
        committed by this consumer.
        """
        for partition in partitions:
            self.pending_offsets.pop(partition, None)
            self.stored_offsets.pop(partition, None)
            self.positions.pop(partition, None)

    def lag(self) -> int | None:
        """Sum highwater - position over the assigned partitions; None when a partition's highwater is unknown."""
        if self.consumer is None:
            return None
        total = 0
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            position = self.positions.get(partition)
            if position is None:
                try:
                    position = self.consumer.position(partition, timeout_ms=200)
                except KafkaError:
                    position = None
            if highwater is None or position is None:
                return None
            total += max(0, highwater - position)
        return total


def offsets_text(offsets: dict[TopicPartition, OffsetAndMetadata]) -> str:
    """Format offsets as `topic/partition:offset,...` for log lines."""
    return ",".join(f"{tp.topic}/{tp.partition}:{meta.offset}" for tp, meta in sorted(offsets.items()))
