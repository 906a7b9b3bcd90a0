"""Send alerts to optional outside sinks (email over SMTP, a Kafka alerts topic) from a worker thread.

The consumer always logs and stores its alerts; this module only adds delivery, and both
sinks are off by default. `AlertDispatcher.submit()` returns at once and does not raise
for a dict. It applies a cooldown and an hourly cap per (machine_id, metric), then puts the
alert on a bounded queue. A full queue drops the alert, counts it and logs it. The worker thread
sends each alert to every enabled sink, retrying a failed send `send_retries` times with
exponential backoff, and logs every failure with machine_id, metric and the error.

An alert is a dict with the columns of the `alerts` table as keys:
- `machine_id`, and `metric` ("temperature", "pressure" or "vibration");
- `value`, and `threshold`: the crossed limit for kind "limit", the z-score threshold for kind "zscore";
- `zscore` (None for kind "limit"), `kind`, and `timestamp` (reading time, UTC text);
- `topic`, `partition` and `offset` of the record that raised it. Only `machine_id` and `metric` are
required. The other keys show as "unknown" when missing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any, Callable

from loguru import logger

from consumers.alert_delivery_settings import DeliverySettings
from consumers.alert_sinks import EmailSink, KafkaSink, Sink
from utils.utils_config import MASK

HOUR_S = 3600.0
MAX_BACKOFF_S = 30.0
LOG_EVERY_DROPS = 100


# ---------------------------------------------------------------------------- throttle and dispatcher


class Throttle:
    """Allow an alert per (machine_id, metric) only after `cooldown_s`, and at most `max_per_hour` in any hour."""

    def __init__(self, cooldown_s: float, max_per_hour: int, clock: Callable[[], float] = time.monotonic):
        self.cooldown_s = cooldown_s
        self.max_per_hour = max_per_hour
        self.clock = clock
        self._sent: dict[tuple[str, str], deque[float]] = {}

    def allow(self, machine_id: str, metric: str) -> bool:
        now = self.clock()
        times = self._sent.setdefault((machine_id, metric), deque())
        while times and now - times[0] >= HOUR_S:
            times.popleft()
        if times and now - times[-1] < self.cooldown_s:
            return False
        if len(times) >= self.max_per_hour:
            return False
        times.append(now)
        return True


class NullDispatcher:
    """The dispatcher when every sink is off: accepts alerts and does nothing."""

    def submit(self, alert: dict) -> bool:
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"sent": 0, "failed": 0, "suppressed": 0, "dropped": 0, "retries": 0}


class AlertDispatcher:
    """Deliver submitted alerts to the sinks from one worker thread.

    `stats()` counts: `sent` and `failed` per alert and sink (failed = given up after
    every retry), `retries` extra attempts, `suppressed` alerts held back by the
    cooldown or the hourly cap, `dropped` alerts lost to a full queue, a closed
    dispatcher, a missing machine_id or metric, or the close time limit.
    """

    def __init__(self, config: DeliverySettings, sinks: list[Sink], clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.sinks = sinks
        self.throttle = Throttle(config.cooldown_s, config.max_per_hour, clock)
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=config.queue_size)
        self._lock = threading.Lock()
        self._counts = {"sent": 0, "failed": 0, "suppressed": 0, "dropped": 0, "retries": 0}
        self._closing = threading.Event()
        self._deadline_s: float | None = None
        self._worker = threading.Thread(target=self._run, name="alert-delivery", daemon=True)
        self._worker.start()
        logger.info("alert delivery on sinks={} smtp={}:{} email_to={} kafka_topic={} cooldown_s={:g} "
                    "max_per_hour={} send_retries={}", ",".join(sink.name for sink in sinks), config.smtp_host,
                    config.smtp_port, ",".join(config.email_to), config.kafka_topic or "off", config.cooldown_s,
                    config.max_per_hour, config.send_retries)

    @classmethod
    def from_settings(cls, settings: Any) -> "AlertDispatcher | NullDispatcher":
        """Build the dispatcher for the enabled sinks, or a `NullDispatcher` when none is enabled."""
        config = DeliverySettings.from_settings(settings)
        sinks: list[Sink] = []
        if config.email_enabled:
            sinks.append(EmailSink(config))
        if config.kafka_topic:
            sinks.append(KafkaSink(settings, config.kafka_topic))
        if not sinks:
            return NullDispatcher()
        return cls(config, sinks)

    def submit(self, alert: dict) -> bool:
        """Queue an alert for delivery without blocking; return False when it is suppressed or dropped."""
        machine_id, metric = alert.get("machine_id"), alert.get("metric")
        if machine_id is None or metric is None:
            self._count("dropped")
            logger.error("alert delivery dropped an alert without machine_id or metric keys={}", sorted(alert))
            return False
        if self._closing.is_set():
            self._count("dropped")
            logger.warning("alert delivery is closed, dropped machine_id={} metric={}", machine_id, metric)
            return False

        with self._lock:
            allowed = self.throttle.allow(str(machine_id), str(metric))
        if not allowed:
            self._count("suppressed")
            logger.debug("alert delivery suppressed by cooldown or hourly cap machine_id={} metric={}",
                         machine_id, metric)
            return False

        try:
            self._queue.put_nowait(dict(alert))
        except queue.Full:
            self._count("dropped")
            dropped = self.stats()["dropped"]
            if dropped == 1 or dropped % LOG_EVERY_DROPS == 0:  # A stuck sink would otherwise log every alert.
                logger.warning("alert delivery queue full ({} alerts), dropped machine_id={} metric={} dropped={}",
                               self.config.queue_size, machine_id, metric, dropped)
            return False
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within `timeout_s`, then stop the worker; what is left is dropped and logged.

        Returns after at most `timeout_s` (plus scheduling delay). A send that is still
        blocked in a socket call then ends with the process, because the worker is a daemon
        thread. `smtp_timeout_s` and the Kafka timeouts bound such a call.
        """
        if self._closing.is_set():
            return
        self._deadline_s = time.monotonic() + timeout_s
        self._closing.set()
        self._worker.join(timeout_s)
        counts = self.stats()
        if self._worker.is_alive():
            logger.warning("alert delivery did not finish within {:g} s; queued={} alerts not sent", timeout_s,
                           self._queue.qsize())
        logger.info("alert delivery closed sent={} failed={} suppressed={} dropped={} retries={}",
                    counts["sent"], counts["failed"], counts["suppressed"], counts["dropped"], counts["retries"])

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # ------------------------------------------------------------------ worker thread

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _run(self) -> None:
        while True:
            try:
                alert = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    break
                continue
            if self._past_deadline():
                self._count("dropped")
                logger.warning("alert delivery close time limit passed, dropped machine_id={} metric={}",
                               alert["machine_id"], alert["metric"])
                continue
            for sink in self.sinks:
                self._deliver(sink, alert)

        for sink in self.sinks:
            remaining_s = 0.0 if self._deadline_s is None else self._deadline_s - time.monotonic()
            try:
                sink.close(max(remaining_s, 0.1))
            except Exception as error:  # noqa: BLE001 - one sink failing to close must not skip the others.
                logger.warning("alert delivery sink={} failed to close error=\"{}\"", sink.name, self._mask(error))

    def _deliver(self, sink: Sink, alert: dict) -> None:
        """Send to one sink with retries and exponential backoff; count and log the outcome."""
        attempts = 1 + self.config.send_retries
        delay_s = self.config.retry_backoff_s
        for attempt in range(1, attempts + 1):
            try:
                sink.send(alert)
            except (ValueError, TypeError) as error:
                # Retrying cannot help, because the alert itself cannot be encoded (NaN, an odd type).
                self._count("failed")
                logger.error("alert delivery failed sink={} machine_id={} metric={} error=\"{}\" (not retried)",
                             sink.name, alert["machine_id"], alert["metric"], self._mask(error))
                return
            except Exception as error:  # noqa: BLE001 - smtplib, ssl, socket and Kafka errors share no base class.
                last = attempt == attempts
                logger.warning("alert delivery failed sink={} machine_id={} metric={} attempt={}/{} error=\"{}\"{}",
                               sink.name, alert["machine_id"], alert["metric"], attempt, attempts,
                               self._mask(error), "" if last else f" retry_in_s={delay_s:g}")
                if last or not self._pause(delay_s):
                    self._count("failed")
                    logger.error("alert delivery gave up sink={} machine_id={} metric={} attempts={}", sink.name,
                                 alert["machine_id"], alert["metric"], attempt)
                    return
                self._count("retries")
                delay_s = min(delay_s * 2, MAX_BACKOFF_S)
            else:
                self._count("sent")
                logger.info("alert sent sink={} machine_id={} metric={} kind={} timestamp={}", sink.name,
                            alert["machine_id"], alert["metric"], alert.get("kind"), alert.get("timestamp"))
                return

    def _pause(self, delay_s: float) -> bool:
        """Wait before a retry; return False when the close deadline comes first."""
        end_s = time.monotonic() + delay_s
        self._closing.wait(delay_s)  # close() ends the wait early, and then the deadline decides.
        if self._deadline_s is None:
            return True
        if end_s >= self._deadline_s:
            return False
        time.sleep(max(0.0, end_s - time.monotonic()))
        return True

    def _past_deadline(self) -> bool:
        return self._deadline_s is not None and time.monotonic() >= self._deadline_s

    def _mask(self, error: BaseException) -> str:
        text = f"{type(error).__name__}: {error}"
        for secret in self.config.secrets():
            text = text.replace(secret, MASK)
        return text
