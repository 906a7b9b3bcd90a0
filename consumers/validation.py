"""Decode and validate one Kafka record value into a typed `Reading` or a `Rejection`.

The contract, checked in this order:

- The value is present, at most `MAX_VALUE_BYTES` long, and strict UTF-8. A leading
  byte-order mark is rejected: RFC 8259 says JSON text must not start with one, and the
  producer never sends one.
- The text is one JSON object with no duplicate keys and no `NaN`, `Infinity` or
  `-Infinity` tokens. Numbers that overflow a float (such as `1e999`) are rejected as
  not finite.
- `machine_id` is a string of 1 to 64 letters, digits, `.`, `_` or `-`.
- `timestamp` is an ISO-8601 date and time with `Z`, a UTC offset, or no zone (taken as
  UTC). It is stored as UTC text with milliseconds, `2026-12-04T08:00:00.123Z`.
  A timestamp more than `MAX_FUTURE_SKEW_S` (one day) ahead of the consumer's clock is rejected,
  because it would hold alert cooldowns and charts in the future. A timestamp before
  1970-01-01 is rejected as a wrong sensor clock: matplotlib cannot draw years before 1,
  and the stored text keeps a four-digit year, so text order stays time order. Other old
  timestamps are accepted so that replays of history work.
- `temperature`, `pressure` and `vibration` are finite JSON numbers (not strings, not
  booleans) inside the accepted bounds from the settings, ends included.
- `seq`, when present and not null, is an integer from 1 to 2**63 - 1 (SQLite's
  INTEGER range), not a boolean and not a float such as `1.0`.
- Unknown extra fields are ignored.

Every rejection reason names the field and shows its value, shortened to
`MAX_SHOWN_CHARS`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from utils.utils_config import Settings

# A reading is about 150 bytes. The cap keeps a hostile or broken producer from making
# the consumer parse megabytes per record, and it bounds nesting depth as well.
MAX_VALUE_BYTES = 16 * 1024
MAX_FUTURE_SKEW_S = 24 * 3600.0
MAX_SEQ = 2**63 - 1
MAX_SHOWN_CHARS = 80

MACHINE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# fromisoformat() also takes a bare date or week dates; a reading needs a date and a time.
TIMESTAMP_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
CANONICAL_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
UTF8_BOM = b"\xef\xbb\xbf"
METRICS = ("temperature", "pressure", "vibration")
JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


@dataclass(slots=True)
class Reading:
    """One validated sensor reading; `timestamp` is UTC text, `timestamp_s` the same instant in Unix seconds."""

    machine_id: str
    timestamp: str
    timestamp_s: float
    temperature: float
    pressure: float
    vibration: float
    seq: int | None


@dataclass(slots=True)
class Rejection:
    """A record value that breaks the contract, with a reason that names the field and the value."""

    reason: str


class _InvalidValue(ValueError):
    """Raised inside the JSON hooks; its message becomes the rejection reason."""


def show(value: Any) -> str:
    """Format a value for a rejection reason or a log line as JSON (bytes as `repr`), cut to `MAX_SHOWN_CHARS`."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > MAX_SHOWN_CHARS:
        text = text[: MAX_SHOWN_CHARS - 3] + "..."
    return text


