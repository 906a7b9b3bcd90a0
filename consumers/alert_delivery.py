"""Send alerts to optional outside sinks (email over SMTP, a Kafka alerts topic) from a worker thread.

The consumer always logs and stores its alerts; this module only adds delivery, and both
sinks are off by default. `AlertDispatcher.submit()` returns at once and does not raise
for a dict. It applies a cooldown and an hourly cap per (machine_id, metric), then puts the
alert on a bounded queue. A full queue drops the alert, counts it and logs it. The worker thread
sends each alert to every enabled sink, retrying a failed send `send_retries` times with
exponential backoff, and logs every failure with machine_id, metric and the error.

An alert is a dict with these keys (the columns of the `alerts` table):
`machine_id`, `metric` ("temperature", "pressure" or "vibration"), `value`, `threshold`
(the crossed limit for kind "limit", the z-score threshold for kind "zscore"), `zscore`
(None for kind "limit"), `kind`, `timestamp` (reading time, UTC text), and `topic`,
`partition`, `offset` of the record that raised it. Only `machine_id` and `metric` are
required. The other keys show as "unknown" when missing.
"""

from __future__ import annotations

import json
import queue
import smtplib
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable, Protocol

from loguru import logger

from utils.utils_config import MASK, ConfigError

UNITS = {"temperature": "°C", "pressure": "kPa", "vibration": "mm/s"}
ALERT_KEYS = ("machine_id", "metric", "value", "threshold", "zscore", "kind", "timestamp", "topic", "partition",
              "offset")
