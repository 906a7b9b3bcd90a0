"""Integration: the real broker takes a JSON message and gives it back."""

import json

from utils.utils_consumer import create_consumer
from utils.utils_kafka import check_broker
from utils.utils_producer import create_producer


def test_broker_answers_metadata(kafka_settings):
    check_broker(kafka_settings)


def test_json_message_roundtrip(kafka_settings, topic):
    producer = create_producer(kafka_settings)
    reading = {"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": 71.5,
               "pressure": 301.2, "vibration": 2.4, "seq": 1}
    metadata = producer.send(topic, key=b"M-001", value=json.dumps(reading).encode()).get(timeout=30)
    producer.close(timeout=10)

    consumer = create_consumer(kafka_settings, group_id=f"{topic}-group")
    consumer.subscribe([topic])
    received = []
    for _ in range(30):
        for records in consumer.poll(timeout_ms=1000).values():
            received.extend(records)
        if received:
            break
    consumer.close()

    assert len(received) == 1
    assert received[0].partition == metadata.partition
    assert received[0].key == b"M-001"
    assert json.loads(received[0].value) == reading
