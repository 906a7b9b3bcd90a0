"""Unit tests of record validation: every bad case of the table, plus timestamp and number edge cases."""

from __future__ import annotations

import json

import pytest

from consumers.validation import MAX_FUTURE_SKEW_S, Reading, Rejection, parse_timestamp, validate_value
from tests.bad_cases import ALL_CASES, reading_json
from utils.utils_config import load_settings

NOW_S = 1796371200.0  # 2026-12-04T08:00:00Z, so the table's timestamps are never in the future.


@pytest.fixture(scope="module")
def settings():
    return load_settings(env_file="/nonexistent/.env", environ={})


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.id for case in ALL_CASES])
def test_bad_case_outcome(case, settings):
    result = validate_value(case.value, settings, NOW_S)

    if case.expect == "store":
        assert isinstance(result, Reading), result
        assert result.machine_id == case.machine_id
    else:
        assert isinstance(result, Rejection), result
        for text in case.reason_contains:
            assert text in result.reason


def test_valid_reading_fields(settings):
    result = validate_value(reading_json(temperature=71.53, seq=7), settings, NOW_S)

    assert isinstance(result, Reading)
    assert result.machine_id == "M-001"
    assert result.timestamp == "2026-12-04T08:00:00.000Z"
    assert result.timestamp_s == NOW_S
    assert result.temperature == 71.53
    assert result.pressure == 301.2
    assert result.vibration == 2.4
    assert result.seq == 7


@pytest.mark.parametrize("text, expected", [
    ("2026-12-04T08:00:00.123Z", "2026-12-04T08:00:00.123Z"),
    ("2026-12-04T08:00:01Z", "2026-12-04T08:00:01.000Z"),
    ("2026-12-04T10:00:02+02:00", "2026-12-04T08:00:02.000Z"),
    ("2026-12-04T03:30:02.5-04:30", "2026-12-04T08:00:02.500Z"),
    ("2026-12-04T08:00:03", "2026-12-04T08:00:03.000Z"),
    ("2026-12-04 08:00:03.123456", "2026-12-04T08:00:03.123Z"),
    ("2026-12-05T01:00:00+02:00", "2026-12-04T23:00:00.000Z"),
])
def test_timestamp_normalised_to_utc(text, expected):
    result = parse_timestamp(text, NOW_S)

    assert isinstance(result, tuple), result
    assert result[0] == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-12-04", "2026-13-01T00:00:00Z", "2026-12-04T25:00:00Z",
                                  "0001-01-01T00:00:00+14:00", "2026-12-04T08:00:00.000z", ""])
def test_timestamp_invalid_rejected(text):
    result = parse_timestamp(text, NOW_S)

    assert isinstance(result, str)
    assert "timestamp" in result


def test_timestamp_future_skew_boundary():
    inside = parse_timestamp("2026-12-05T07:59:59Z", NOW_S)
    outside = parse_timestamp("2026-12-05T08:00:01Z", NOW_S)

    assert MAX_FUTURE_SKEW_S == 24 * 3600
    assert isinstance(inside, tuple)
    assert isinstance(outside, str)
    assert "ahead" in outside


def test_timestamp_old_accepted():
    assert isinstance(parse_timestamp("1999-01-01T00:00:00Z", NOW_S), tuple)
    assert parse_timestamp("1970-01-01T00:00:00Z", NOW_S)[0] == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize("field, low, high", [("temperature", -50, 400), ("pressure", 0, 5000),
                                              ("vibration", 0, 200)])
def test_bounds_inclusive(settings, field, low, high):
    for value in (low, high):
        assert isinstance(validate_value(reading_json(**{field: value}), settings, NOW_S), Reading)
    for value in (low - 0.001, high + 0.001):
        result = validate_value(reading_json(**{field: value}), settings, NOW_S)
        assert isinstance(result, Rejection)
        assert field in result.reason


def test_bounds_follow_settings():
    narrow = load_settings(env_file="/nonexistent/.env", environ={"VALID_TEMPERATURE_C": "0,100"})

    result = validate_value(reading_json(temperature=150.0), narrow, NOW_S)

    assert isinstance(result, Rejection)
    assert "0 to 100" in result.reason


def test_reason_value_shortened(settings):
    result = validate_value(reading_json(machine_id="x" * 5000), settings, NOW_S)

    assert isinstance(result, Rejection)
    assert len(result.reason) < 200


def test_duplicate_key_nested_rejected(settings):
    value = json.dumps({"machine_id": "M-001"})[:-1] + ', "meta": {"a": 1, "a": 2}}'

    result = validate_value(value.encode(), settings, NOW_S)

    assert isinstance(result, Rejection)
    assert '"a"' in result.reason
