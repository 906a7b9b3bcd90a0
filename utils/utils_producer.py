"""Create the kafka-python producer from settings, with the delivery guarantees this project relies on."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from utils.utils_config import Settings
from utils.utils_kafka import broker_unavailable, client_config

# A record that cannot be delivered within this time fails its future, so the caller counts it as failed.
DELIVERY_TIMEOUT_MS = 120_000


def create_producer(settings: Settings, bootstrap_timeout_s: float = 10.0, **overrides: Any) -> KafkaProducer:
    """Connect a producer with acks="all", idempotence and retries, and a bounded linger.

    Keys and values are sent as the bytes the caller passes: serialising is the caller's
    job, so a bad value fails in the caller's code with its machine_id, not in the client.
    Raises `BrokerUnavailable` when no broker answers within `bootstrap_timeout_s`.
    """
    config: dict[str, Any] = {
        **client_config(settings, "producer"),
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,  # Bounded by delivery_timeout_ms, not by a count.
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        "request_timeout_ms": 30_000,
        "linger_ms": settings.producer_linger_ms,
        "max_in_flight_requests_per_connection": 5,
        "bootstrap_timeout_ms": int(bootstrap_timeout_s * 1000),
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except (KafkaError, OSError) as error:
        raise broker_unavailable(settings, error) from None
