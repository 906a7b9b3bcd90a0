"""Create the kafka-python producer from settings, with the delivery guarantees this project relies on."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from loguru import logger

from utils.utils_config import Settings
from utils.utils_kafka import broker_unavailable, client_config

# A record that cannot be delivered within this time fails its future, so the caller counts it as failed.
DELIVERY_TIMEOUT_MS = 120_000


def create_producer(settings: Settings, bootstrap_timeout_s: float = 10.0, **overrides: Any) -> KafkaProducer:
    """Connect a producer with acks="all", idempotence and retries, and a bounded linger.

    Keys and values are sent as the bytes the caller passes: serialising is the caller's
    job, so a bad value fails in the caller's code with its machine_id, not in the client.
    Raises `BrokerUnavailable` when no broker responds within `bootstrap_timeout_s`.
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
        # The default grows to 30 s, so a restarted broker went unnoticed for up to 45 s.
        "reconnect_backoff_max_ms": 5_000,
        "bootstrap_timeout_ms": int(bootstrap_timeout_s * 1000),
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except (KafkaError, OSError) as error:
        raise broker_unavailable(settings, error) from None


def close_producer(producer: KafkaProducer, timeout_s: float) -> bool:
    """Close the producer, abandoning records still pending after `timeout_s`; return whether all were sent.

    The caller counts abandoned records as failed through their futures' errbacks or its own tally.
    """
    try:
        producer.close(timeout=timeout_s)
        return True
    except KafkaTimeoutError:
        # NOTE: kafka-python 3.0.12 close() flushes first and raises while records are pending, so it
        # never reaches its own force-close step, and its __del__ later prints a traceback. This takes
        # that step through the client's private sender thread; recheck it when upgrading kafka-python.
        logger.warning("closing the producer with records still pending; they are abandoned")
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(timeout_s)
        producer._closed = True
        return False
