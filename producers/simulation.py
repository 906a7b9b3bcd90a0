"""Simulated factory machines: per-machine baselines, slow drift, noise and injected faults.

Pure Python with no Kafka and no clock: the caller passes each reading's timestamp. Every
random draw comes from a `random.Random` seeded from the run seed: one per machine, whose
seed adds the machine id, and one for the noise table that all machines share. So the
same seed reproduces a run reading for reading, and machine `M-001` produces the same
readings whether the run has 2 machines or 20.

Normal operation (faults off) stays inside these bands, by construction:

| metric | baseline per machine | drift | noise (sd, clipped at 3 sd) | normal band |
|---|---|---|---|---|
| temperature °C | 66 to 74 | within ±2 | 0.6 | 62.2 to 77.8 |
| pressure kPa | 294 to 306 | within ±4 | 1.5 | 285.5 to 314.5 |
| vibration mm/s RMS | 2.0 to 2.8 | within ±0.25 | 0.1 | 1.45 to 3.35 |

Faults carry their name as the ground-truth label on every reading that deviates, and the
machine returns to normal right after the last one. Each fault moves its metric at least
10 noise sd from the machine's normal value on its first reading. By its third reading at
the latest it is past the consumer's default alert limit (above 90 °C, below 250 kPa,
above 7.1 mm/s). Every fault value stays inside the validation bounds (-50..400 °C,
0..5000 kPa, 0..200 mm/s):

- `overheating`: temperature rises 11 to 14 °C per reading for 6 to 12 readings
  (at least 95 °C by reading 3, at most about 246 °C).
- `pressure_loss`: pressure falls by half of an 80 to 120 kPa drop on the first reading
  and keeps the full drop for the rest of 5 to 10 readings (below 235 kPa from reading 2).
- `bearing_wear`: vibration rises 2.2 to 3.0 mm/s per reading for 6 to 12 readings
  (at least 8.0 mm/s by reading 3, at most about 40 mm/s).
- `spike`: one reading with one metric off: temperature +30 to +45 °C, pressure -70 to
  -100 kPa, or vibration +6.5 to +10 mm/s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from producers.message import FAULT_KINDS, NORMAL, format_timestamp, machine_id


@dataclass(frozen=True)
class MetricModel:
    """Parameters of one metric in normal operation."""

    name: str
    baseline_low: float
    baseline_high: float
    drift_step: float  # the drift's random-walk step per reading is uniform in ±drift_step
    drift_max: float  # the drift is clipped to ±drift_max
    noise_sd: float  # sd of the Gaussian noise, which is clipped to ±NOISE_CLIP_SD sd


# Clipping the noise keeps every normal reading inside the normal band, so a detector
# with limits outside the band raises no false alarm on normal readings.
NOISE_CLIP_SD = 3.0

# Noise is drawn uniformly from a table of 2**12 standard normal samples made from the run
# seed. One getrandbits() call then serves all three metrics, which costs a fraction of
# three random.gauss() calls and keeps the send loop fast at high rates.
NOISE_TABLE_BITS = 12

# The drift reverts 1 % of the way to zero per reading, so it wanders slowly (stationary
# sd about 4 drift steps) instead of running into its clip and staying there.
DRIFT_REVERSION = 0.01

TEMPERATURE = MetricModel("temperature", 66.0, 74.0, 0.2, 2.0, 0.6)
PRESSURE = MetricModel("pressure", 294.0, 306.0, 0.4, 4.0, 1.5)
VIBRATION = MetricModel("vibration", 2.0, 2.8, 0.025, 0.25, 0.1)
METRICS = (TEMPERATURE, PRESSURE, VIBRATION)  # the order of every per-metric list below
METRIC_NAMES = tuple(model.name for model in METRICS)


class Reading(NamedTuple):
    """One simulated reading: the message as sent and its ground-truth label."""

    message: dict[str, Any]
    label: str


@dataclass
class Fault:
    """A fault in progress on one machine: `offsets[k]` is added to the metric at its k-th reading."""

    kind: str
    metric: str
    offsets: list[float]
    index: int = 0

    @property
    def metric_index(self) -> int:
        return METRIC_NAMES.index(self.metric)


def make_noise_table(seed: int) -> tuple[float, ...]:
    """Draw the standard normal samples, clipped to ±NOISE_CLIP_SD, that all machines of a run share."""
    rng = random.Random(f"{seed}/noise")
    samples = (rng.gauss(0.0, 1.0) for _ in range(2**NOISE_TABLE_BITS))
    return tuple(max(-NOISE_CLIP_SD, min(NOISE_CLIP_SD, sample)) for sample in samples)


def plan_fault(rng: random.Random, kind: str | None = None) -> Fault:
    """Plan a fault's offsets from the machine's normal value. `kind=None` draws the kind uniformly."""
    if kind is None:
        kind = rng.choice(FAULT_KINDS)
    elif kind not in FAULT_KINDS:
        raise ValueError(f"invalid fault kind {kind!r}: expected one of {', '.join(FAULT_KINDS)}")

    if kind == "overheating":
        slope = rng.uniform(11.0, 14.0)
        length = rng.randint(6, 12)
        return Fault(kind, "temperature", [slope * k for k in range(1, length + 1)])

    if kind == "pressure_loss":
        drop = rng.uniform(80.0, 120.0)
        length = rng.randint(5, 10)
        return Fault(kind, "pressure", [-drop / 2] + [-drop] * (length - 1))

    if kind == "bearing_wear":
        slope = rng.uniform(2.2, 3.0)
        length = rng.randint(6, 12)
        return Fault(kind, "vibration", [slope * k for k in range(1, length + 1)])

    metric = rng.choice(METRIC_NAMES)
    if metric == "temperature":
        offset = rng.uniform(30.0, 45.0)
    elif metric == "pressure":
        offset = -rng.uniform(70.0, 100.0)
    else:
        offset = rng.uniform(6.5, 10.0)
    return Fault(kind, metric, [offset])


class Machine:
    """One simulated machine with its own baselines, drift, noise and fault state."""

    def __init__(self, number: int, seed: int, fault_rate: float,
                 noise_table: tuple[float, ...] | None = None) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"invalid fault_rate={fault_rate}: expected a probability from 0 to 1")
        self.machine_id = machine_id(number)
        self.fault_rate = fault_rate
        # A str seed is hashed with SHA-512, so it is stable across processes and Python runs.
        self.rng = random.Random(f"{seed}/{self.machine_id}")
        self.baselines = [self.rng.uniform(m.baseline_low, m.baseline_high) for m in METRICS]
        self.drifts = [0.0] * len(METRICS)
        self.noise_table = noise_table if noise_table is not None else make_noise_table(seed)
        self._models = [(i, baseline, 2.0 * m.drift_step, m.drift_step, m.drift_max, m.noise_sd)
                        for i, (baseline, m) in enumerate(zip(self.baselines, METRICS))]
        self.seq = 0
        self.fault: Fault | None = None

    def next_reading(self, timestamp_ms: int) -> Reading:
        """Advance the machine by one reading taken at `timestamp_ms` (Unix time in ms)."""
        self.seq += 1
        values = self._normal_values()

        if self.fault is None and self.rng.random() < self.fault_rate:
            self.start_fault()

        label = NORMAL
        fault = self.fault
        if fault is not None:
            label = fault.kind
            values[fault.metric_index] += fault.offsets[fault.index]
            fault.index += 1
            if fault.index == len(fault.offsets):
                self.fault = None

        temperature, pressure, vibration = values
        message = {
            "timestamp": format_timestamp(timestamp_ms),
            "machine_id": self.machine_id,
            "temperature": round(temperature, 2),
            "pressure": round(pressure, 1),
            "vibration": round(vibration, 2),
            "seq": self.seq,
        }
        return Reading(message, label)

    def start_fault(self, kind: str | None = None) -> Fault:
        """Start a fault at the next reading, replacing any fault in progress. `kind=None` draws the kind."""
        self.fault = plan_fault(self.rng, kind)
        return self.fault

    def _normal_values(self) -> list[float]:
        """Step each metric's drift and draw its noise, returning the values without any fault."""
        uniform_01 = self.rng.random
        table = self.noise_table
        mask = (1 << NOISE_TABLE_BITS) - 1
        noise_bits = self.rng.getrandbits(NOISE_TABLE_BITS * len(METRICS))
        drifts = self.drifts
        values = []
        for i, baseline, step_width, step, drift_max, noise_sd in self._models:
            drift = drifts[i] * (1.0 - DRIFT_REVERSION) + uniform_01() * step_width - step
            if drift > drift_max:
                drift = drift_max
            elif drift < -drift_max:
                drift = -drift_max
            drifts[i] = drift

            noise = table[noise_bits & mask] * noise_sd
            noise_bits >>= NOISE_TABLE_BITS
            values.append(baseline + drift + noise)
        return values


class Plant:
    """A set of machines that take turns: reading i comes from machine i mod N."""

    def __init__(self, machines: int, seed: int, fault_rate: float) -> None:
        if machines < 1:
            raise ValueError(f"invalid machines={machines}: expected at least 1")
        noise_table = make_noise_table(seed)
        self.machines = [Machine(number, seed, fault_rate, noise_table) for number in range(1, machines + 1)]
        self._turn = 0

    def next_reading(self, timestamp_ms: int) -> Reading:
        """Take the next reading from the machine whose turn it is."""
        machine = self.machines[self._turn]
        self._turn = (self._turn + 1) % len(self.machines)
        return machine.next_reading(timestamp_ms)
