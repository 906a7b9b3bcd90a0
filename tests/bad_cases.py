"""Record values that break, or only just keep, the reading contract, and what the consumer must do with each.

`value` is the raw Kafka record value (None: a record with no value). `expect` is
"reject" (a row in `rejects` whose reason contains every text in `reason_contains`, no row
in `readings`) or "store" (exactly one row in `readings`). Stored cases use machine ids of
their own, `M-101` and up, so a test can find their rows.

The first block is the project's shared list of bad inputs; the second adds the usual
suspects: duplicate keys, deep nesting, a 1 MB value, a byte-order mark, control
characters and SQL in `machine_id`, far-future timestamps, booleans and odd `seq` values.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class BadCase:
    id: str
    about: str
    value: bytes | None
    expect: str
    reason_contains: tuple[str, ...] = ()
    machine_id: str | None = None  # For stored cases: the machine id to find the row by.


def reading_json(**fields) -> bytes:
    """Return a valid reading as UTF-8 JSON bytes, with `fields` replacing or adding keys (None removes one)."""
    reading = {"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": 71.5,
               "pressure": 301.2, "vibration": 2.4, "seq": 1}
    for key, value in fields.items():
        if value is None:
            reading.pop(key, None)
        else:
            reading[key] = value
    return json.dumps(reading).encode("utf-8")


def text(value: str) -> bytes:
    return value.encode("utf-8")


SHARED_CASES = [
    BadCase("empty-value", "zero-length value", b"", "reject", ("value is empty",)),
    BadCase("null-value", "Kafka record with no value (tombstone)", None, "reject", ("value is missing",)),
    BadCase("not-json", "plain text instead of JSON", text("temperature is fine"), "reject", ("invalid JSON",)),
    BadCase("truncated-json", "JSON cut off mid-number",
            text('{"machine_id": "M-001", "temperature": 7'), "reject", ("invalid JSON",)),
    BadCase("json-array", "a JSON array instead of an object",
            text('[{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": 71.5, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}]'), "reject", ("JSON array", "expected an object")),
    BadCase("missing-temperature", "required field absent",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "pressure": 301.2, '
                 '"vibration": 2.4, "seq": 1}'), "reject", ("temperature is missing",)),
    BadCase("temperature-string", "number sent as a string",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": "72.5", '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "reject", ("temperature", '"72.5"')),
    BadCase("nan-literal", "NaN token, which json.loads accepts by default",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": NaN, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "reject", ("NaN",)),
    BadCase("infinity-literal", "Infinity token",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": 71.5, '
                 '"pressure": Infinity, "vibration": 2.4, "seq": 1}'), "reject", ("Infinity",)),
    BadCase("timestamp-z", "UTC timestamp with Z",
            text('{"timestamp": "2026-12-04T08:00:01Z", "machine_id": "M-101", "temperature": 71.5, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "store", machine_id="M-101"),
    BadCase("timestamp-offset", "timestamp with +02:00 offset, stored as UTC",
            text('{"timestamp": "2026-12-04T10:00:02+02:00", "machine_id": "M-102", "temperature": 71.5, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "store", machine_id="M-102"),
    BadCase("timestamp-naive", "timestamp without zone, taken as UTC",
            text('{"timestamp": "2026-12-04T08:00:03", "machine_id": "M-103", "temperature": 71.5, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "store", machine_id="M-103"),
    BadCase("timestamp-garbage", "timestamp that is not a date",
            text('{"timestamp": "yesterday", "machine_id": "M-001", "temperature": 71.5, "pressure": 301.2, '
                 '"vibration": 2.4, "seq": 1}'), "reject", ("timestamp", '"yesterday"')),
    BadCase("machine-id-empty", "empty machine_id",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "", "temperature": 71.5, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "reject", ("machine_id", '""')),
    BadCase("non-utf8", "bytes that are not UTF-8", base64.b64decode("//57Im1hY2hpbmVfaWQiOiAiTS0wMDEifQ=="),
            "reject", ("not UTF-8",)),
    BadCase("extra-fields", "unknown extra fields are ignored",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-104", "temperature": 71.5, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1, "firmware": "2.1.0", "line": "B"}'),
            "store", machine_id="M-104"),
    BadCase("temperature-out-of-bounds", "physically impossible temperature",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": 100000.0, '
                 '"pressure": 301.2, "vibration": 2.4, "seq": 1}'), "reject", ("temperature", "100000.0")),
    BadCase("pressure-negative", "negative absolute pressure",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "temperature": 71.5, '
                 '"pressure": -5.0, "vibration": 2.4, "seq": 1}'), "reject", ("pressure", "-5.0")),
]

OWN_CASES = [
    BadCase("duplicate-key", "the same key twice; json.loads would keep the last one silently",
            text('{"timestamp": "2026-12-04T08:00:00.000Z", "machine_id": "M-001", "machine_id": "M-002", '
                 '"temperature": 71.5, "pressure": 301.2, "vibration": 2.4, "seq": 1}'),
            "reject", ("duplicate JSON key", '"machine_id"')),
    BadCase("deep-nesting", "5,000 nested arrays inside the size limit",
            text('{"machine_id": "M-001", "x": ' + "[" * 5000 + "]" * 5000 + "}"), "reject", ("nested too deeply",)),
    BadCase("deep-nesting-large", "50,000 nested objects, over the size limit",
            text('{"a": ' * 50000 + "1" + "}" * 50000), "reject", ("too large",)),
    # 1,000,000 bytes: Kafka's default max message size (1,048,588 bytes) still lets it through.
    BadCase("one-megabyte", "a 1 MB value with a valid reading inside",
            reading_json(padding="x" * (1_000_000 - len(reading_json(padding="")))), "reject", ("too large",)),
    BadCase("byte-order-mark", "UTF-8 byte-order mark before valid JSON",
            b"\xef\xbb\xbf" + reading_json(machine_id="M-001"), "reject", ("byte-order mark",)),
    BadCase("machine-id-newline", "control character in machine_id",
            reading_json(machine_id="M-001\n"), "reject", ("machine_id", '"M-001\\n"')),
    BadCase("machine-id-nul", "NUL character in machine_id", reading_json(machine_id="M-\u0000001"),
            "reject", ("machine_id",)),
    BadCase("machine-id-sql", "SQL in machine_id", reading_json(machine_id="M-001'; DROP TABLE readings;--"),
            "reject", ("machine_id", "DROP TABLE")),
    BadCase("machine-id-too-long", "machine_id of 65 characters", reading_json(machine_id="M" * 65),
            "reject", ("machine_id",)),
    BadCase("machine-id-number", "machine_id as a number", reading_json(machine_id=1), "reject", ("machine_id", "1")),
    BadCase("machine-id-non-ascii", "Greek capital Mu in machine_id", reading_json(machine_id="\u039c-001"),
            "reject", ("machine_id",)),
    BadCase("timestamp-far-future", "timestamp in 2099", reading_json(timestamp="2099-01-01T00:00:00Z"),
            "reject", ("timestamp", "2099-01-01T00:00:00Z", "ahead")),
    BadCase("timestamp-year-1", "timestamp in year 1, which matplotlib cannot draw",
            reading_json(timestamp="0001-01-01T00:00:00Z"), "reject", ("timestamp", "0001-01-01T00:00:00Z", "1970")),
    BadCase("timestamp-before-epoch", "timestamp one second before 1970",
            reading_json(timestamp="1969-12-31T23:59:59Z"), "reject", ("timestamp", "before 1970")),
    BadCase("timestamp-number", "timestamp as Unix seconds", reading_json(timestamp=1796371200),
            "reject", ("timestamp", "1796371200")),
    BadCase("timestamp-date-only", "a date without a time", reading_json(timestamp="2026-12-04"),
            "reject", ("timestamp", '"2026-12-04"')),
    BadCase("temperature-boolean", "true is not a number", reading_json(temperature=True),
            "reject", ("temperature", "true")),
    BadCase("temperature-overflow", "1e999 parses as an infinite float",
            text(reading_json().decode().replace("71.5", "1e999")), "reject", ("temperature", "Infinity", "not a finite number")),
    BadCase("temperature-huge-int", "an integer with 5,000 digits",
            text(reading_json().decode().replace("71.5", "9" * 5000)), "reject", ("invalid JSON",)),
    BadCase("vibration-object", "an object instead of a number", reading_json(vibration={"rms": 2.4}),
            "reject", ("vibration",)),
    BadCase("vibration-missing", "vibration absent", reading_json(vibration=None), "reject", ("vibration is missing",)),
    BadCase("seq-zero", "seq 0", reading_json(seq=0), "reject", ("seq", "0")),
    BadCase("seq-negative", "seq -3", reading_json(seq=-3), "reject", ("seq", "-3")),
    BadCase("seq-float", "seq 1.0", reading_json(seq=1.0), "reject", ("seq", "1.0")),
    BadCase("seq-boolean", "seq true", reading_json(seq=True), "reject", ("seq", "true")),
    BadCase("seq-too-large", "seq beyond SQLite's 64-bit INTEGER", reading_json(seq=2**63), "reject", ("seq",)),
    BadCase("json-string", "a JSON string instead of an object", text('"M-001 71.5"'), "reject", ("JSON string",)),
    BadCase("seq-null", "seq null counts as absent", reading_json(machine_id="M-105", seq=None) , "store",
            machine_id="M-105"),
    BadCase("integer-values", "whole numbers are JSON numbers too",
            reading_json(machine_id="M-106", temperature=72, pressure=300, vibration=2), "store", machine_id="M-106"),
    BadCase("machine-id-max-length", "machine_id of exactly 64 characters",
            reading_json(machine_id="M-107" + "x" * 59), "store", machine_id="M-107" + "x" * 59),
]

ALL_CASES = SHARED_CASES + OWN_CASES
