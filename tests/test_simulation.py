"""Unit tests of the machine simulation and the message encoding (no Kafka)."""

import json
import re
from collections import defaultdict
from datetime import datetime, timezone

import pytest

from producers.message import (FIELDS, LABELS, NORMAL, encode_value, encode_value_with_json, format_timestamp,
                               machine_id)
from producers.simulation import METRICS, NOISE_CLIP_SD, Machine, Plant

START_MS = 1_796_371_200_123  # 2026-12-04T08:00:00.123Z
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

# The normal bands documented in producers/simulation.py, and the consumer's default limits.
NORMAL_BANDS = {"temperature": (62.2, 77.8), "pressure": (285.5, 314.5), "vibration": (1.45, 3.35)}
ALERT_TEMPERATURE_MAX_C = 90.0
ALERT_PRESSURE_MIN_KPA = 250.0
ALERT_VIBRATION_MAX_MM_S = 7.1
VALIDATION_BOUNDS = {"temperature": (-50.0, 400.0), "pressure": (0.0, 5000.0), "vibration": (0.0, 200.0)}


def take(plant: Plant, count: int) -> list:
    return [plant.next_reading(START_MS + 100 * i) for i in range(count)]


def machine_band(machine: Machine, metric: str) -> tuple[float, float]:
    """Return the range a machine's normal readings of `metric` stay in: baseline ± (drift + clipped noise)."""
    model = next(m for m in METRICS if m.name == metric)
    baseline = machine.baselines[[m.name for m in METRICS].index(metric)]
    spread = model.drift_max + NOISE_CLIP_SD * model.noise_sd
    return (baseline - spread, baseline + spread)


def run_fault(kind: str, seed: int) -> tuple[Machine, list, object]:
    """Warm a machine up, start a fault of `kind`, and return the fault's readings plus the next one."""
    machine = Machine(1, seed, fault_rate=0.0)
    for i in range(50):
        machine.next_reading(START_MS + i)
    fault = machine.start_fault(kind)
    readings = [machine.next_reading(START_MS + 1000 + i) for i in range(len(fault.offsets))]
    after = machine.next_reading(START_MS + 2000)
    return machine, readings, after


def test_plant_same_seed_same_readings():
    first = take(Plant(4, seed=7, fault_rate=0.02), 3000)
    second = take(Plant(4, seed=7, fault_rate=0.02), 3000)

    assert first == second
    assert any(reading.label != NORMAL for reading in first)


def test_plant_other_seed_other_readings():
    first = take(Plant(4, seed=7, fault_rate=0.02), 200)
    second = take(Plant(4, seed=8, fault_rate=0.02), 200)

    assert [r.message for r in first] != [r.message for r in second]


def test_machine_readings_independent_of_plant_size():
    small = [r for r in take(Plant(2, seed=3, fault_rate=0.02), 2000) if r.message["machine_id"] == "M-001"]
    large = [r for r in take(Plant(5, seed=3, fault_rate=0.02), 5000) if r.message["machine_id"] == "M-001"]

    assert [(r.message["temperature"], r.message["pressure"], r.message["vibration"], r.label) for r in small] == \
        [(r.message["temperature"], r.message["pressure"], r.message["vibration"], r.label) for r in large]


def test_plant_machine_ids_in_turn():
    readings = take(Plant(3, seed=1, fault_rate=0.0), 7)

    assert [r.message["machine_id"] for r in readings] == ["M-001", "M-002", "M-003", "M-001", "M-002",
                                                           "M-003", "M-001"]
    assert machine_id(12) == "M-012"


def test_plant_rejects_zero_machines():
    with pytest.raises(ValueError, match="machines"):
        Plant(0, seed=1, fault_rate=0.0)


@pytest.mark.parametrize("fault_rate", [-0.1, 1.5])
def test_machine_rejects_invalid_fault_rate(fault_rate):
    with pytest.raises(ValueError, match="fault_rate"):
        Machine(1, seed=1, fault_rate=fault_rate)


def test_normal_readings_inside_bands():
    for seed in range(5):
        plant = Plant(10, seed=seed, fault_rate=0.0)
        readings = take(plant, 20_000)

        assert {r.label for r in readings} == {NORMAL}
        for metric, (low, high) in NORMAL_BANDS.items():
            values = [r.message[metric] for r in readings]
            assert min(values) >= low, f"seed={seed} {metric} min {min(values)}"
            assert max(values) <= high, f"seed={seed} {metric} max {max(values)}"


def test_normal_readings_inside_documented_ranges():
    readings = take(Plant(10, seed=11, fault_rate=0.0), 20_000)

    assert all(60.0 <= r.message["temperature"] <= 80.0 for r in readings)
    assert all(280.0 <= r.message["pressure"] <= 320.0 for r in readings)
    assert all(1.0 <= r.message["vibration"] <= 4.0 for r in readings)


