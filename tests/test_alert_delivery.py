"""Alert delivery against a local aiosmtpd server this test starts, and against the real Kafka broker."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from loguru import logger

from consumers.alert_delivery import AlertDispatcher, NullDispatcher, Throttle
from consumers.alert_delivery_settings import DeliverySettings
from consumers.alert_sinks import email_body, email_subject
from tests.helpers import unique_name
from utils.utils_config import ConfigError
from utils.utils_consumer import create_consumer
from utils.utils_kafka import create_admin

USERNAME = "alerts@plant.test"
PASSWORD = "s3cret-Pa55word"
ALERT = {"machine_id": "M-003", "metric": "temperature", "value": 95.2, "threshold": 90.0, "zscore": None,
         "kind": "limit", "timestamp": "2026-12-04T08:00:00.123Z", "topic": "machine-sensors", "partition": 1,
         "offset": 4711}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def delivery_settings(port: int, **overrides) -> SimpleNamespace:
    """Build a stand-in for `Settings` with the attributes that `DeliverySettings.from_settings` reads."""
    values = dict(alert_email_enabled=True, smtp_host="127.0.0.1", smtp_port=port, smtp_username="",
                  smtp_password="", smtp_starttls=False, smtp_timeout_s=5.0, alert_email_from="sensors@plant.test",
                  alert_email_to="shift@plant.test, lead@plant.test", alert_delivery_cooldown_s=0.0,
                  alert_max_per_hour=100, alert_send_retries=2, alert_retry_backoff_s=0.05)
    values.update(overrides)
    return SimpleNamespace(**values)


class Inbox:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope, session))
        return "250 OK"


@pytest.fixture
def log_lines():
    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message)), level="DEBUG", format="{level} {message}")
    yield lines
    logger.remove(handler)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl for this test run."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so no certificate for the STARTTLS test server can be made")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def check_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and auth_data.login == USERNAME.encode() \
        and auth_data.password == PASSWORD.encode()
    # handled=False makes aiosmtpd send its own "535" reply for a rejected login.
    return AuthResult(success=good, handled=False)


@pytest.fixture
def tls_server(certificate):
    """An SMTP server on 127.0.0.1 that requires STARTTLS and a login before it accepts mail."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, authenticator=check_login)
    controller.start()
    yield SimpleNamespace(port=controller.port, inbox=inbox, cafile=str(cert))
    controller.stop()


