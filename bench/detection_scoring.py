"""Score alerts against the simulator's ground truth: recall per fault kind, false alarms, delay.

Pure functions on one sequence of labels per machine (the `fault` header of each reading,
in the order the consumer processed them) and the positions in that sequence of the
readings that raised alerts. Definitions:

- An episode is a maximal run of consecutive readings of one machine with the same label
  other than `normal`. Two faults of the same kind back to back on one machine therefore
  count as one episode.
- The tail of an episode is the `tail_readings` readings right after its last reading.
  A detector may alert there on the return to normal, or a reading or two late.
- An episode is detected when at least one alert of its machine, on any metric, is on a
  reading from the episode's first reading to the end of its tail. The delay is the
  position of the first such alert minus the position of the episode's first reading,
  so 0 means the alert came with the first faulty reading.
- A false alarm is an alert on a reading labelled `normal` that is in no episode's tail.
  The rate divides them by the normal readings outside tails, per 1,000.
- The p95 delay is the nearest-rank 95th percentile, so it is always an observed delay.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

NORMAL = "normal"
TAIL_READINGS = 3


@dataclass(frozen=True)
class Episode:
    """One fault episode: positions `start` to `end` (inclusive) in its machine's reading sequence."""

    machine_id: str
    kind: str
    start: int
    end: int


@dataclass
class KindScore:
    """Episodes of one fault kind, how many were detected, and the delay of each detected one in readings."""

    episodes: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.episodes if self.episodes else None

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    @property
    def p95_delay(self) -> int | None:
        return nearest_rank(self.delays, 0.95) if self.delays else None


@dataclass
class DetectionScore:
    """Scores of a whole run; `normal_readings` counts only the normal readings outside episode tails."""

    kinds: dict[str, KindScore] = field(default_factory=dict)
    normal_readings: int = 0
    tail_readings: int = 0
    false_alarms: int = 0
    tail_alerts: int = 0
    episode_alerts: int = 0
    missed: list[Episode] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return sum(kind.episodes for kind in self.kinds.values())

    @property
    def false_alarms_per_1000(self) -> float | None:
        return 1000.0 * self.false_alarms / self.normal_readings if self.normal_readings else None

    def overall(self) -> KindScore:
        """Pool the episodes of every kind into one score."""
        pooled = KindScore()
        for kind in self.kinds.values():
            pooled.episodes += kind.episodes
            pooled.detected += kind.detected
            pooled.delays.extend(kind.delays)
        return pooled


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile: the smallest value with at least `fraction` of the values at or below it."""
    if not values:
        raise ValueError("no values to take a percentile of")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def find_episodes(machine_id: str, labels: Sequence[str]) -> list[Episode]:
    """Split a machine's labels into fault episodes. Raises ValueError on a missing (None) or empty label."""
    episodes: list[Episode] = []
    start = None
    for position, label in enumerate(labels):
        if not label:
            raise ValueError(f"reading {position} of machine_id={machine_id} has no ground-truth label")
        if start is not None and label != labels[start]:
            episodes.append(Episode(machine_id, labels[start], start, position - 1))
            start = None
        if start is None and label != NORMAL:
            start = position
    if start is not None:
        episodes.append(Episode(machine_id, labels[start], start, len(labels) - 1))
    return episodes


def score_machine(score: DetectionScore, machine_id: str, labels: Sequence[str], alert_positions: Iterable[int],
                  tail_readings: int = TAIL_READINGS) -> None:
    """Add one machine's episodes, detections and false alarms to `score`.

    `alert_positions` has one entry per alert, so a reading with two alerts appears twice.
    Raises ValueError on a position outside the label sequence.
    """
    alerts_at = Counter(alert_positions)
    for position in alerts_at:
        if not 0 <= position < len(labels):
            raise ValueError(f"alert at position {position} of machine_id={machine_id} is outside its "
                             f"{len(labels)} readings")

    episodes = find_episodes(machine_id, labels)
    in_tail = [False] * len(labels)
    for episode in episodes:
        for position in range(episode.end + 1, min(episode.end + 1 + tail_readings, len(labels))):
            in_tail[position] = True

    for episode in episodes:
        kind = score.kinds.setdefault(episode.kind, KindScore())
        kind.episodes += 1
        last = min(episode.end + tail_readings, len(labels) - 1)
        first_alert = next((position for position in range(episode.start, last + 1) if alerts_at[position]), None)
        if first_alert is None:
            score.missed.append(episode)
        else:
            kind.detected += 1
            kind.delays.append(first_alert - episode.start)

    for position, label in enumerate(labels):
        alerts = alerts_at[position]
        if label != NORMAL:
            score.episode_alerts += alerts
        elif in_tail[position]:
            score.tail_readings += 1
            score.tail_alerts += alerts
        else:
            score.normal_readings += 1
            score.false_alarms += alerts


def score_run(machines: Mapping[str, tuple[Sequence[str], Iterable[int]]],
              tail_readings: int = TAIL_READINGS) -> DetectionScore:
    """Score every machine: `machines` maps a machine id to (labels in order, alert positions)."""
    score = DetectionScore()
    for machine_id, (labels, alert_positions) in sorted(machines.items()):
        score_machine(score, machine_id, labels, alert_positions, tail_readings)
    return score