def test_normal_readings_inside_machine_band():
    plant = Plant(5, seed=2, fault_rate=0.0)
    readings = take(plant, 10_000)
    machines = {m.machine_id: m for m in plant.machines}

    for reading in readings:
        machine = machines[reading.message["machine_id"]]
        for metric in NORMAL_BANDS:
            low, high = machine_band(machine, metric)
            assert low - 0.05 <= reading.message[metric] <= high + 0.05


def test_normal_readings_vary_and_drift():
    plant = Plant(1, seed=4, fault_rate=0.0)
    temperatures = [r.message["temperature"] for r in take(plant, 5000)]
    means = [sum(temperatures[i:i + 500]) / 500 for i in range(0, 5000, 500)]

    assert len(set(temperatures)) > 200
    assert max(means) - min(means) > 0.2


def test_machines_have_different_baselines():
    plant = Plant(10, seed=5, fault_rate=0.0)
    readings = take(plant, 10_000)

    for index, metric in enumerate(NORMAL_BANDS):
        baselines = [machine.baselines[index] for machine in plant.machines]
        assert len(set(baselines)) == len(baselines)
        by_machine = defaultdict(list)
        for reading in readings:
            by_machine[reading.message["machine_id"]].append(reading.message[metric])
        means = [sum(values) / len(values) for values in by_machine.values()]
        model = METRICS[index]
        assert max(means) - min(means) > (model.baseline_high - model.baseline_low) / 4, metric


def test_seq_contiguous_per_machine():
    readings = take(Plant(4, seed=6, fault_rate=0.05), 4001)
    seqs = defaultdict(list)
    for reading in readings:
        seqs[reading.message["machine_id"]].append(reading.message["seq"])

    assert sorted(seqs) == ["M-001", "M-002", "M-003", "M-004"]
    for machine, values in seqs.items():
        assert values == list(range(1, len(values) + 1)), machine


def test_faults_start_at_fault_rate():
    readings = take(Plant(5, seed=9, fault_rate=0.01), 50_000)
    labels_by_machine = defaultdict(list)
    for reading in readings:
        labels_by_machine[reading.message["machine_id"]].append(reading.label)
    starts = 0
    for labels in labels_by_machine.values():
        starts += sum(1 for before, now in zip([NORMAL] + labels, labels) if now != before and now != NORMAL)

    assert {r.label for r in readings} == set(LABELS)
    # About 0.01 x 48,000 normal readings start a fault; back-to-back episodes of one kind count once.
    assert 350 <= starts <= 600


def test_no_faults_at_rate_zero():
    assert {r.label for r in take(Plant(5, seed=9, fault_rate=0.0), 20_000)} == {NORMAL}


@pytest.mark.parametrize("seed", range(30))
def test_overheating_ramps_past_limit(seed):
    machine, readings, after = run_fault("overheating", seed)
    temperatures = [r.message["temperature"] for r in readings]
    _, high = machine_band(machine, "temperature")

    assert {r.label for r in readings} == {"overheating"}
    assert 6 <= len(readings) <= 12
    assert temperatures[0] > high + 5.0
    assert temperatures[2] > ALERT_TEMPERATURE_MAX_C + 3.0
    assert all(b > a + 5.0 for a, b in zip(temperatures, temperatures[1:]))
    assert max(temperatures) < VALIDATION_BOUNDS["temperature"][1]
    assert all(NORMAL_BANDS["pressure"][0] <= r.message["pressure"] <= NORMAL_BANDS["pressure"][1] for r in readings)
    assert after.label == NORMAL
    assert after.message["temperature"] <= high + 0.05


@pytest.mark.parametrize("seed", range(30))
def test_pressure_loss_drops_and_holds(seed):
    machine, readings, after = run_fault("pressure_loss", seed)
    pressures = [r.message["pressure"] for r in readings]
    low, _ = machine_band(machine, "pressure")

    assert {r.label for r in readings} == {"pressure_loss"}
    assert 5 <= len(readings) <= 10
    assert pressures[0] < low - 25.0
    assert all(p < ALERT_PRESSURE_MIN_KPA - 5.0 for p in pressures[1:])
    assert max(pressures[1:]) - min(pressures[1:]) < 20.0
    assert min(pressures) > VALIDATION_BOUNDS["pressure"][0]
    assert after.label == NORMAL
    assert after.message["pressure"] >= low - 0.05


