"""Every setting of `.env.example` with an invalid value stops the CLIs with exit status 2 and an error naming the key.

Most cases call the CLIs' `main()` in this process, because it returns before any client,
file or log sink is created. A few run as subprocesses to check the whole path. The last
tests run the CLIs with a Kafka SSL key password and an SMTP password set and look for
those secrets in every output, log file and the SQLite file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumers import sensor_consumer
from producers import sensor_producer
from tests.helpers import cli_env, run_cli
from tests.reliability.common import CONSUMER, PRODUCER, summary_of
from tests.test_alert_delivery import USERNAME, certificate, tls_server  # noqa: F401 - pytest fixtures
from utils.utils_config import PROJECT_ROOT, read_env_file

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN"}
EMAIL = {"ALERT_EMAIL_ENABLED": "true", "SMTP_HOST": "127.0.0.1", "ALERT_EMAIL_FROM": "sensors@plant.test",
         "ALERT_EMAIL_TO": "shift@plant.test"}
BOTH, CONSUMER_ONLY = ("producer", "consumer"), ("consumer",)

# key: (invalid value, other settings that make the value invalid, the CLIs that check it).
INVALID = {
    "KAFKA_BOOTSTRAP_SERVERS": ("localhost", {}, BOTH),
    "KAFKA_TOPIC": ("bad topic", {}, BOTH),
    "KAFKA_TOPIC_PARTITIONS": ("0", {}, BOTH),
    "KAFKA_REPLICATION_FACTOR": ("three", {}, BOTH),
    "KAFKA_MIN_INSYNC_REPLICAS": ("2", {}, BOTH),  # above the replication factor of 1
    "KAFKA_CLIENT_ID": ("", {}, BOTH),
    "KAFKA_SECURITY_PROTOCOL": ("TLS", {}, BOTH),
    "KAFKA_SASL_MECHANISM": ("GSSAPI", {}, BOTH),
    "KAFKA_SASL_USERNAME": ("", {**SASL, "KAFKA_SASL_PASSWORD": "pw"}, BOTH),
    "KAFKA_SASL_PASSWORD": ("", {**SASL, "KAFKA_SASL_USERNAME": "plant"}, BOTH),
    "KAFKA_SSL_CAFILE": ("/nonexistent/ca.pem", {}, BOTH),
    "KAFKA_SSL_CERTFILE": ("/nonexistent/client.pem", {}, BOTH),
    "KAFKA_SSL_KEYFILE": ("/nonexistent/client.key", {}, BOTH),
    "PRODUCER_MACHINES": ("many", {}, BOTH),
    "PRODUCER_INTERVAL_S": ("0", {}, BOTH),
    "PRODUCER_FAULT_RATE": ("1.5", {}, BOTH),
    "PRODUCER_LINGER_MS": ("-1", {}, BOTH),
    "CONSUMER_GROUP_ID": ("", {}, BOTH),
    "CONSUMER_WINDOW": ("0", {}, BOTH),
    "SQLITE_PATH": ("", {}, BOTH),
    "SQLITE_BUSY_TIMEOUT_MS": ("-1", {}, BOTH),
    "CONSUMER_BATCH_SIZE": ("0", {}, BOTH),
    "CONSUMER_BATCH_INTERVAL_MS": ("soon", {}, BOTH),
    "ALERT_TEMPERATURE_MAX_C": ("500", {}, BOTH),  # outside VALID_TEMPERATURE_C
    "ALERT_PRESSURE_MIN_KPA": ("nan", {}, BOTH),
    "ALERT_VIBRATION_MAX_MM_S": ("-1", {}, BOTH),
    "ALERT_Z_THRESHOLD": ("0", {}, BOTH),
    "ALERT_COOLDOWN_S": ("-5", {}, BOTH),
    "ALERT_EMAIL_ENABLED": ("maybe", {}, BOTH),
    "SMTP_HOST": ("", EMAIL, CONSUMER_ONLY),
    "SMTP_PORT": ("70000", {}, BOTH),
    "SMTP_USERNAME": (USERNAME, {**EMAIL, "SMTP_STARTTLS": "false"}, CONSUMER_ONLY),
    "SMTP_STARTTLS": ("sometimes", {}, BOTH),
    "SMTP_TIMEOUT_S": ("0", {}, BOTH),
    "ALERT_EMAIL_FROM": ("", EMAIL, CONSUMER_ONLY),
    "ALERT_EMAIL_TO": ("", EMAIL, CONSUMER_ONLY),
    "ALERT_KAFKA_TOPIC": ("alerts topic", {}, BOTH),
    "ALERT_DELIVERY_COOLDOWN_S": ("-1", {}, BOTH),
    "ALERT_MAX_PER_HOUR": ("0", {}, BOTH),
    "ALERT_SEND_RETRIES": ("-1", {}, BOTH),
    "ALERT_RETRY_BACKOFF_S": ("-0.5", {}, BOTH),
    "ALERT_QUEUE_SIZE": ("0", {}, BOTH),
    "VALID_TEMPERATURE_C": ("400,-50", {}, BOTH),
    "VALID_PRESSURE_KPA": ("0", {}, BOTH),
    "VALID_VIBRATION_MM_S": ("a,b", {}, BOTH),
    "CHART_INTERVAL_MS": ("0", {}, BOTH),
    "LOG_LEVEL": ("LOUD", {}, BOTH),
    "LOG_DIR": ("", {}, BOTH),
    "KAFKA_SSL_PASSWORD": ("key-secret", {}, BOTH),
    "SMTP_CAFILE": ("/nonexistent/ca.pem", {}, BOTH),
}
# Any text is a valid value of this key, so no value of it alone is invalid.
ANY_TEXT = {"SMTP_PASSWORD"}
CLOSED_PORT = "127.0.0.1:9"  # Nothing is sent there: every case fails before a client is created.


def test_table_covers_env_example():
    keys = set(read_env_file(PROJECT_ROOT / ".env.example"))
    assert set(INVALID) | ANY_TEXT == keys
    assert not set(INVALID) & ANY_TEXT


def cli_cases() -> list:
    return [pytest.param(key, cli, id=f"{cli}-{key}") for key, (_, _, clis) in INVALID.items() for cli in clis]


@pytest.mark.parametrize("key, cli", cli_cases())
def test_invalid_setting_exit_2(key, cli, monkeypatch, capsys, tmp_path):
    value, context, _ = INVALID[key]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", CLOSED_PORT)
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "sensors.sqlite"))
    for name, text in {**context, key: value}.items():
        monkeypatch.setenv(name, text)
    main = sensor_producer.main if cli == "producer" else sensor_consumer.main
    argv = ["--count", "1"] if cli == "producer" else ["--no-chart", "--max-messages", "1"]

    status = main(argv)

    errors = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: ")
    assert key in errors[0]
    assert not (tmp_path / "sensors.sqlite").exists()
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("module, key", [(PRODUCER, "KAFKA_TOPIC_PARTITIONS"), (CONSUMER, "SQLITE_BUSY_TIMEOUT_MS"),
                                         (CONSUMER, "SMTP_HOST")])
def test_invalid_setting_subprocess(module, key, tmp_path):
    value, context, _ = INVALID[key]
    env = cli_env(tmp_path, CLOSED_PORT, "sensors-unused", **{**context, key: value})
    args = ["--no-chart"] if module == CONSUMER else ["--count", "1"]

    result = run_cli(module, *args, env=env, timeout_s=30)

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert key in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- secrets never shown

SSL_KEY_PASSWORD = "k3y-Pass-5521"
SMTP_SECRET = "smtp-S3cret-7730"


def assert_secret_absent(secret: str, outputs: list[str], folder: Path) -> None:
    for output in outputs:
        assert secret not in output
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def encrypted_client_key(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed client certificate and its private key encrypted with SSL_KEY_PASSWORD, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed, so no encrypted client key can be made")
    folder = tmp_path_factory.mktemp("client-tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=sensor-client", "-passout", f"pass:{SSL_KEY_PASSWORD}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_ssl_password_never_shown(kafka_bootstrap, encrypted_client_key, tmp_path):
    """SSL to the session broker's plaintext port fails the handshake: exit 2, and the key password appears nowhere."""
    cert, key = encrypted_client_key
    env = cli_env(tmp_path, kafka_bootstrap, "sensors-ssl", KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=cert,
                  KAFKA_SSL_CERTFILE=cert, KAFKA_SSL_KEYFILE=key, KAFKA_SSL_PASSWORD=SSL_KEY_PASSWORD,
                  LOG_LEVEL="DEBUG")

    produced = run_cli(PRODUCER, "--count", "5", env=env, timeout_s=60)
    consumed = run_cli(CONSUMER, "--no-chart", "--max-messages", "5", env=env, timeout_s=60)

    assert produced.returncode == 2, produced.stderr[-3000:]
    assert consumed.returncode == 2, consumed.stderr[-3000:]
    assert "KAFKA_SECURITY_PROTOCOL=SSL" in consumed.stderr
    assert_secret_absent(SSL_KEY_PASSWORD, [produced.stdout, produced.stderr, consumed.stdout, consumed.stderr],
                         tmp_path)


