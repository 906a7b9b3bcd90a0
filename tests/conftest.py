"""Session fixtures: the real Kafka broker at KAFKA_BOOTSTRAP_SERVERS, and fresh topics on it.

When no broker responds there, the project's local broker is started for the session and
stopped at its end. A broker that was already running is left running. A broker that cannot
start fails the run with its own error: integration tests are never skipped silently.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import pytest

from tests.helpers import unique_name
from utils.utils_config import Settings, load_settings
from utils.utils_kafka import create_admin, ensure_topic


@pytest.fixture(scope="session")
def kafka_settings() -> Iterator[Settings]:
    from broker import local_kafka
    from broker.node_config import cluster_nodes

    settings = load_settings()
    address = settings.bootstrap_servers.split(",")[0]
    started_nodes = []
    if not local_kafka.answers_metadata(address, 3.0):
        nodes = cluster_nodes(local_kafka.first_local_port(settings.bootstrap_servers), 1)
        try:
            local_kafka.start(nodes)
        except local_kafka.BrokerToolError as error:
            pytest.fail(f"the local Kafka broker could not start: {error}", pytrace=False)
        started_nodes = nodes
    yield settings
    if started_nodes:
        local_kafka.stop(started_nodes)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_settings: Settings) -> str:
    return kafka_settings.bootstrap_servers


@pytest.fixture
def topic(kafka_settings: Settings) -> Iterator[str]:
    """Create a fresh topic with 3 partitions for one test and delete it afterwards."""
    name = unique_name("test-sensors")
    ensure_topic(dataclasses.replace(kafka_settings, topic_partitions=3), name)
    yield name
    admin = create_admin(kafka_settings)
    try:
        admin.delete_topics([name])
    except Exception:  # noqa: BLE001 - cleanup must not hide the test's own result.
        pass
    finally:
        admin.close()
