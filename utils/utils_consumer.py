"""Create the kafka-python consumer from settings, with offsets committed by the caller only."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from utils.utils_config import Settings
from utils.utils_kafka import broker_unavailable, client_config


def create_consumer(settings: Settings, group_id: str | None = None, from_beginning: bool = True,
                    bootstrap_timeout_s: float = 10.0, **overrides: Any) -> KafkaConsumer:
    """Connect a consumer in `group_id` (default from settings) that is not yet subscribed.

    Auto-commit is off: the caller commits an offset only after the records before it are
    stored. No value_deserializer is set, because one that raises would make every poll
    of that record fail; the caller decodes and validates each value itself.
    `from_beginning` sets where a group with no committed offset starts.
    Raises `BrokerUnavailable` when no broker responds within `bootstrap_timeout_s`.
    """
    config: dict[str, Any] = {
        **client_config(settings, "consumer"),
        "group_id": group_id or settings.consumer_group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        "max_poll_records": 500,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 2_000,
        # The default grows to 30 s, so a restarted broker went unnoticed for up to 45 s.
        "reconnect_backoff_max_ms": 5_000,
        "bootstrap_timeout_ms": int(bootstrap_timeout_s * 1000),
    }
    config.update(overrides)
    try:
        return KafkaConsumer(**config)
    except (KafkaError, OSError) as error:
        raise broker_unavailable(settings, error) from None
