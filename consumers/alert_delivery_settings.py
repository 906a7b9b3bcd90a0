"""Alert delivery settings, read from `Settings` and checked as a whole, and the alert dict's keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from utils.utils_config import MASK, ConfigError

UNITS = {"temperature": "°C", "pressure": "kPa", "vibration": "mm/s"}
# The keys of an alert dict: the columns of the `alerts` table.
ALERT_KEYS = ("machine_id", "metric", "value", "threshold", "zscore", "kind", "timestamp", "topic", "partition",
              "offset")


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
