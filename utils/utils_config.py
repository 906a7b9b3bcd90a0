"""Typed, validated settings read once from `.env` and the environment.

Precedence: an environment variable that is set wins over `.env`, and `.env` wins over
the defaults below. A `.env` line whose value is only an inline comment
(`KAFKA_TOPIC= # later`) counts as unset. An empty value (`KAFKA_TOPIC=`) is invalid for
every setting that has no empty form, and raises `ConfigError` naming the key.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = PROJECT_ROOT / ".env"

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
MASK = "*****"


class ConfigError(ValueError):
    """An invalid setting: the message names the key, the value and the expected form."""


# Parsers turn the raw text into a typed value or raise ValueError with the expected form.


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("a whole number of at least 1")
    return value


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("a whole number") from None


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise ValueError("a number of at least 0")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise ValueError("a number greater than 0")
    return value


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("a number such as 1.5") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def _probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("a probability from 0 to 1")
    return value


def _text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("a non-empty text")
    return value


def _optional_text(text: str) -> str:
    return text.strip()


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic(text: str) -> str:
    value = text.strip()
    if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError("a Kafka topic name of 1 to 249 letters, digits, '.', '_' or '-'")
    return value


_HOST_PORT = re.compile(r"\[?[A-Za-z0-9.:_-]+\]?:\d{1,5}")


def _bootstrap_servers(text: str) -> str:
    servers = [part.strip() for part in text.split(",")]
    if not servers or any(not _HOST_PORT.fullmatch(s) for s in servers):
        raise ValueError("a comma-separated list of host:port, such as localhost:9092")
    for server in servers:
        port = int(server.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError("host:port with a port from 1 to 65535")
    return ",".join(servers)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper()
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value

    return parse


def _optional_choice(*choices: str) -> Callable[[str], str]:
    strict = _choice(*choices)

    def parse(text: str) -> str:
        return strict(text) if text.strip() else ""

    return parse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _optional_topic(text: str) -> str:
    return _topic(text) if text.strip() else ""


def _port(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 65535:
        raise ValueError("a port from 1 to 65535")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise ValueError(f"a whole number of at least {minimum}")
        return value

    return parse


def _range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ValueError("two numbers LOW,HIGH such as -50,400") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError("two finite numbers LOW,HIGH with LOW below HIGH")
    return (low, high)


def setting(env: str, default: str, parse: Callable[[str], Any], about: str, secret: bool = False) -> Any:
    """Declare a `Settings` field linked to its environment variable, its default text and its parser."""
    return field(
        default=parse(default),
        metadata={"env": env, "default": default, "parse": parse, "about": about, "secret": secret},
    )


@dataclass(frozen=True)
class Settings:
    """Every setting of the producer and the consumer; `.env.example` lists the same keys in this order."""

    bootstrap_servers: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", _bootstrap_servers,
        "Kafka bootstrap servers, host:port[,host:port...]")
    topic: str = setting("KAFKA_TOPIC", "machine-sensors", _topic, "topic the readings go to")
    topic_partitions: int = setting(
        "KAFKA_TOPIC_PARTITIONS", "3", _positive_int, "partitions of the topic when this project creates it")
    replication_factor: int = setting(
        "KAFKA_REPLICATION_FACTOR", "1", _positive_int, "replication factor of the topic when this project creates it")
    min_insync_replicas: int = setting(
        "KAFKA_MIN_INSYNC_REPLICAS", "1", _positive_int, "min.insync.replicas of the topic when this project creates it")
    client_id: str = setting("KAFKA_CLIENT_ID", "sensor-stream", _text, "client id prefix seen in broker logs")
    security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", _choice(*SECURITY_PROTOCOLS),
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str = setting(
        "KAFKA_SASL_MECHANISM", "", _optional_choice(*SASL_MECHANISMS),
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)")
    sasl_username: str = setting("KAFKA_SASL_USERNAME", "", _optional_text, "SASL user name")
    sasl_password: str = setting("KAFKA_SASL_PASSWORD", "", _optional_text, "SASL password", secret=True)
    ssl_cafile: str = setting(
        "KAFKA_SSL_CAFILE", "", _optional_text, "CA bundle (PEM) that signs the broker certificate")
    ssl_certfile: str = setting("KAFKA_SSL_CERTFILE", "", _optional_text, "client certificate (PEM) for mutual TLS")
    ssl_keyfile: str = setting("KAFKA_SSL_KEYFILE", "", _optional_text, "client private key (PEM) for mutual TLS")
    ssl_password: str = setting(
        "KAFKA_SSL_PASSWORD", "", _optional_text, "password of the client private key", secret=True)
    producer_machines: int = setting("PRODUCER_MACHINES", "5", _positive_int, "simulated machines")
    producer_interval_s: float = setting(
        "PRODUCER_INTERVAL_S", "1.0", _positive_float, "seconds between rounds; each round sends one reading per machine")
    producer_fault_rate: float = setting(
        "PRODUCER_FAULT_RATE", "0.005", _probability, "probability per reading that a fault starts")
    producer_linger_ms: int = setting(
        "PRODUCER_LINGER_MS", "20", _int_at_least(0), "milliseconds the producer waits to fill a batch")
    consumer_group_id: str = setting("CONSUMER_GROUP_ID", "sensor-consumers", _text, "consumer group id")
    consumer_window: int = setting(
        "CONSUMER_WINDOW", "60", _int_at_least(2), "readings per machine in the rolling window")
    sqlite_path: str = setting(
        "SQLITE_PATH", "data/sensors.sqlite", _text,
        "SQLite database file; a relative path is taken from the project folder")
    sqlite_busy_timeout_ms: int = setting(
        "SQLITE_BUSY_TIMEOUT_MS", "5000", _int_at_least(0),
        "milliseconds SQLite waits for a lock before it reports busy")
    batch_size: int = setting("CONSUMER_BATCH_SIZE", "500", _positive_int, "readings per SQLite transaction at most")
    batch_interval_ms: int = setting(
        "CONSUMER_BATCH_INTERVAL_MS", "200", _positive_int, "milliseconds a batch may wait before it is written")
    temperature_max_c: float = setting("ALERT_TEMPERATURE_MAX_C", "90.0", _float, "temperature alert limit in °C")
    pressure_min_kpa: float = setting("ALERT_PRESSURE_MIN_KPA", "250.0", _float, "low pressure alert limit in kPa")
    vibration_max_mm_s: float = setting(
        "ALERT_VIBRATION_MAX_MM_S", "7.1", _float, "vibration alert limit in mm/s RMS")
    z_threshold: float = setting(
        "ALERT_Z_THRESHOLD", "5.0", _positive_float, "z-score against the machine's own window that raises an alert")
    alert_cooldown_s: float = setting(
        "ALERT_COOLDOWN_S", "60", _non_negative_float,
        "seconds between repeat alerts while a machine, metric and detector keep firing; "
        "after 3 quiet readings the detector alerts again at once")
    alert_email_enabled: bool = setting("ALERT_EMAIL_ENABLED", "false", _bool, "send each alert by email over SMTP")
    smtp_host: str = setting("SMTP_HOST", "", _optional_text, "SMTP server host; needed when ALERT_EMAIL_ENABLED=true")
    smtp_port: int = setting("SMTP_PORT", "587", _port, "SMTP server port (587: submission with STARTTLS)")
    smtp_username: str = setting("SMTP_USERNAME", "", _optional_text, "SMTP login user; empty: no login")
    smtp_password: str = setting("SMTP_PASSWORD", "", _optional_text, "SMTP login password", secret=True)
    smtp_starttls: bool = setting(
        "SMTP_STARTTLS", "true", _bool, "upgrade the SMTP connection with STARTTLS before login")
    smtp_cafile: str = setting(
        "SMTP_CAFILE", "", _optional_text, "CA bundle (PEM) that signs the SMTP server certificate; empty: system CAs")
    smtp_timeout_s: float = setting(
        "SMTP_TIMEOUT_S", "10", _positive_float, "seconds an SMTP connect or reply may take")
    alert_email_from: str = setting("ALERT_EMAIL_FROM", "", _optional_text, "sender address of alert emails")
    alert_email_to: str = setting("ALERT_EMAIL_TO", "", _optional_text, "recipients of alert emails, comma-separated")
    alert_kafka_topic: str = setting(
        "ALERT_KAFKA_TOPIC", "", _optional_topic, "topic alerts are sent to as JSON; empty: off")
    alert_delivery_cooldown_s: float = setting(
        "ALERT_DELIVERY_COOLDOWN_S", "300", _non_negative_float,
        "seconds before an alert of the same machine and metric is emailed or sent again")
    alert_max_per_hour: int = setting(
        "ALERT_MAX_PER_HOUR", "6", _positive_int, "alerts sent per machine and metric in any hour at most")
    alert_send_retries: int = setting(
        "ALERT_SEND_RETRIES", "3", _int_at_least(0), "retries of a failed alert send")
    alert_retry_backoff_s: float = setting(
        "ALERT_RETRY_BACKOFF_S", "1.0", _non_negative_float, "seconds before the first retry; doubles per retry up to 30")
    alert_queue_size: int = setting(
        "ALERT_QUEUE_SIZE", "1000", _positive_int, "alerts waiting for delivery at most; more are dropped and counted")
    temperature_bounds_c: tuple = setting(
        "VALID_TEMPERATURE_C", "-50,400", _range, "accepted temperature range in °C, LOW,HIGH")
    pressure_bounds_kpa: tuple = setting("VALID_PRESSURE_KPA", "0,5000", _range, "accepted pressure range in kPa, LOW,HIGH")
    vibration_bounds_mm_s: tuple = setting(
        "VALID_VIBRATION_MM_S", "0,200", _range, "accepted vibration range in mm/s RMS, LOW,HIGH")
    chart_interval_ms: int = setting("CHART_INTERVAL_MS", "1000", _positive_int, "milliseconds between chart frames")
    log_level: str = setting("LOG_LEVEL", "INFO", _choice(*LOG_LEVELS), "console log level")
    log_dir: str = setting(
        "LOG_DIR", "logs", _text, "folder of the per-process log files; a relative path is taken from the project folder")

    def sqlite_file(self) -> Path:
        """Resolve `sqlite_path` against the project folder when it is relative."""
        return project_path(self.sqlite_path)

    def log_folder(self) -> Path:
        """Resolve `log_dir` against the project folder when it is relative."""
        return project_path(self.log_dir)

    def masked(self) -> dict[str, Any]:
        """Return the settings by environment key, with every secret that is set replaced by a mask."""
        shown = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value:
                value = MASK
            shown[spec.metadata["env"]] = value
        return shown

    def secrets(self) -> list[str]:
        """Return the secret values that are set, so log sinks can mask them wherever they appear."""
        return [getattr(self, f.name) for f in fields(self) if f.metadata["secret"] and getattr(self, f.name)]

    def __repr__(self) -> str:
        return f"Settings({self.masked()})"


def project_path(text: str) -> Path:
    """Resolve a configured path: `~` expanded, a relative path taken from the project folder."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def _comment_only_keys(env_file: Path) -> set[str]:
    """Find the keys whose `.env` value is only an inline comment, which count as unset."""
    keys = set()
    pattern = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*#")
    for line in env_file.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line)
        if match:
            keys.add(match.group(1))
    return keys