def _reject_constant(token: str) -> None:
    raise _InvalidValue(f"invalid JSON number {token}: NaN and Infinity are not allowed")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _InvalidValue(f"duplicate JSON key {show(key)}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant)


def decode_object(raw: bytes | None) -> dict[str, Any] | Rejection:
    """Decode a raw record value into a JSON object, or a `Rejection` saying why it is not one."""
    if raw is None:
        return Rejection("value is missing (null record value)")
    if len(raw) == 0:
        return Rejection("value is empty")
    if len(raw) > MAX_VALUE_BYTES:
        return Rejection(f"value is too large: {len(raw)} bytes, at most {MAX_VALUE_BYTES}")
    if raw.startswith(UTF8_BOM):
        return Rejection("value starts with a UTF-8 byte-order mark")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejection(f"value is not UTF-8: invalid byte {show(raw[error.start:error.start + 1])} "
                         f"at position {error.start}")

    try:
        obj = _DECODER.decode(text)
    except _InvalidValue as error:
        return Rejection(str(error))
    except RecursionError:
        return Rejection("invalid JSON: nested too deeply")
    except ValueError as error:  # JSONDecodeError, and int() on more than 4300 digits.
        return Rejection(f"invalid JSON: {error}")

    if not isinstance(obj, dict):
        return Rejection(f"value is a JSON {JSON_TYPE_NAMES.get(type(obj), 'value')}, expected an object")
    return obj


def parse_timestamp(value: Any, now_s: float | None = None) -> tuple[str, float] | str:
    """Normalise an ISO-8601 timestamp to UTC millisecond text and Unix seconds, or return the reason it is invalid.

    `now_s` is the consumer clock in Unix seconds (default: now), for the future-skew check.
    """
    if not isinstance(value, str):
        return f"timestamp {show(value)} is not a string"
    if not TIMESTAMP_PREFIX.match(value):
        return f"timestamp {show(value)} is not an ISO-8601 date and time"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return f"timestamp {show(value)} is not an ISO-8601 date and time"

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        timestamp_s = moment.timestamp()
    except (OverflowError, ValueError):
        return f"timestamp {show(value)} is out of range"

    if timestamp_s < 0:
        return f"timestamp {show(value)} is before 1970-01-01, so the sensor clock is wrong"
    now_s = time.time() if now_s is None else now_s
    if timestamp_s - now_s > MAX_FUTURE_SKEW_S:
        return f"timestamp {show(value)} is more than {MAX_FUTURE_SKEW_S / 3600:g} hours ahead of the consumer clock"

    if CANONICAL_TIMESTAMP.fullmatch(value):
        return value, timestamp_s  # Already the stored form; strftime() below is the slow part.
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:
        return f"timestamp {show(value)} is out of range"
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return text, timestamp_s


def _number(obj: dict[str, Any], field: str, bounds: tuple[float, float]) -> float | str:
    """Return the field as a float inside `bounds`, or the reason it is invalid."""
    if field not in obj:
        return f"{field} is missing"
    value = obj[field]
    if type(value) not in (int, float):  # type() and not isinstance(): bool is an int subclass.
        return f"{field} {show(value)} is not a JSON number"
    low, high = bounds
    if not low <= value <= high:  # Compared before float(): an int may be too large for one.
        if isinstance(value, float) and not math.isfinite(value):
            return f"{field} {show(value)} is not a finite number"
        return f"{field} {show(value)} is outside the accepted range {low:g} to {high:g}"
    return float(value)


def _seq(obj: dict[str, Any]) -> int | None | str:
    value = obj.get("seq")
    if value is None:
        return None
    if type(value) is not int:
        return f"seq {show(value)} is not an integer"
    if not 1 <= value <= MAX_SEQ:
        return f"seq {show(value)} is outside the accepted range 1 to {MAX_SEQ}"
    return value


def validate_value(raw: bytes | None, settings: Settings, now_s: float | None = None) -> Reading | Rejection:
    """Validate one raw record value against the reading contract described in this module.

    `now_s` is the consumer clock in Unix seconds (default: now), for the future-skew check.
    """
    obj = decode_object(raw)
    if isinstance(obj, Rejection):
        return obj

    machine_id = obj.get("machine_id")
    if "machine_id" not in obj:
        return Rejection("machine_id is missing")
    if not isinstance(machine_id, str) or not MACHINE_ID.fullmatch(machine_id):
        return Rejection(f"machine_id {show(machine_id)} is not 1 to 64 letters, digits, '.', '_' or '-'")

    if "timestamp" not in obj:
        return Rejection("timestamp is missing")
    timestamp = parse_timestamp(obj["timestamp"], now_s)
    if isinstance(timestamp, str):
        return Rejection(timestamp)

    values = []
    for field, bounds in (("temperature", settings.temperature_bounds_c),
                          ("pressure", settings.pressure_bounds_kpa),
                          ("vibration", settings.vibration_bounds_mm_s)):
        value = _number(obj, field, bounds)
        if isinstance(value, str):
            return Rejection(value)
        values.append(value)

    seq = _seq(obj)
    if isinstance(seq, str):
        return Rejection(seq)

    return Reading(machine_id, timestamp[0], timestamp[1], values[0], values[1], values[2], seq)
