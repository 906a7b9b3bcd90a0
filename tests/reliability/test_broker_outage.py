"""Broker outage: the broker stops while the producer and consumer CLIs run, and comes back.

The test stops the broker, so it runs one of its own on a free loopback port with its
data in a temporary folder, and never touches the session's broker.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import time
from pathlib import Path

import pytest

from broker import local_kafka
from broker.node_config import cluster_nodes
from tests.helpers import cli_env, unique_name
from tests.reliability.common import (assert_stored_exactly_once, expected_readings, kill_leftovers, output_of,
                                      start_consumer, start_producer, stop_process, stored_count, summary_of,
                                      wait_committed_to_end, wait_for)
from tests.test_sasl import free_port_pair
from utils.utils_config import load_settings
from utils.utils_kafka import ensure_topic

MACHINES = 5
WARNING_LINE = re.compile(r"^\S+ (WARNING|ERROR)\s", re.MULTILINE)
OUTAGE_LIMIT_S = 30.0  # The broker is started again at most this long after it stopped.


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    """Start a broker of this module's own and yield its nodes; stop it at the end."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("KAFKA_LOCAL_DIR", str(tmp_path_factory.mktemp("outage-kafka")))
    nodes = cluster_nodes(free_port_pair(), 1)
    try:
        local_kafka.start(nodes)
    except local_kafka.BrokerToolError as error:
        pytest.fail(f"the broker for the outage test could not start: {error}", pytrace=False)
    yield nodes
    local_kafka.stop_nodes(nodes)
    monkeypatch.undo()


def test_outage_both_recover(own_broker, tmp_path):
    bootstrap = own_broker[0].address
    settings = load_settings(bootstrap_servers=bootstrap)
    topic = unique_name("outage-sensors")
    ensure_topic(dataclasses.replace(settings, topic_partitions=3), topic)
    env = cli_env(tmp_path, bootstrap, topic)
    db_path = Path(env["SQLITE_PATH"])
    consumer_log, producer_log = tmp_path / "consumer.out", tmp_path / "producer.out"
    consumer = producer = None
    try:
        consumer = start_consumer(env, consumer_log)
        producer = start_producer(env, producer_log, count=0, rate=200, seed=107, machines=MACHINES)
        wait_for(lambda: stored_count(db_path) >= 400, 60, "400 stored rows before the outage")

        consumer_before = len(output_of(consumer_log))
        producer_before = len(output_of(producer_log))
        stopped_s = time.monotonic()
        local_kafka.stop_nodes(own_broker)
        rows_at_outage = stored_count(db_path)
        # The outage lasts until both CLIs have logged it, bounded so the restart begins within the limit.
        wait_for(lambda: WARNING_LINE.search(output_of(consumer_log)[consumer_before:])
                 and WARNING_LINE.search(output_of(producer_log)[producer_before:]),
                 OUTAGE_LIMIT_S - (time.monotonic() - stopped_s) - 1, "warnings of the outage in both logs")
        assert consumer.poll() is None
        assert producer.poll() is None
        assert time.monotonic() - stopped_s < OUTAGE_LIMIT_S
        local_kafka.start(own_broker)
        restarted_s = time.monotonic()

        # Both recovered when rows keep arriving: the producer delivers and the consumer stores.
        wait_for(lambda: stored_count(db_path) >= rows_at_outage + 1000, 120, "1000 more stored rows after the outage")
        recovery_s = time.monotonic() - restarted_s
        producer_status, _ = stop_process(producer, signal.SIGINT, 60)
        produced = summary_of(output_of(producer_log))
        wait_for(lambda: stored_count(db_path) >= produced["acknowledged"], 60, "every acknowledged reading stored")
        wait_committed_to_end(settings, env["CONSUMER_GROUP_ID"], bootstrap, topic)
        consumer_status, _ = stop_process(consumer, signal.SIGTERM, 30)
    finally:
        kill_leftovers(consumer, producer)
    print(f"outage: broker restarted {restarted_s - stopped_s:.1f} s after the stop; "
          f"both recovered {recovery_s:.1f} s after the restart")

    producer_output, consumer_output = output_of(producer_log), output_of(consumer_log)
    assert producer_status == 0, producer_output[-3000:]
    assert consumer_status == 0, consumer_output[-3000:]
    assert produced["failed"] == 0
    assert produced["acknowledged"] == produced["sent"]
    assert_stored_exactly_once(db_path, expected_readings(MACHINES, produced["sent"]))
    assert summary_of(consumer_output)["stored"] == produced["sent"]
    assert "Traceback" not in producer_output
    assert "Traceback" not in consumer_output
