"""The outside alert sinks: email over SMTP with STARTTLS, and a Kafka alerts topic.

Each sink's `send(alert)` delivers one alert or raises; retries, throttling and the worker
thread live in `consumers.alert_delivery`. The alert dict keys are listed there.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from consumers.alert_delivery_settings import ALERT_KEYS, UNITS, DeliverySettings

KAFKA_BOOTSTRAP_TIMEOUT_S = 10.0
# kafka-python 3.0.12 requires delivery_timeout_ms >= linger_ms + request_timeout_ms. Both are
# short here, so a send fails and is retried by the dispatcher instead of holding its worker for 120 s.
KAFKA_REQUEST_TIMEOUT_MS = 5_000
KAFKA_DELIVERY_TIMEOUT_MS = 10_000
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
