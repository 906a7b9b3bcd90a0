"""Consume machine sensor readings from Kafka into SQLite, with live insights, alerts and a chart.

    python -m consumers.sensor_consumer [--no-chart] [--snapshot PATH] [--max-messages N] ...

Exit status:
- 0 after a clean stop: Ctrl+C, SIGTERM, the window closed, or a stop condition.
- 1 when the last batch could not be stored before the shutdown time limit. Its offsets
  are not committed, so Kafka delivers it again on the next start.
- 2 for invalid settings, a database that cannot be written, or no broker at start.
- 130 when Ctrl+C interrupts the start-up or a second Ctrl+C interrupts the shutdown.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

from kafka.errors import KafkaError
from loguru import logger

from consumers.alert_delivery import AlertDispatcher, NullDispatcher
from consumers.alert_delivery_settings import DeliverySettings
from consumers.chart_runner import (SNAPSHOT_INTERVAL_S, SnapshotWriter, create_headless_chart, run_window,
                                    window_unavailable_reason)
from consumers.insights import DetectionConfig, Insights
from consumers.pipeline import SensorPipeline
from consumers.rebalance import CommitOnRevoke
from consumers.sensor_chart import SensorChart
from consumers.sensor_db import DatabaseUnavailable, SensorDatabase
from utils.utils_config import ConfigError, Settings, load_settings, project_path
from utils.utils_consumer import create_consumer
from utils.utils_kafka import BrokerUnavailable, check_broker, ensure_topic
from utils.utils_logger import setup_logging

BROKER_CHECK_TIMEOUT_S = 8.0  # With start-up, the exit comes within about 10 s.
HEADLESS_POLL_TIMEOUT_MS = 200
WINDOW_POLL_TIMEOUT_MS = 20
PROGRESS_INTERVAL_S = 5.0
SHUTDOWN_BUDGET_S = 10.0
CLOSE_TIMEOUT_MS = 3000
ALERT_DELIVERY_CLOSE_TIMEOUT_S = 5.0
# kafka-python's default is 5 min. A metadata refresh every 10 s bounds how long a missed
# partition change goes unnoticed.
METADATA_MAX_AGE_MS = 10_000
# NOTE: with kafka-python 3.0.12, a consumer that joined a group on a just-created topic, or
# rejoined after a revoke, was seen to stay without partitions for over 60 s. The cause in the
# client is not confirmed. After this long with none, the consumer subscribes again, which
# forces a rebalance. A group with more consumers than partitions sees one every 30 s.
UNASSIGNED_RESUBSCRIBE_S = 30.0
DEFAULT_SNAPSHOT_NAME = "sensor_chart.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m consumers.sensor_consumer", description=__doc__.split("\n")[0])
    parser.add_argument("--topic", help="topic to read (default KAFKA_TOPIC)")
    parser.add_argument("--group", help="consumer group id (default CONSUMER_GROUP_ID)")
    parser.add_argument("--db", help="SQLite database file; a relative path is taken from the project folder "
                                      "(default SQLITE_PATH)")
    parser.add_argument("--window", type=int, help="readings per machine in the rolling window (default CONSUMER_WINDOW)")
    parser.add_argument("--machine", help="machine whose temperature bars are drawn (default: the first one seen)")
    parser.add_argument("--no-chart", action="store_true", help="run without a chart window")
    parser.add_argument("--snapshot", type=Path, metavar="PATH",
                        help=f"write the chart as PNG to PATH every {SNAPSHOT_INTERVAL_S:g} s and at exit; a relative "
                             "PATH is taken from the project folder, like SQLITE_PATH")
    parser.add_argument("--from-beginning", action="store_true",
                        help="read each partition from its first offset, not from the group's committed offset; "
                             "records already in the database are skipped")
    parser.add_argument("--max-messages", type=int, metavar="N", help="stop after N records")
    parser.add_argument("--idle-timeout-s", type=float, metavar="S", help="stop after S seconds without a record")
    parser.add_argument("--bootstrap-servers", help="Kafka host:port[,host:port...] (default KAFKA_BOOTSTRAP_SERVERS)")
    args = parser.parse_args(argv)
    if args.window is not None and args.window < 2:
        parser.error(f"--window {args.window}: expected a whole number of at least 2")
    if args.max_messages is not None and args.max_messages < 1:
        parser.error(f"--max-messages {args.max_messages}: expected a whole number of at least 1")
    if args.idle_timeout_s is not None and not args.idle_timeout_s > 0:
        parser.error(f"--idle-timeout-s {args.idle_timeout_s}: expected a number of seconds greater than 0")
    return args


class RunControl:
    """Stop conditions of one run: signals, the window, `--max-messages` and `--idle-timeout-s`."""

    def __init__(self, max_messages: int | None, idle_timeout_s: float | None):
        self.max_messages = max_messages
        self.idle_timeout_s = idle_timeout_s
        self.stop_reason: str | None = None
        self.last_record_s = time.monotonic()

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            logger.info("stopping: {}", reason)

    def stopped(self) -> bool:
        return self.stop_reason is not None

    def check(self, consumed: int) -> None:
        if self.max_messages is not None and consumed >= self.max_messages:
            self.request_stop(f"--max-messages {self.max_messages} reached")
        elif self.idle_timeout_s is not None and time.monotonic() - self.last_record_s >= self.idle_timeout_s:
            self.request_stop(f"no record for --idle-timeout-s {self.idle_timeout_s:g}")

    def install_signal_handlers(self) -> None:
        """Make the first SIGINT or SIGTERM stop the run cleanly; a second one acts as the default would."""
        def handle(signum, _frame) -> None:
            self.request_stop(f"{signal.Signals(signum).name} received")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)


class ConsumerRun:
    """One run of the consumer: poll, process, flush, report progress, and shut down."""

    def __init__(self, settings: Settings, consumer, pipeline: SensorPipeline, control: RunControl,
                 dispatcher: AlertDispatcher | NullDispatcher | None = None,
                 listener: CommitOnRevoke | None = None):
        self.settings = settings
        self.consumer = consumer
        self.pipeline = pipeline
        self.control = control
        self.dispatcher = dispatcher or NullDispatcher()
        self.listener = listener
        self._unassigned_since_s: float | None = None
        self.started_s = time.monotonic()
        self._progress_s = self.started_s
        self._progress_consumed = 0
        self._poll_errors = 0

    def step(self, timeout_ms: int) -> None:
        """Poll once, process what arrived, flush a due batch, and check the stop conditions."""
        remaining = None
        if self.control.max_messages is not None:
            remaining = self.control.max_messages - self.pipeline.totals.consumed
        try:
            records = self.consumer.poll(timeout_ms=timeout_ms, max_records=min(500, remaining or 500))
        except KafkaError as error:
            # Retriable broker trouble (an outage, a leader move) surfaces here; kafka-python reconnects itself.
            self._poll_errors += 1
            logger.warning("poll failed, retrying error={!r} failures={}", error, self._poll_errors)
            time.sleep(1.0)
            records = {}
        if records:
            self.control.last_record_s = time.monotonic()
            self.pipeline.process(records)
        else:
            self._watch_assignment()
        if self.pipeline.flush_due():
            self.pipeline.flush(give_up=self.control.stopped)
        self._maybe_log_progress()
        self.control.check(self.pipeline.totals.consumed)

    def _watch_assignment(self) -> None:
        """Subscribe again after `UNASSIGNED_RESUBSCRIBE_S` without partitions, forcing a rebalance."""
        if self.consumer.assignment():
            self._unassigned_since_s = None
            return
        now = time.monotonic()
        if self._unassigned_since_s is None:
            self._unassigned_since_s = now
            return
        if now - self._unassigned_since_s < UNASSIGNED_RESUBSCRIBE_S:
            return
        logger.warning("no partitions assigned for {:.0f} s topic={} group={}; subscribing again to force a "
                       "rebalance", now - self._unassigned_since_s, self.settings.topic,
                       self.settings.consumer_group_id)
        self.consumer.unsubscribe()
        self.consumer.subscribe([self.settings.topic], listener=self.listener)
        self._unassigned_since_s = now

    def _maybe_log_progress(self) -> None:
        now = time.monotonic()
        if now - self._progress_s < PROGRESS_INTERVAL_S:
            return
        totals = self.pipeline.totals
        rate = (totals.consumed - self._progress_consumed) / (now - self._progress_s)
        lag = self.pipeline.lag()
        logger.info("progress rate={:.1f}/s consumed={} stored={} duplicates_skipped={} rejected={} alerts={} lag={}",
                    rate, totals.consumed, totals.stored, totals.duplicates_skipped, totals.rejected, totals.alerts,
                    "unknown" if lag is None else lag)
        self._progress_s = now
        self._progress_consumed = totals.consumed

    def status_text(self) -> str:
        totals = self.pipeline.totals
        elapsed_s = max(time.monotonic() - self.started_s, 1e-9)
        return (f"{totals.consumed / elapsed_s:.1f} readings/s   stored {totals.stored}   "
                f"rejected {totals.rejected}   alerts {totals.alerts}")

    def shutdown(self) -> bool:
        """Flush and commit within `SHUTDOWN_BUDGET_S`, then close the consumer; False if the batch was not stored."""
        deadline = time.monotonic() + SHUTDOWN_BUDGET_S
        pipeline = self.pipeline
        stored = pipeline.store_batch(give_up=lambda: time.monotonic() > deadline)
        if not stored:
            logger.error("could not store the last {} records before the shutdown time limit ({:g} s); "
                         "their offsets are not committed, so Kafka delivers them again", len(pipeline.batch),
                         SHUTDOWN_BUDGET_S)
        remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        pipeline.commit(timeout_ms=remaining_ms)

        pipeline.closing = True
        try:
            self.consumer.close(timeout_ms=CLOSE_TIMEOUT_MS)
        except KafkaError as error:
            logger.warning("closing the Kafka consumer failed error={!r}", error)
        self.dispatcher.close(ALERT_DELIVERY_CLOSE_TIMEOUT_S)
        return stored

    def summary(self) -> str:
        totals = self.pipeline.totals
        seq = self.pipeline.insights.seq_totals()
        elapsed_s = time.monotonic() - self.started_s
        return (f"summary consumed={totals.consumed} stored={totals.stored} "
                f"duplicates_skipped={totals.duplicates_skipped} rejected={totals.rejected} alerts={totals.alerts} "
                f"seq_gaps={seq['seq_gaps']} seq_missing={seq['seq_missing']} seq_repeats={seq['seq_repeats']} "
                f"commit_failures={totals.commit_failures} elapsed_s={elapsed_s:.1f}"
                + self._delivery_summary())

    def _delivery_summary(self) -> str:
        if isinstance(self.dispatcher, NullDispatcher):
            return ""
        stats = self.dispatcher.stats()
        return "".join(f" delivery_{name}={count}" for name, count in stats.items())


# Flags that override a setting, parsed and checked like the environment variable they replace.
SETTING_FLAGS = {"bootstrap_servers": "--bootstrap-servers", "topic": "--topic", "group": "--group", "db": "--db"}
SETTING_NAMES = {"bootstrap_servers": "bootstrap_servers", "topic": "topic", "group": "consumer_group_id",
                 "db": "sqlite_path"}


def load_run_settings(args: argparse.Namespace) -> Settings:
    """Build the settings from `.env` and the environment, with the CLI flags that were given on top."""
    parsers = {spec.name: spec.metadata["parse"] for spec in fields(Settings)}
    overrides = {"consumer_window": args.window}
    for option, flag in SETTING_FLAGS.items():
        text = getattr(args, option)
        if text is None:
            continue
        name = SETTING_NAMES[option]
        try:
            overrides[name] = parsers[name](text)
        except ValueError as error:
            raise ConfigError(f"invalid {flag} {text!r}: expected {error}") from None
    return load_settings(**overrides)


def choose_chart_mode(args: argparse.Namespace, settings: Settings) -> tuple[bool, Path | None]:
    """Return (show a window, snapshot path or None), falling back to snapshots when no window can open."""
    snapshot = project_path(str(args.snapshot)) if args.snapshot else None
    if args.no_chart:
        return False, snapshot
    reason = window_unavailable_reason()
    if reason is None:
        return True, snapshot
    snapshot = snapshot or settings.sqlite_file().parent / DEFAULT_SNAPSHOT_NAME
    logger.warning("no chart window: {}; running headless with a snapshot in {}", reason, snapshot)
    return False, snapshot


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Open the database, connect to Kafka, consume until a stop condition, and shut down cleanly."""
    show_window, snapshot_path = choose_chart_mode(args, settings)

    database = SensorDatabase(settings.sqlite_file(), settings.sqlite_busy_timeout_ms)
    try:
        database.open()
        check_broker(settings, BROKER_CHECK_TIMEOUT_S)
    except (DatabaseUnavailable, BrokerUnavailable) as error:
        logger.error("{}", error)
        database.close()
        return 2
    try:
        ensure_topic(settings)
    except KafkaError as error:
        logger.warning("could not check or create topic={} error={!r}; subscribing anyway", settings.topic, error)

    try:
        consumer = create_consumer(settings, settings.consumer_group_id, from_beginning=True,
                                   bootstrap_timeout_s=BROKER_CHECK_TIMEOUT_S,
                                   metadata_max_age_ms=METADATA_MAX_AGE_MS)
    except BrokerUnavailable as error:
        logger.error("{}", error)
        database.close()
        return 2

    insights = Insights(DetectionConfig.from_settings(settings), settings.consumer_window)
    pipeline = SensorPipeline(settings, database, insights, consumer)
    listener = CommitOnRevoke(pipeline, consumer, args.from_beginning)
    consumer.subscribe([settings.topic], listener=listener)
    control = RunControl(args.max_messages, args.idle_timeout_s)
    control.install_signal_handlers()
    dispatcher = AlertDispatcher.from_settings(settings)
    pipeline.stored_alert_listeners.append(dispatcher.submit)
    consumer_run = ConsumerRun(settings, consumer, pipeline, control, dispatcher, listener)
    chart_mode = "off"
    if show_window:
        chart_mode = "window"
    elif snapshot_path:
        chart_mode = f"snapshot {snapshot_path}"
    logger.info("consuming topic={} group={} db={} window={} chart={}", settings.topic, settings.consumer_group_id,
                database.path, settings.consumer_window, chart_mode)

    def attach(chart: SensorChart) -> None:
        pipeline.reading_listeners.append(lambda reading, alerts: chart.add(reading, bool(alerts)))

    try:
        if show_window:
            run_window(lambda: consumer_run.step(WINDOW_POLL_TIMEOUT_MS), control.stopped, control.request_stop,
                       consumer_run.status_text, settings.consumer_window, settings.temperature_max_c,
                       args.machine, settings.chart_interval_ms, snapshot_path, attach)
        else:
            run_headless(consumer_run, snapshot_path, args.machine, attach)
    finally:
        stored = consumer_run.shutdown()
        database.close()
        summary = consumer_run.summary()
        logger.info("{}", summary)
        print(summary, flush=True)
    return 0 if stored else 1


