"""The wire format of one sensor reading, shared by the simulation and the Kafka producer.

Value: a UTF-8 JSON object such as
`{"timestamp":"2026-12-04T08:00:00.123Z","machine_id":"M-001","temperature":71.53,
"pressure":301.2,"vibration":2.41,"seq":1}`. Units: temperature in °C (2 decimals),
pressure in kPa (1 decimal), vibration in mm/s RMS (2 decimals). `seq` counts each
machine's readings from 1. Key: `machine_id` as UTF-8 bytes. One header, `fault`, carries
the simulator's ground truth (`normal` or a fault name) for scoring, never for detection.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

FAULT_HEADER = "fault"
NORMAL = "normal"
FAULT_KINDS = ("overheating", "pressure_loss", "bearing_wear", "spike")
LABELS = (NORMAL, *FAULT_KINDS)
FIELDS = ("timestamp", "machine_id", "temperature", "pressure", "vibration", "seq")

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def machine_id(number: int) -> str:
    """Format the id of machine `number` (1-based): `M-001`, `M-002`, …"""
    return f"M-{number:03d}"


@lru_cache(maxsize=4)
def _second_prefix(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s))


def format_timestamp(epoch_ms: int) -> str:
    """Format Unix time in milliseconds as ISO-8601 UTC with millisecond precision and `Z`."""
    epoch_s, millis = divmod(epoch_ms, 1000)
    return f"{_second_prefix(epoch_s)}.{millis:03d}Z"


def encode_value(message: dict[str, Any]) -> bytes:
    """Serialize a reading to compact UTF-8 JSON; raises ValueError on NaN or Infinity."""
    return _ENCODER.encode(message).encode("utf-8")