@pytest.mark.parametrize("seed", range(30))
def test_bearing_wear_raises_vibration(seed):
    machine, readings, after = run_fault("bearing_wear", seed)
    vibrations = [r.message["vibration"] for r in readings]
    _, high = machine_band(machine, "vibration")

    assert {r.label for r in readings} == {"bearing_wear"}
    assert 6 <= len(readings) <= 12
    assert vibrations[0] > high + 1.0
    assert vibrations[2] > ALERT_VIBRATION_MAX_MM_S + 0.5
    assert all(b > a + 1.0 for a, b in zip(vibrations, vibrations[1:]))
    assert max(vibrations) < VALIDATION_BOUNDS["vibration"][1]
    assert after.label == NORMAL
    assert after.message["vibration"] <= high + 0.05


@pytest.mark.parametrize("seed", range(60))
def test_spike_moves_one_metric_once(seed):
    machine, readings, after = run_fault("spike", seed)

    assert len(readings) == 1
    assert readings[0].label == "spike"
    message = readings[0].message
    off_limit = {
        "temperature": message["temperature"] > ALERT_TEMPERATURE_MAX_C,
        "pressure": message["pressure"] < ALERT_PRESSURE_MIN_KPA,
        "vibration": message["vibration"] > ALERT_VIBRATION_MAX_MM_S,
    }
    assert sum(off_limit.values()) == 1
    for metric, beyond in off_limit.items():
        if not beyond:
            low, high = machine_band(machine, metric)
            assert low - 0.05 <= message[metric] <= high + 0.05
    assert after.label == NORMAL


def test_spike_covers_every_metric():
    metrics = set()
    for seed in range(60):
        _, readings, _ = run_fault("spike", seed)
        message = readings[0].message
        if message["temperature"] > ALERT_TEMPERATURE_MAX_C:
            metrics.add("temperature")
        if message["pressure"] < ALERT_PRESSURE_MIN_KPA:
            metrics.add("pressure")
        if message["vibration"] > ALERT_VIBRATION_MAX_MM_S:
            metrics.add("vibration")

    assert metrics == {"temperature", "pressure", "vibration"}


def test_start_fault_rejects_unknown_kind():
    with pytest.raises(ValueError, match="fault kind"):
        Machine(1, seed=1, fault_rate=0.0).start_fault("meltdown")


def test_fault_values_inside_validation_bounds():
    readings = take(Plant(5, seed=12, fault_rate=0.2), 50_000)

    for metric, (low, high) in VALIDATION_BOUNDS.items():
        values = [r.message[metric] for r in readings]
        assert min(values) > low, metric
        assert max(values) < high, metric


def test_message_fields_and_precision():
    for reading in take(Plant(3, seed=13, fault_rate=0.05), 3000):
        message = reading.message
        assert tuple(message) == FIELDS
        assert TIMESTAMP.fullmatch(message["timestamp"])
        assert isinstance(message["seq"], int)
        assert round(message["temperature"], 2) == message["temperature"]
        assert round(message["pressure"], 1) == message["pressure"]
        assert round(message["vibration"], 2) == message["vibration"]
        assert reading.label in LABELS


def test_format_timestamp_utc_milliseconds():
    assert format_timestamp(START_MS) == "2026-12-04T08:00:00.123Z"
    assert format_timestamp(START_MS + 877) == "2026-12-04T08:00:01.000Z"
    assert format_timestamp(5) == "1970-01-01T00:00:00.005Z"
    parsed = datetime.fromisoformat(format_timestamp(START_MS).replace("Z", "+00:00"))
    assert parsed == datetime(2026, 12, 4, 8, 0, 0, 123_000, tzinfo=timezone.utc)


def test_encode_value_matches_json_dumps():
    for reading in take(Plant(5, seed=14, fault_rate=0.05), 20_000):
        assert encode_value(reading.message) == encode_value_with_json(reading.message)


def test_encode_value_example_bytes():
    message = {"timestamp": "2026-12-04T08:00:00.123Z", "machine_id": "M-001", "temperature": 71.53,
               "pressure": 301.2, "vibration": 2.41, "seq": 1}

    assert encode_value(message) == (b'{"timestamp":"2026-12-04T08:00:00.123Z","machine_id":"M-001",'
                                     b'"temperature":71.53,"pressure":301.2,"vibration":2.41,"seq":1}')


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_encode_value_rejects_non_finite(bad):
    message = {"timestamp": "2026-12-04T08:00:00.123Z", "machine_id": "M-001", "temperature": 71.53,
               "pressure": bad, "vibration": 2.41, "seq": 1}

    with pytest.raises(ValueError, match="not finite"):
        encode_value(message)
    with pytest.raises(ValueError):
        encode_value_with_json(message)


def test_encoded_json_has_no_nan():
    def reject_constant(token):
        raise AssertionError(f"non-finite JSON token {token}")

    for reading in take(Plant(5, seed=15, fault_rate=0.2), 20_000):
        value = encode_value(reading.message)
        decoded = json.loads(value.decode("utf-8"), parse_constant=reject_constant)
        assert decoded == reading.message