def run_headless(consumer_run: ConsumerRun, snapshot_path: Path | None, machine: str | None, attach) -> None:
    snapshots = None
    if snapshot_path:
        settings = consumer_run.settings
        chart = create_headless_chart(settings.consumer_window, settings.temperature_max_c, machine)
        attach(chart)
        snapshots = SnapshotWriter(chart, snapshot_path)

    while not consumer_run.control.stopped():
        consumer_run.step(HEADLESS_POLL_TIMEOUT_MS)
        if snapshots and snapshots.due():
            # Rendering takes hundreds of milliseconds on a small machine: store the open batch
            # first, so no polled reading waits for a frame before it is committed.
            consumer_run.pipeline.flush(give_up=consumer_run.control.stopped)
            snapshots.chart.set_status(consumer_run.status_text())
            snapshots.write()

    if snapshots:
        snapshots.chart.set_status(consumer_run.status_text())
        snapshots.write()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_run_settings(args)
        DeliverySettings.from_settings(settings)  # Checks the alert delivery settings before any work.
        setup_logging("consumer", settings.log_level, settings.log_folder(), settings.secrets())
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return run(args, settings)
    except KeyboardInterrupt:
        logger.warning("interrupted before a clean stop; stored rows are safe, and records whose offsets were "
                       "not committed are delivered again on the next start")
        return 130


if __name__ == "__main__":
    sys.exit(main())
