"""Kafka helpers shared by the producer and the consumer: client settings, the broker check and the topic."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from loguru import logger

from utils.utils_config import Settings

START_HINT = "start the local broker with `make kafka-start`, or set KAFKA_BOOTSTRAP_SERVERS to a running broker"


class BrokerUnavailable(RuntimeError):
    """No broker responded at the configured address; the message is one line a user can act on."""


def client_config(settings: Settings, role: str) -> dict[str, Any]:
    """Return the kafka-python keyword arguments every client needs: address, client id and security.

    `role` ("producer", "consumer", "admin") is appended to the client id so broker logs
    tell the processes apart. Secrets are passed through untouched and never logged here.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": f"{settings.client_id}-{role}",
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        config.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                      sasl_plain_password=settings.sasl_password)
    if settings.security_protocol.endswith("SSL"):
        config["ssl_check_hostname"] = True
        for option, value in (("ssl_cafile", settings.ssl_cafile), ("ssl_certfile", settings.ssl_certfile),
                              ("ssl_keyfile", settings.ssl_keyfile), ("ssl_password", settings.ssl_password)):
            if value:
                config[option] = value
    return config


def create_admin(settings: Settings, timeout_s: float = 10.0) -> KafkaAdminClient:
    """Connect an admin client, raising `BrokerUnavailable` when no broker responds within `timeout_s`."""
    timeout_ms = int(timeout_s * 1000)
    try:
        return KafkaAdminClient(**client_config(settings, "admin"), bootstrap_timeout_ms=timeout_ms,
                                request_timeout_ms=timeout_ms)
    except (KafkaError, OSError) as error:
        raise broker_unavailable(settings, error) from None


def broker_unavailable(settings: Settings, error: BaseException) -> BrokerUnavailable:
    """Build the one-line error for a broker that does not respond at start."""
    hint = START_HINT
    if settings.security_protocol != "PLAINTEXT":
        # kafka-python 3.0 reports a rejected login or TLS handshake as a bootstrap timeout too.
        hint += (f"; with KAFKA_SECURITY_PROTOCOL={settings.security_protocol}, also check the SASL user, "
                 f"password and mechanism and the SSL files")
    return BrokerUnavailable(f"no Kafka broker answered at {settings.bootstrap_servers} "
                             f"({type(error).__name__}): {hint}")


def check_broker(settings: Settings, timeout_s: float = 10.0) -> None:
    """Raise `BrokerUnavailable` unless a broker responds to a metadata request within `timeout_s`."""
    admin = create_admin(settings, timeout_s)
    try:
        admin.list_topics()
    except (KafkaError, OSError) as error:
        raise broker_unavailable(settings, error) from None
    finally:
        admin.close()


def ensure_topic(settings: Settings, topic: str | None = None, timeout_s: float = 10.0) -> bool:
    """Create the topic with the configured partitions and replication when it is missing.

    Returns True when this call created it. An existing topic is never deleted or changed;
    when its partition count, replication factor or min.insync.replicas differ from the settings,
    a WARNING is logged.
    Either way, it waits up to `timeout_s` until every partition has a leader.
    """
    name = topic or settings.topic
    admin = create_admin(settings, timeout_s)
    try:
        created = False
        if name in admin.list_topics():
            _warn_on_differences(admin, settings, name)
        else:
            created = _create_topic(admin, settings, name, timeout_s)
        _wait_for_leaders(admin, name, timeout_s)
        return created
    finally:
        admin.close()


def _create_topic(admin: KafkaAdminClient, settings: Settings, name: str, timeout_s: float) -> bool:
    new_topic = NewTopic(name=name, num_partitions=settings.topic_partitions,
                         replication_factor=settings.replication_factor,
                         topic_configs={"min.insync.replicas": str(settings.min_insync_replicas)})
    try:
        admin.create_topics([new_topic], timeout_ms=int(timeout_s * 1000))
    except TopicAlreadyExistsError:
        return False  # Another process created it between the listing and this call.
    logger.info("created topic={} partitions={} replication_factor={} min_insync_replicas={}", name,
                settings.topic_partitions, settings.replication_factor, settings.min_insync_replicas)
    return True


def _wait_for_leaders(admin: KafkaAdminClient, name: str, timeout_s: float) -> None:
    """Wait until every partition of a topic has a leader, logging a WARNING if it takes longer than `timeout_s`.

    A consumer that joins its group while a new topic has no partition metadata yet was
    seen to get no partitions at all until the next rebalance, so clients start only after this.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            partitions = admin.describe_topics([name])[0]["partitions"]
            if partitions and all(partition["leader_id"] >= 0 for partition in partitions):
                return
        except (KafkaError, OSError, KeyError, IndexError) as error:
            logger.debug("describing topic={} failed while waiting for leaders: {!r}", name, error)
        if time.monotonic() >= deadline:
            logger.warning("topic={} still has partitions without a leader after {:.0f} s; continuing", name,
                           timeout_s)
            return
        time.sleep(0.2)


def _warn_on_differences(admin: KafkaAdminClient, settings: Settings, name: str) -> None:
    # kafka-python 3 returns plain dicts from describe_topics and describe_configs.
    try:
        partitions = admin.describe_topics([name])[0]["partitions"]
        replication = len(partitions[0]["replica_nodes"]) if partitions else 0
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        min_isr = configs["topic"][name]["min.insync.replicas"]["value"]
    except (KafkaError, OSError, KeyError, IndexError, TypeError) as error:
        logger.warning("could not describe topic={} to compare it with the settings: {!r}", name, error)
        return
    expected = (settings.topic_partitions, settings.replication_factor, str(settings.min_insync_replicas))
    found = (len(partitions), replication, min_isr)
    if found != expected:
        logger.warning(
            "topic={} exists with partitions={} replication_factor={} min_insync_replicas={}, settings ask for "
            "{} / {} / {}; it is used as it is (change it with Kafka's tools, this project never alters a topic)",
            name, *found, *expected)
