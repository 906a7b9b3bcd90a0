"""Rolling statistics, alerts and `seq` tracking per machine, from validated readings.

Detection, per reading and metric, in `Insights.update`:

- `limit`: the value crosses its configured limit (temperature above its maximum,
  pressure below its minimum, vibration above its maximum).
- `zscore`: |value - mean| / std of the machine's own window, taken before the value is
  added, reaches `z_threshold`. Skipped until the window contains `z_min_points` values,
  and while the window's std is 0.

Repeats: while a detector keeps firing for the same (machine, metric, kind), it alerts
once, then again only every `cooldown_s`, measured on reading timestamps, as a reminder
that the condition persists. It re-arms as soon as it has stayed quiet for
`rearm_readings` readings of that machine, so the next fault alerts at once even within
the cooldown. Both rules use only the readings, so a replay raises the same alerts as
the live run, whatever the pace. Every threshold sits in `DetectionConfig`, built from
the settings.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from consumers.validation import METRICS, Reading
from utils.utils_config import Settings

Z_MIN_POINTS = 10
# Quiet readings after which a detector alerts again at once, even within the cooldown.
# NOTE: a value that crosses a limit back and forth can alert every REARM_READINGS + 1
# readings. Alert delivery has its own cooldown and hourly cap against such storms.
REARM_READINGS = 3


@dataclass(frozen=True)
class DetectionConfig:
    """Alert thresholds: per-metric limits as ("max" | "min", value), z-score threshold, cooldown in seconds."""

    limits: dict[str, tuple[str, float]]
    z_threshold: float
    cooldown_s: float
    z_min_points: int = Z_MIN_POINTS
    rearm_readings: int = REARM_READINGS

    @classmethod
    def from_settings(cls, settings: Settings) -> "DetectionConfig":
        return cls(
            limits={
                "temperature": ("max", settings.temperature_max_c),
                "pressure": ("min", settings.pressure_min_kpa),
                "vibration": ("max", settings.vibration_max_mm_s),
            },
            z_threshold=settings.z_threshold,
            cooldown_s=settings.alert_cooldown_s,
        )


@dataclass(slots=True)
class Alert:
    """One alert: `threshold` is the crossed limit for kind `limit`, the z threshold for kind `zscore`."""

    machine_id: str
    metric: str
    value: float
    threshold: float
    zscore: float | None
    kind: str
    timestamp: str


@dataclass(frozen=True)
class MetricStats:
    """Rolling statistics of one metric over a machine's window; `rate_per_s` is the change per second of the last step."""

    count: int
    last: float
    mean: float
    minimum: float
    maximum: float
    std: float
    rate_per_s: float | None


class RollingWindow:
    """The last `size` values of one metric, with running sums so mean and std cost O(1).

    Sums are kept relative to the first value seen (a shift that avoids cancellation in
    the variance of values near 300) and recomputed from the values every `size` updates,
    so rounding errors cannot pile up.
    """

    __slots__ = ("values", "_shift", "_sum", "_sum_sq", "_updates")

    def __init__(self, size: int):
        self.values: deque[float] = deque(maxlen=size)
        self._shift: float | None = None
        self._sum = 0.0
        self._sum_sq = 0.0
        self._updates = 0

    def add(self, value: float) -> None:
        if self._shift is None:
            self._shift = value
        values = self.values
        if len(values) == values.maxlen:
            old = values[0] - self._shift
            self._sum -= old
            self._sum_sq -= old * old
        values.append(value)
        shifted = value - self._shift
        self._sum += shifted
        self._sum_sq += shifted * shifted

        self._updates += 1
        if self._updates >= values.maxlen:
            self._sum = math.fsum(v - self._shift for v in values)
            self._sum_sq = math.fsum((v - self._shift) ** 2 for v in values)
            self._updates = 0

    def __len__(self) -> int:
        return len(self.values)

    def mean(self) -> float:
        return self._shift + self._sum / len(self.values)

    def zscore(self, value: float) -> float | None:
        """Return (value - mean) / std of the window, or None while the window has under two values or std 0."""
        n = len(self.values)
        if n < 2:
            return None
        total = self._sum
        variance = (self._sum_sq - total * total / n) / (n - 1)
        if variance <= 0.0:
            return None
        return (value - self._shift - total / n) / math.sqrt(variance)

    def std(self) -> float:
        """Return the sample standard deviation (n - 1), or 0.0 for fewer than two values."""
        n = len(self.values)
        if n < 2:
            return 0.0
        variance = (self._sum_sq - self._sum * self._sum / n) / (n - 1)
        return math.sqrt(variance) if variance > 0 else 0.0