HOUR_S = 3600.0
MAX_BACKOFF_S = 30.0
LOG_EVERY_DROPS = 100
KAFKA_BOOTSTRAP_TIMEOUT_S = 10.0
# kafka-python 3.0.12 requires delivery_timeout_ms >= linger_ms + request_timeout_ms. Both are
# short here, so a send fails and is retried by this module instead of holding the worker for 120 s.
KAFKA_REQUEST_TIMEOUT_MS = 5_000
KAFKA_DELIVERY_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class DeliverySettings:
    """Alert delivery settings; `from_settings` reads them from `Settings` with the defaults below."""

    email_enabled: bool = False
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = True
    smtp_cafile: str = ""
    smtp_timeout_s: float = 10.0
    email_from: str = ""
    email_to: tuple[str, ...] = ()
    kafka_topic: str = ""
    cooldown_s: float = 300.0
    max_per_hour: int = 6
    send_retries: int = 3
    retry_backoff_s: float = 1.0
    queue_size: int = 1000

    # The Settings attribute and the environment variable of each field above.
    SOURCES = {
        "email_enabled": ("alert_email_enabled", "ALERT_EMAIL_ENABLED"),
        "smtp_host": ("smtp_host", "SMTP_HOST"),
        "smtp_port": ("smtp_port", "SMTP_PORT"),
        "smtp_username": ("smtp_username", "SMTP_USERNAME"),
        "smtp_password": ("smtp_password", "SMTP_PASSWORD"),
        "smtp_starttls": ("smtp_starttls", "SMTP_STARTTLS"),
        "smtp_cafile": ("smtp_cafile", "SMTP_CAFILE"),
        "smtp_timeout_s": ("smtp_timeout_s", "SMTP_TIMEOUT_S"),
        "email_from": ("alert_email_from", "ALERT_EMAIL_FROM"),
        "email_to": ("alert_email_to", "ALERT_EMAIL_TO"),
        "kafka_topic": ("alert_kafka_topic", "ALERT_KAFKA_TOPIC"),
        "cooldown_s": ("alert_delivery_cooldown_s", "ALERT_DELIVERY_COOLDOWN_S"),
        "max_per_hour": ("alert_max_per_hour", "ALERT_MAX_PER_HOUR"),
        "send_retries": ("alert_send_retries", "ALERT_SEND_RETRIES"),
        "retry_backoff_s": ("alert_retry_backoff_s", "ALERT_RETRY_BACKOFF_S"),
        "queue_size": ("alert_queue_size", "ALERT_QUEUE_SIZE"),
    }

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_settings(cls, settings: Any) -> "DeliverySettings":
        """Read the delivery fields from `settings`, taking the default for each one it does not have yet.

        `ALERT_EMAIL_TO` may be a comma-separated text or a sequence of addresses.
        Raises `ConfigError` naming the environment variable of an invalid or missing value.
        """
        values = {}
        for name, (attribute, _env) in cls.SOURCES.items():
            if hasattr(settings, attribute):
                values[name] = getattr(settings, attribute)
        recipients = values.get("email_to", ())
        if isinstance(recipients, str):
            recipients = recipients.split(",")
        values["email_to"] = tuple(address.strip() for address in recipients if address.strip())
        return cls(**values)

    def _check(self) -> None:
        env = {name: source[1] for name, source in self.SOURCES.items()}
        if not 1 <= self.smtp_port <= 65535:
            raise ConfigError(f"invalid {env['smtp_port']}={self.smtp_port}: expected a port from 1 to 65535")
        if not self.smtp_timeout_s > 0:
            # smtplib (Python 3.11) raises ValueError for timeout=0, a non-blocking socket.
            raise ConfigError(f"invalid {env['smtp_timeout_s']}={self.smtp_timeout_s}: expected a number of "
                              "seconds greater than 0")
        for name in ("cooldown_s", "retry_backoff_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"invalid {env[name]}={getattr(self, name)}: expected a number of at least 0")
        for name, minimum in (("max_per_hour", 1), ("send_retries", 0), ("queue_size", 1)):
            if getattr(self, name) < minimum:
                raise ConfigError(f"invalid {env[name]}={getattr(self, name)}: expected a whole number of at "
                                  f"least {minimum}")
        if not self.email_enabled:
            return
        for name in ("smtp_host", "email_from", "email_to"):
            if not getattr(self, name):
                raise ConfigError(f"missing {env[name]}: {env['email_enabled']}=true needs it")
        if self.smtp_username and not self.smtp_starttls:
            raise ConfigError(f"invalid {env['smtp_starttls']}=false with {env['smtp_username']} set: the "
                              "password would cross the network unencrypted; enable STARTTLS or remove the login")

    def secrets(self) -> list[str]:
        """Return the secret values that are set, to mask them in log messages and errors."""
        return [self.smtp_password] if self.smtp_password else []

    def __repr__(self) -> str:
        shown = {name: getattr(self, name) for name in self.SOURCES}
        if shown["smtp_password"]:
            shown["smtp_password"] = MASK
        return f"DeliverySettings({shown})"


# ---------------------------------------------------------------------------- message text


def _number(value: Any) -> str:
    """Format a number as Python prints it (90.0, 95.2), rounded to 3 decimals, or "unknown" for a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "unknown"
    return str(round(value, 3))


def email_subject(alert: dict) -> str:
    """Build a subject such as `[sensor alert] M-003 temperature limit 95.2 °C > 90.0`."""
    metric = alert.get("metric", "unknown")
    unit = UNITS.get(metric, "")
    value = f"{_number(alert.get('value'))} {unit}".strip()
    threshold = alert.get("threshold")
    kind = alert.get("kind", "unknown")
    head = f"[sensor alert] {alert.get('machine_id', 'unknown')} {metric} {kind} {value}"

    if kind == "zscore" and isinstance(alert.get("zscore"), (int, float)):
        return f"{head} z={alert['zscore']:.1f}, |z| >= {_number(threshold)}"
    if isinstance(alert.get("value"), (int, float)) and isinstance(threshold, (int, float)):
        sign = ">" if alert["value"] > threshold else "<"
        return f"{head} {sign} {_number(threshold)}"
    return head


def email_body(alert: dict) -> str:
    """Build the plain-text body: machine, metric, value, threshold or z-score, kind, time and Kafka position."""
    metric = alert.get("metric", "unknown")
    unit = UNITS.get(metric, "")
    zscore = alert.get("zscore")
    lines = [
        f"Machine:    {alert.get('machine_id', 'unknown')}",
        f"Metric:     {metric}",
        f"Value:      {_number(alert.get('value'))} {unit}".rstrip(),
        f"Kind:       {alert.get('kind', 'unknown')}",
    ]
    if alert.get("kind") == "zscore" or zscore is not None:
        z_text = f"{zscore:.2f}" if isinstance(zscore, (int, float)) else "unknown"
        lines.append(f"Z-score:    {z_text} (alert at |z| >= {_number(alert.get('threshold'))}, against the "
                     "machine's own recent readings)")
    else:
        lines.append(f"Threshold:  {_number(alert.get('threshold'))} {unit}".rstrip())
    lines += [
        f"Timestamp:  {alert.get('timestamp', 'unknown')} (reading time, UTC)",
        f"Record:     topic={alert.get('topic', 'unknown')} partition={alert.get('partition', 'unknown')} "
        f"offset={alert.get('offset', 'unknown')}",
        "",
        "The alert is also stored in the consumer's SQLite `alerts` table.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- sinks


class Sink(Protocol):
    name: str

    def send(self, alert: dict) -> None: ...

    def close(self, timeout_s: float) -> None: ...


class EmailSink:
    """Send one email per alert over a new SMTP connection, with STARTTLS and login when configured."""

    name = "email"

    def __init__(self, config: DeliverySettings):
        self.config = config

    def send(self, alert: dict) -> None:
        config = self.config
        message = EmailMessage()
        message["Subject"] = email_subject(alert)
        message["From"] = config.email_from
        message["To"] = ", ".join(config.email_to)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=config.email_from.rpartition("@")[2] or None)
        message.set_content(email_body(alert))

        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.smtp_timeout_s) as smtp:
            smtp.ehlo()
            if config.smtp_starttls:
                context = ssl.create_default_context(cafile=config.smtp_cafile or None)
                smtp.starttls(context=context)
                smtp.ehlo()
            if config.smtp_username:
                smtp.login(config.smtp_username, config.smtp_password)
            smtp.send_message(message)

    def close(self, timeout_s: float) -> None:
        pass


class KafkaSink:
    """Send each alert as a JSON message keyed by machine_id; the topic is created when missing.

    The producer is created on the first send, in the worker thread, so a slow or absent
    broker never delays the consumer's start.
    """

    name = "kafka"

    def __init__(self, settings: Any, topic: str):
        self.settings = settings
        self.topic = topic
        self._producer = None

    def send(self, alert: dict) -> None:
        from utils.utils_kafka import ensure_topic
        from utils.utils_producer import create_producer

        value = json.dumps({key: alert.get(key) for key in ALERT_KEYS}, allow_nan=False).encode("utf-8")
        delivery_timeout_ms = max(KAFKA_DELIVERY_TIMEOUT_MS,
                                  KAFKA_REQUEST_TIMEOUT_MS + self.settings.producer_linger_ms)
        if self._producer is None:
            ensure_topic(self.settings, self.topic)
            self._producer = create_producer(self.settings, bootstrap_timeout_s=KAFKA_BOOTSTRAP_TIMEOUT_S,
                                             request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
                                             delivery_timeout_ms=delivery_timeout_ms)
        future = self._producer.send(self.topic, key=str(alert.get("machine_id")).encode("utf-8"), value=value)
        future.get(timeout=delivery_timeout_ms / 1000 + 1)

    def close(self, timeout_s: float) -> None:
        if self._producer is not None:
            self._producer.close(timeout=max(timeout_s, 0.1))
            self._producer = None


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