def read_env_file(env_file: Path | None = None) -> dict[str, str]:
    """Read `.env` into raw text values, leaving out keys whose value is only a comment."""
    path = Path(env_file) if env_file is not None else DEFAULT_ENV_FILE
    if not path.is_file():
        return {}
    raw = {key: value for key, value in dotenv_values(path).items() if value is not None}
    for key in _comment_only_keys(path):
        raw.pop(key, None)
    return raw


def load_settings(
    env_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build validated settings from defaults, `.env`, then the environment, then `overrides`.

    `overrides` take attribute names and typed values (CLI flags). Raises `ConfigError`
    naming the first invalid key, its value (masked when secret) and the expected form.
    """
    from_file = read_env_file(Path(env_file) if env_file is not None else None)
    environment = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    for spec in fields(Settings):
        key = spec.metadata["env"]
        if key in environment:
            raw, origin = environment[key], "environment"
        elif key in from_file:
            raw, origin = from_file[key], ".env"
        else:
            continue
        try:
            values[spec.name] = spec.metadata["parse"](raw)
        except ValueError as error:
            shown = MASK if spec.metadata["secret"] else repr(raw)
            raise ConfigError(f"invalid {key}={shown} (from {origin}): expected {error}") from None

    values.update({name: value for name, value in overrides.items() if value is not None})
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    """Raise `ConfigError` for settings that are valid alone but not together."""
    protocol = settings.security_protocol
    if protocol.startswith("SASL"):
        if not settings.sasl_mechanism:
            raise ConfigError(f"missing KAFKA_SASL_MECHANISM: KAFKA_SECURITY_PROTOCOL={protocol} needs one of "
                              + ", ".join(SASL_MECHANISMS))
        if not settings.sasl_username or not settings.sasl_password:
            raise ConfigError(f"missing KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD: "
                              f"KAFKA_SECURITY_PROTOCOL={protocol} needs both")
    for key, path in (("KAFKA_SSL_CAFILE", settings.ssl_cafile), ("KAFKA_SSL_CERTFILE", settings.ssl_certfile),
                      ("KAFKA_SSL_KEYFILE", settings.ssl_keyfile), ("SMTP_CAFILE", settings.smtp_cafile)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"invalid {key}={path!r}: file not found; give the path of a PEM file")
    if settings.ssl_password and not settings.ssl_keyfile:
        raise ConfigError("missing KAFKA_SSL_KEYFILE: KAFKA_SSL_PASSWORD is the password of that key file")
    if settings.min_insync_replicas > settings.replication_factor:
        raise ConfigError(
            f"invalid KAFKA_MIN_INSYNC_REPLICAS={settings.min_insync_replicas}: expected at most "
            f"KAFKA_REPLICATION_FACTOR={settings.replication_factor}, or no write could ever succeed")
    for key, (low, high), limit in (
        ("ALERT_TEMPERATURE_MAX_C", settings.temperature_bounds_c, settings.temperature_max_c),
        ("ALERT_PRESSURE_MIN_KPA", settings.pressure_bounds_kpa, settings.pressure_min_kpa),
        ("ALERT_VIBRATION_MAX_MM_S", settings.vibration_bounds_mm_s, settings.vibration_max_mm_s),
    ):
        if not low <= limit <= high:
            raise ConfigError(f"invalid {key}={limit}: expected a value inside the accepted range {low},{high}")