@dataclass
class MachineState:
    """Windows, seq counters and alert times of one machine."""

    windows: dict[str, RollingWindow]
    last_timestamp_s: float | None = None
    rates_per_s: dict[str, float | None] = field(default_factory=dict)
    last_seq: int | None = None
    seq_gaps: int = 0
    seq_missing: int = 0
    seq_repeats: int = 0
    readings: int = 0
    last_alert_s: dict[tuple[str, str], float] = field(default_factory=dict)
    last_fired: dict[tuple[str, str], int] = field(default_factory=dict)  # reading number, suppressed or not


class Insights:
    """Per-machine rolling windows and alert detection.

    NOTE: state is kept for every machine id ever seen, so memory grows with the number
    of distinct machines (validation caps an id at 64 characters, not their count).
    """

    def __init__(self, config: DetectionConfig, window: int):
        self.config = config
        self.window = window
        self.machines: dict[str, MachineState] = {}
        self.alerts_raised = 0
        self.alerts_suppressed = 0

    def update(self, reading: Reading) -> list[Alert]:
        """Add a reading to its machine's windows and return the alerts it raises."""
        state = self.machines.get(reading.machine_id)
        if state is None:
            state = MachineState(windows={metric: RollingWindow(self.window) for metric in METRICS})
            self.machines[reading.machine_id] = state
        if reading.seq is not None:
            self._track_seq(state, reading.seq)
        state.readings += 1

        elapsed_s = 0.0
        if state.last_timestamp_s is not None:
            elapsed_s = reading.timestamp_s - state.last_timestamp_s
        state.last_timestamp_s = reading.timestamp_s

        alerts: list[Alert] = []
        config = self.config
        windows = state.windows
        rates = state.rates_per_s
        for metric, value in (("temperature", reading.temperature), ("pressure", reading.pressure),
                              ("vibration", reading.vibration)):
            window = windows[metric]
            values = window.values
            rates[metric] = (value - values[-1]) / elapsed_s if elapsed_s > 0 and values else None

            direction, limit = config.limits[metric]
            if value > limit if direction == "max" else value < limit:
                self._raise(alerts, state, Alert(reading.machine_id, metric, value, limit, None, "limit",
                                                 reading.timestamp), reading.timestamp_s)
            if len(values) >= config.z_min_points:
                zscore = window.zscore(value)
                if zscore is not None and abs(zscore) >= config.z_threshold:
                    self._raise(alerts, state, Alert(reading.machine_id, metric, value, config.z_threshold, zscore,
                                                     "zscore", reading.timestamp), reading.timestamp_s)
            window.add(value)

        self.alerts_raised += len(alerts)
        return alerts

    def _raise(self, alerts: list[Alert], state: MachineState, alert: Alert, timestamp_s: float) -> None:
        if self._cooled_down(state, alert, timestamp_s):
            alerts.append(alert)

    def _cooled_down(self, state: MachineState, alert: Alert, timestamp_s: float) -> bool:
        """Tell whether a detector that fired may alert: it re-armed after quiet readings, or the cooldown passed."""
        key = (alert.metric, alert.kind)
        last_fired = state.last_fired.get(key)
        state.last_fired[key] = state.readings
        last_s = state.last_alert_s.get(key)
        if last_fired is not None and state.readings - last_fired <= self.config.rearm_readings \
                and last_s is not None and timestamp_s - last_s < self.config.cooldown_s:
            self.alerts_suppressed += 1
            return False
        state.last_alert_s[key] = timestamp_s
        return True

    @staticmethod
    def _track_seq(state: MachineState, seq: int | None) -> None:
        """Count gaps (skipped seq numbers) and repeats (a seq not above the last one).

        The last seq follows every reading, so a producer that restarts at 1 counts as
        one repeat and not as a repeat per reading until it passes its old numbers.
        """
        if seq is None:
            return
        last = state.last_seq
        if last is not None:
            if seq > last + 1:
                state.seq_gaps += 1
                state.seq_missing += seq - last - 1
            elif seq <= last:
                state.seq_repeats += 1
        state.last_seq = seq

    def stats(self, machine_id: str) -> dict[str, MetricStats]:
        """Compute the rolling statistics of each metric of a machine; min and max cost O(window)."""
        state = self.machines.get(machine_id)
        if state is None:
            return {}
        result = {}
        for metric, window in state.windows.items():
            if not len(window):
                continue
            result[metric] = MetricStats(
                count=len(window),
                last=window.values[-1],
                mean=window.mean(),
                minimum=min(window.values),
                maximum=max(window.values),
                std=window.std(),
                rate_per_s=state.rates_per_s.get(metric),
            )
        return result

    def seq_totals(self) -> dict[str, int]:
        """Sum the seq gaps, missing numbers and repeats over all machines."""
        return {
            "seq_gaps": sum(s.seq_gaps for s in self.machines.values()),
            "seq_missing": sum(s.seq_missing for s in self.machines.values()),
            "seq_repeats": sum(s.seq_repeats for s in self.machines.values()),
        }