def test_smtp_password_never_shown(kafka_bootstrap, topic, tls_server, tmp_path):  # noqa: F811 - fixture
    """The SMTP server rejects the login for every alert; the password is in no output, log or SQLite row."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap.split(","), acks="all")
    try:
        for seq, temperature in enumerate([70.0, 98.0, 99.0], start=1):
            value = {"timestamp": now, "machine_id": "M-001", "temperature": temperature, "pressure": 300.0,
                     "vibration": 2.5, "seq": seq}
            producer.send(topic, key=b"M-001", value=json.dumps(value).encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    env = cli_env(tmp_path, kafka_bootstrap, topic, **EMAIL, SMTP_PORT=tls_server.port, SMTP_USERNAME=USERNAME,
                  SMTP_PASSWORD=SMTP_SECRET, SMTP_CAFILE=tls_server.cafile, ALERT_SEND_RETRIES=1,
                  ALERT_RETRY_BACKOFF_S=0.1, ALERT_DELIVERY_COOLDOWN_S=0, LOG_LEVEL="DEBUG")

    consumed = run_cli(CONSUMER, "--no-chart", "--max-messages", "3", "--idle-timeout-s", "20", env=env)

    assert consumed.returncode == 0, consumed.stderr[-3000:]
    summary = summary_of(consumed.stdout)
    assert summary["stored"] == 3
    assert summary["delivery_failed"] >= 1, consumed.stdout
    assert tls_server.inbox.messages == []
    assert_secret_absent(SMTP_SECRET, [consumed.stdout, consumed.stderr], tmp_path)
