"""Stream simulated machine readings to Kafka: `python -m producers.sensor_producer --help`.

Delivery: the producer uses acks="all" with idempotence and retries (see
`utils.utils_producer`), so a reading counts as acknowledged only once every in-sync
replica has it. A reading fails when the client gives up on it (`delivery_timeout_ms`,
120 s) or when `send()` waits more than `MAX_BLOCK_MS` for buffer space or metadata. At
the end the producer waits up to `FLUSH_TIMEOUT_S` for the outstanding readings, closes,
and counts every reading still without an outcome as failed. Exit status: 0 when every
reading was acknowledged, 1 when any failed, 2 for an invalid option or setting, or a
broker that is unreachable at start.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

from kafka.errors import KafkaError
from loguru import logger

from producers.delivery import DeliveryCounts, DeliveryTracker, ProgressLog
from producers.message import FAULT_HEADER, LABELS, encode_value
from producers.pacing import make_schedule
from producers.producer_options import RunOptions, build_options, build_settings, describe_pace, parse_args
from producers.simulation import Plant
from utils.utils_config import ConfigError, Settings
from utils.utils_kafka import BrokerUnavailable, ensure_topic
from utils.utils_logger import setup_logging
from utils.utils_producer import close_producer, create_producer

BROKER_TIMEOUT_S = 10.0  # for the broker check at start, so a broker that is down is reported within 15 s
MAX_BLOCK_MS = 10_000  # maximum time a send() blocks waiting for buffer space or metadata
FLUSH_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
MAX_WAIT_S = 0.1  # maximum sleep between checks of the stop flag


class StartupError(RuntimeError):
    """The broker is reachable but the topic could not be checked or created. The message is one line."""


def send_readings(producer, topic: str, options: RunOptions, tracker: DeliveryTracker,
                  stop: threading.Event, log_each_reading: bool = False) -> str:
    """Send readings until the count or duration is reached or `stop` is set, and return the reason it stopped."""
    plant = Plant(options.machines, options.seed, options.fault_rate)
    headers_by_label = {label: [(FAULT_HEADER, label.encode())] for label in LABELS}
    keys = {machine.machine_id: machine.machine_id.encode() for machine in plant.machines}
    count = options.count if options.count is not None else math.inf

    start = time.monotonic()
    deadline = start + options.duration_s if options.duration_s is not None else math.inf
    schedule = make_schedule(options, start)
    paced = schedule.period_s is not None
    progress = ProgressLog(tracker, start)
    behind_logged = False
    index = 0

    while True:
        if stop.is_set():
            return "signal"
        if index >= count:
            return "count"
        now = time.monotonic()
        if now >= deadline:
            return "duration"
        if now >= progress.next_time:
            progress.log(now)
            if schedule.restarts:
                level = "WARNING" if not behind_logged else "DEBUG"
                logger.log(level, "sending is slower than {}, so the schedule restarted {} times and readings go "
                           "out as fast as the client accepts them", describe_pace(options), schedule.restarts)
                behind_logged = True
                schedule.restarts = 0

        if paced:
            wait_s = schedule.seconds_until_due(index, now)
            if wait_s > 0:
                stop.wait(min(wait_s, MAX_WAIT_S, max(deadline - now, 0.0)))
                continue

        reading = plant.next_reading(time.time_ns() // 1_000_000)
        message = reading.message
        machine_id = message["machine_id"]
        tracker.count_send()
        try:
            future = producer.send(topic, key=keys[machine_id], value=encode_value(message),
                                   headers=headers_by_label[reading.label])
        except KafkaError as error:
            # Raised before the record is queued: no buffer space or no metadata within MAX_BLOCK_MS.
            tracker.on_failed(machine_id, message["seq"], error)
        else:
            future.add_callback(tracker.on_acknowledged)
            future.add_errback(tracker.on_failed, machine_id, message["seq"])
        if log_each_reading:
            logger.debug("sent machine_id={} seq={} fault={}", machine_id, message["seq"], reading.label)
        index += 1


def finish_delivery(producer, tracker: DeliveryTracker, abandon: threading.Event) -> DeliveryCounts:
    """Wait up to FLUSH_TIMEOUT_S for outstanding readings, close the producer, and return the final counts.

    Setting `abandon` (a second Ctrl+C) ends the wait early.
    """
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    pending = tracker.counts().pending
    if pending:
        logger.info("flushing pending={} timeout_s={} (press Ctrl+C again to stop waiting)", pending,
                    FLUSH_TIMEOUT_S)
    # Polling the tracker bounds the total wait, because flush(timeout) applies its timeout to each
    # batch in turn. In a broker outage kafka-python 3.0.12 expired only some batches after
    # delivery_timeout_ms, so this wait, not the client, ends such a run.
    while tracker.counts().pending and time.monotonic() < deadline and not abandon.is_set():
        abandon.wait(0.05)

    close_producer(producer, CLOSE_TIMEOUT_S if not tracker.counts().pending else 0.0)

    unconfirmed = tracker.count_unconfirmed()
    if unconfirmed:
        logger.error("{} readings had no delivery outcome when the producer closed and are counted as failed "
                     "(some may still have reached the broker)", unconfirmed)
    return tracker.counts()


def run(settings: Settings, options: RunOptions, stop: threading.Event,
        abandon: threading.Event | None = None) -> DeliveryCounts:
    """Create the topic if missing, send readings until done or stopped, then flush and close.

    Raises `BrokerUnavailable` when no broker is reachable at start, and `StartupError` when
    the topic cannot be checked or created.
    """
    try:
        ensure_topic(settings, timeout_s=BROKER_TIMEOUT_S)
    except KafkaError as error:
        raise StartupError(f"failed to check or create topic={settings.topic} at {settings.bootstrap_servers}: "
                           f"{error!r}") from None
    producer = create_producer(settings, bootstrap_timeout_s=BROKER_TIMEOUT_S, max_block_ms=MAX_BLOCK_MS)
    tracker = DeliveryTracker()
    logger.info("started topic={} machines={} {} bootstrap_servers={} seed={} fault_rate={} count={} duration_s={}",
                settings.topic, options.machines, describe_pace(options), settings.bootstrap_servers, options.seed,
                options.fault_rate, options.count, options.duration_s)

    started = time.monotonic()
    reason = "error"
    try:
        reason = send_readings(producer, settings.topic, options, tracker, stop,
                               log_each_reading=settings.log_level in ("TRACE", "DEBUG"))
    finally:
        sending_s = time.monotonic() - started
        counts = finish_delivery(producer, tracker, abandon or threading.Event())
        rate = counts.sent / sending_s if sending_s > 0 else 0.0
        logger.info("stopped reason={} sending_s={:.1f} rate_per_s={:.0f} total_s={:.1f}", reason, sending_s, rate,
                    time.monotonic() - started)
    return counts


def install_stop_handlers(stop: threading.Event, abandon: threading.Event) -> None:
    """Make SIGINT (Ctrl+C) and SIGTERM set `stop`, and a second one set `abandon`, so the run ends with a flush."""
    def handle(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            logger.info("stopping on {}: no new readings, flushing the ones in flight", name)
            stop.set()
        elif not abandon.is_set():
            logger.warning("second {}: no more waiting for acknowledgments; pending readings count as failed", name)
            abandon.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = build_settings(args)
        setup_logging("producer", settings.log_level, settings.log_folder(), settings.secrets())
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = build_options(args, settings)

    stop, abandon = threading.Event(), threading.Event()
    install_stop_handlers(stop, abandon)
    try:
        counts = run(settings, options, stop, abandon)
    except (BrokerUnavailable, StartupError) as error:
        logger.error("{}", error)
        return 2

    print(f"summary sent={counts.sent} acknowledged={counts.acknowledged} failed={counts.failed}", flush=True)
    return 0 if counts.acknowledged == counts.sent else 1


if __name__ == "__main__":
    sys.exit(main())
