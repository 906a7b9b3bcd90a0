"""Bad records streamed into a running consumer CLI in separate batches, with odd keys, headers and compression.

`tests/test_consumer_integration.py` already sends every case of `tests/bad_cases.py`
(the shared list plus duplicate keys, deep nesting, a 1 MB value, a byte-order mark,
control characters and SQL in `machine_id`, far-future timestamps) in one run and checks
the rows and reasons. This test adds what that one leaves out:
- records that arrive while the consumer runs, one group at a time;
- keys and `fault` headers that are not UTF-8, empty, repeated or large;
- a gzip-compressed batch;
- per-partition checks that the committed offset never passes a record that is neither
  in `readings` nor in `rejects`.
"""

from __future__ import annotations

import signal
from pathlib import Path

from kafka import KafkaProducer

from tests.bad_cases import ALL_CASES, reading_json
from tests.helpers import cli_env
from tests.reliability.common import (committed_offsets, end_offsets, kill_leftovers, output_of, query,
                                      start_consumer, stop_process, stored_count, summary_of, wait_for)

# (key, value, headers, machine_id) of valid readings with odd keys or headers: each must be stored once.
ODD_ENVELOPES = [
    (b"\xff\xfe\x00", reading_json(machine_id="M-110"), [], "M-110"),
    (b"", reading_json(machine_id="M-111"), [("fault", b"\xff\xfe-not-utf8")], "M-111"),
    (None, reading_json(machine_id="M-112"), [("fault", b"")], "M-112"),
    (b"M-113", reading_json(machine_id="M-113"), [("fault", b"spike"), ("fault", b"normal")], "M-113"),
    (b"M-114", reading_json(machine_id="M-114"), [("fault", b"x" * 100_000)], "M-114"),
    (b"k" * 100_000, reading_json(machine_id="M-115"), [("other", b"\x00" * 10)], "M-115"),
]


def send(bootstrap: str, topic: str, records: list[tuple], compression: str | None = None) -> None:
    """Send (key, value, headers) records and wait until the broker acknowledged each one."""
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5,
                             compression_type=compression, max_request_size=2_000_000)
    try:
        futures = [producer.send(topic, key=key, value=value, headers=headers) for key, value, headers in records]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def record_groups() -> list[tuple[list[tuple], str | None]]:
    """Split the bad cases and odd envelopes into four groups, each followed by a valid reading; one is gzip."""
    cases = [(case.id.encode(), case.value, []) for case in ALL_CASES]
    odd = [(key, value, headers) for key, value, headers, _ in ODD_ENVELOPES]
    quarter = len(cases) // 3
    groups = [cases[:quarter], cases[quarter:2 * quarter], cases[2 * quarter:], odd]
    for number, group in enumerate(groups, start=1):
        group.append((b"M-120", reading_json(machine_id="M-120", seq=number), [("fault", b"normal")]))
    return [(groups[0], None), (groups[1], "gzip"), (groups[2], None), (groups[3], None)]


def test_bad_records_streamed_never_fatal(kafka_bootstrap, kafka_settings, topic, tmp_path):
    env = cli_env(tmp_path, kafka_bootstrap, topic)
    db_path = Path(env["SQLITE_PATH"])
    group = env["CONSUMER_GROUP_ID"]
    log_path = tmp_path / "consumer.out"
    sent = 0
    consumer = None
    try:
        consumer = start_consumer(env, log_path)
        for records, compression in record_groups():
            send(kafka_bootstrap, topic, records, compression)
            sent += len(records)
            wait_for(lambda: stored_count(db_path) >= sent, 60, f"{sent} records in readings or rejects")
            assert consumer.poll() is None, output_of(log_path)[-3000:]
        ends = end_offsets(kafka_bootstrap, topic)
        wait_for(lambda: committed_offsets(kafka_settings, group) == ends, 30, "offsets committed to the end")
        status, _ = stop_process(consumer, signal.SIGTERM, 30)
    finally:
        kill_leftovers(consumer)

    output = output_of(log_path)
    assert status == 0, output[-3000:]
    assert "Traceback" not in output
    assert sum(ends.values()) == sent
    for partition, end in ends.items():
        offsets = sorted(row[0] for row in query(
            db_path, "SELECT offset FROM readings WHERE topic = ? AND partition = ? UNION ALL "
                     "SELECT offset FROM rejects WHERE topic = ? AND partition = ?", topic, partition, topic, partition))
        assert offsets == list(range(end)), f"partition {partition}: a record is missing or stored twice"

    reject_cases = [case for case in ALL_CASES if case.expect == "reject"]
    store_cases = [case for case in ALL_CASES if case.expect == "store"]
    assert query(db_path, "SELECT COUNT(*) FROM rejects") == [(len(reject_cases),)]
    summary = summary_of(output)
    assert summary["consumed"] == sent
    assert summary["rejected"] == len(reject_cases)
    assert summary["stored"] == len(store_cases) + len(ODD_ENVELOPES) + 4
    for _, _, _, machine in ODD_ENVELOPES:
        assert query(db_path, "SELECT COUNT(*) FROM readings WHERE machine_id = ?", machine) == [(1,)], machine
    assert query(db_path, "SELECT seq FROM readings WHERE machine_id = 'M-120' ORDER BY seq") == [(1,), (2,), (3,), (4,)]

    truths = dict(query(db_path, "SELECT machine_id, ground_truth FROM readings WHERE machine_id IN "
                                 "('M-111', 'M-112', 'M-113', 'M-114', 'M-115')"))
    assert truths["M-111"] == "\ufffd\ufffd-not-utf8"
    assert truths["M-112"] == ""
    assert truths["M-113"] == "spike"
    assert len(truths["M-114"]) == 64
    assert truths["M-115"] is None