@pytest.fixture
def plain_server():
    """An SMTP server on 127.0.0.1 without TLS or login, like a local relay."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield SimpleNamespace(port=controller.port, inbox=inbox)
    controller.stop()


@pytest.fixture
def silent_server():
    """A port that accepts connections (the kernel's backlog) but never sends an SMTP greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def received(inbox: Inbox, timeout_s: float = 5.0) -> list:
    deadline = time.monotonic() + timeout_s
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    return inbox.messages


# ---------------------------------------------------------------------------- email


def test_email_arrives_over_starttls(tls_server, log_lines):
    settings = delivery_settings(tls_server.port, smtp_starttls=True, smtp_username=USERNAME,
                                 smtp_password=PASSWORD, smtp_cafile=tls_server.cafile)
    dispatcher = AlertDispatcher.from_settings(settings)
    assert dispatcher.submit(dict(ALERT)) is True
    dispatcher.close(10.0)

    assert dispatcher.stats()["sent"] == 1
    assert dispatcher.stats()["failed"] == 0
    messages = received(tls_server.inbox)
    assert len(messages) == 1
    envelope, session = messages[0]
    assert session.ssl is not None
    assert envelope.rcpt_tos == ["shift@plant.test", "lead@plant.test"]
    message = message_from_bytes(envelope.content, policy=default_policy)
    assert message["Subject"] == "[sensor alert] M-003 temperature limit 95.2 °C > 90.0"
    assert message["From"] == "sensors@plant.test"
    body = message.get_content()
    assert "Machine:    M-003" in body
    assert "Metric:     temperature" in body
    assert "Value:      95.2 °C" in body
    assert "Threshold:  90.0 °C" in body
    assert "Kind:       limit" in body
    assert "Timestamp:  2026-12-04T08:00:00.123Z" in body
    assert "topic=machine-sensors partition=1 offset=4711" in body
    assert not any(PASSWORD in line for line in log_lines)


def test_email_wrong_password_not_logged(tls_server, log_lines):
    wrong = "wr0ng-Pa55word"
    settings = delivery_settings(tls_server.port, smtp_starttls=True, smtp_username=USERNAME,
                                 smtp_password=wrong, smtp_cafile=tls_server.cafile, alert_send_retries=1)
    dispatcher = AlertDispatcher.from_settings(settings)
    dispatcher.submit(dict(ALERT))
    dispatcher.close(10.0)

    assert dispatcher.stats()["failed"] == 1
    assert dispatcher.stats()["sent"] == 0
    assert tls_server.inbox.messages == []
    failures = [line for line in log_lines if "alert delivery failed" in line]
    assert len(failures) == 2
    assert "SMTPAuthenticationError" in failures[0]
    assert not any(wrong in line for line in log_lines)
    assert wrong not in repr(DeliverySettings.from_settings(settings))


def test_email_rejects_unknown_certificate(tls_server):
    # No SMTP_CAFILE: the self-signed certificate is not trusted, so nothing is sent.
    settings = delivery_settings(tls_server.port, smtp_starttls=True, smtp_username=USERNAME,
                                 smtp_password=PASSWORD, alert_send_retries=0)
    dispatcher = AlertDispatcher.from_settings(settings)
    dispatcher.submit(dict(ALERT))
    dispatcher.close(10.0)
    assert dispatcher.stats()["failed"] == 1
    assert tls_server.inbox.messages == []


def test_email_plain_relay(plain_server):
    dispatcher = AlertDispatcher.from_settings(delivery_settings(plain_server.port))
    zscore_alert = dict(ALERT, metric="vibration", value=12.5, threshold=5.0, zscore=6.04, kind="zscore")
    dispatcher.submit(zscore_alert)
    dispatcher.close(10.0)

    messages = received(plain_server.inbox)
    assert len(messages) == 1
    message = message_from_bytes(messages[0][0].content, policy=default_policy)
    assert message["Subject"] == "[sensor alert] M-003 vibration zscore 12.5 mm/s z=6.0, |z| >= 5.0"
    assert "Z-score:    6.04 (alert at |z| >= 5.0" in message.get_content()


def test_subject_low_pressure():
    alert = dict(ALERT, metric="pressure", value=231.4, threshold=250.0)
    assert email_subject(alert) == "[sensor alert] M-003 pressure limit 231.4 kPa < 250.0"
    assert "Threshold:  250.0 kPa" in email_body(alert)


def test_subject_missing_keys():
    assert email_subject({"machine_id": "M-001", "metric": "pressure"}) == \
        "[sensor alert] M-001 pressure unknown unknown kPa"
    assert "offset=unknown" in email_body({"machine_id": "M-001", "metric": "pressure"})


# ---------------------------------------------------------------------------- storms


def test_throttle_cooldown_and_hourly_cap():
    now = [0.0]
    throttle = Throttle(cooldown_s=60.0, max_per_hour=3, clock=lambda: now[0])
    outcomes = []
    for moment in (0.0, 30.0, 60.0, 120.0, 180.0, 3599.0, 3600.0):
        now[0] = moment
        outcomes.append(throttle.allow("M-001", "temperature"))
    assert outcomes == [True, False, True, True, False, False, True]


def test_throttle_keys_are_machine_and_metric():
    throttle = Throttle(cooldown_s=60.0, max_per_hour=3, clock=lambda: 0.0)
    assert throttle.allow("M-001", "temperature")
    assert throttle.allow("M-001", "pressure")
    assert throttle.allow("M-002", "temperature")
    assert not throttle.allow("M-001", "temperature")


def test_dispatcher_suppresses_storm(plain_server):
    settings = delivery_settings(plain_server.port, alert_delivery_cooldown_s=300.0, alert_max_per_hour=2)
    dispatcher = AlertDispatcher.from_settings(settings)
    results = [dispatcher.submit(dict(ALERT, offset=offset)) for offset in range(10)]
    results.append(dispatcher.submit(dict(ALERT, metric="vibration")))
    dispatcher.close(10.0)

    assert results == [True] + [False] * 9 + [True]
    assert dispatcher.stats()["suppressed"] == 9
    assert dispatcher.stats()["sent"] == 2
    assert len(received(plain_server.inbox)) == 2


# ---------------------------------------------------------------------------- failures


def test_closed_port_retried_and_counted(log_lines):
    dispatcher = AlertDispatcher.from_settings(delivery_settings(free_port(), alert_send_retries=2))
    started = time.monotonic()
    assert dispatcher.submit(dict(ALERT)) is True
    submit_s = time.monotonic() - started
    dispatcher.close(10.0)

    assert submit_s < 0.1
    stats = dispatcher.stats()
    assert stats["failed"] == 1
    assert stats["retries"] == 2
    assert stats["sent"] == 0
    failures = [line for line in log_lines if "alert delivery failed" in line]
    assert len(failures) == 3
    assert "machine_id=M-003 metric=temperature attempt=1/3" in failures[0]
    assert "ConnectionRefusedError" in failures[0]
    assert any("alert delivery gave up sink=email machine_id=M-003" in line for line in log_lines)


def test_close_bounded_by_silent_server(silent_server, log_lines):
    dispatcher = AlertDispatcher.from_settings(delivery_settings(silent_server, smtp_timeout_s=30.0))
    dispatcher.submit(dict(ALERT))
    time.sleep(0.2)  # The worker is now waiting for a greeting that never comes.

    started = time.monotonic()
    dispatcher.close(0.5)
    assert time.monotonic() - started < 1.5
    assert any("did not finish within 0.5 s" in line for line in log_lines)


def test_full_queue_drops_without_blocking(silent_server, log_lines):
    settings = delivery_settings(silent_server, smtp_timeout_s=30.0, alert_queue_size=2)
    dispatcher = AlertDispatcher.from_settings(settings)
    started = time.monotonic()
    results = [dispatcher.submit(dict(ALERT, machine_id=f"M-{n:03d}")) for n in range(10)]
    submit_s = time.monotonic() - started
    dispatcher.close(0.5)

    assert submit_s < 0.5
    assert results[:2] == [True, True]
    assert results.count(True) in (2, 3)  # A third fits when the worker took the first one off the queue.
    assert dispatcher.stats()["dropped"] >= 7
    assert any("alert delivery queue full" in line for line in log_lines)


def test_submit_after_close_dropped(plain_server):
    dispatcher = AlertDispatcher.from_settings(delivery_settings(plain_server.port))
    dispatcher.close(1.0)
    assert dispatcher.submit(dict(ALERT)) is False
    assert dispatcher.stats()["dropped"] == 1


def test_submit_without_machine_id_dropped(plain_server):
    dispatcher = AlertDispatcher.from_settings(delivery_settings(plain_server.port))
    assert dispatcher.submit({"metric": "temperature"}) is False
    dispatcher.close(1.0)
    assert dispatcher.stats()["dropped"] == 1


# ---------------------------------------------------------------------------- settings


def test_all_sinks_off_is_null_dispatcher():
    dispatcher = AlertDispatcher.from_settings(SimpleNamespace())
    assert isinstance(dispatcher, NullDispatcher)
    assert dispatcher.submit(dict(ALERT)) is False
    dispatcher.close(0.1)
    assert dispatcher.stats() == {"sent": 0, "failed": 0, "suppressed": 0, "dropped": 0, "retries": 0}


@pytest.mark.parametrize("overrides, key", [
    ({"smtp_host": ""}, "SMTP_HOST"),
    ({"alert_email_from": ""}, "ALERT_EMAIL_FROM"),
    ({"alert_email_to": " , "}, "ALERT_EMAIL_TO"),
    ({"smtp_port": 70000}, "SMTP_PORT"),
    ({"alert_max_per_hour": 0}, "ALERT_MAX_PER_HOUR"),
    ({"alert_send_retries": -1}, "ALERT_SEND_RETRIES"),
    ({"smtp_timeout_s": 0}, "SMTP_TIMEOUT_S"),
    ({"smtp_username": USERNAME, "smtp_password": PASSWORD, "smtp_starttls": False}, "SMTP_STARTTLS"),
])
def test_invalid_settings_name_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        DeliverySettings.from_settings(delivery_settings(25, **overrides))
    assert key in str(error.value)
    assert PASSWORD not in str(error.value)


# ---------------------------------------------------------------------------- Kafka alerts topic


class WithDelivery:
    """The session's Kafka `Settings` plus delivery attributes it does not have yet."""

    def __init__(self, base, **extra):
        self._base = base
        self.__dict__.update(extra)

    def __getattr__(self, name):
        return getattr(self._base, name)


def test_kafka_alerts_topic(kafka_settings):
    topic = unique_name("test-alerts")
    settings = WithDelivery(kafka_settings, alert_kafka_topic=topic, alert_delivery_cooldown_s=0.0)
    dispatcher = AlertDispatcher.from_settings(settings)
    sent = [dict(ALERT), dict(ALERT, machine_id="M-001", metric="vibration", value=12.5, threshold=5.0,
                              zscore=6.04, kind="zscore", offset=12)]
    try:
        for alert in sent:
            assert dispatcher.submit(alert) is True
        dispatcher.close(30.0)
        assert dispatcher.stats()["sent"] == 2
        assert dispatcher.stats()["failed"] == 0

        consumer = create_consumer(kafka_settings, group_id=unique_name("test-alerts-group"))
        consumer.subscribe([topic])
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 2 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        consumer.close()
    finally:
        admin = create_admin(kafka_settings)
        try:
            admin.delete_topics([topic])
        except Exception:  # noqa: BLE001 - cleanup must not hide the test's own result.
            pass
        finally:
            admin.close()

    assert len(records) == 2
    by_key = {record.key: json.loads(record.value) for record in records}
    assert by_key[b"M-003"] == ALERT
    assert by_key[b"M-001"]["kind"] == "zscore"
    assert by_key[b"M-001"]["zscore"] == 6.04
    assert set(by_key[b"M-001"]) == set(ALERT)


def test_consumer_sends_stored_alerts_to_topic(kafka_settings, topic, tmp_path):
    """End to end: every alert the consumer stores is also sent, once, to the alerts topic."""
    import sqlite3

    from tests.helpers import cli_env, run_cli

    alerts_topic = unique_name("test-alerts")
    env = cli_env(tmp_path, kafka_settings.bootstrap_servers, topic, ALERT_KAFKA_TOPIC=alerts_topic,
                  ALERT_DELIVERY_COOLDOWN_S=0, ALERT_MAX_PER_HOUR=100000)
    produced = run_cli("producers.sensor_producer", "--count", "600", "--machines", "3", "--fault-rate", "0.05",
                       "--seed", "11", "--rate", "max", env=env)
    assert produced.returncode == 0, produced.stderr[-2000:]
    consumed = run_cli("consumers.sensor_consumer", "--no-chart", "--max-messages", "600", "--idle-timeout-s", "30",
                       env=env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]

    with sqlite3.connect(tmp_path / "sensors.sqlite") as connection:
        stored = connection.execute("SELECT machine_id, metric, kind, offset FROM alerts").fetchall()
    assert stored, "the seeded run with a 5 % fault rate must raise alerts"
    assert f"delivery_sent={len(stored)}" in consumed.stdout

    consumer = create_consumer(kafka_settings, group_id=unique_name("alerts-reader"))
    consumer.subscribe([alerts_topic])
    received = []
    deadline = time.monotonic() + 60
    while len(received) < len(stored) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            received.extend(json.loads(record.value) for record in records)
    consumer.close()
    assert sorted((a["machine_id"], a["metric"], a["kind"], a["offset"]) for a in received) == sorted(stored)
