"""Pacing of the sensor producer on the monotonic clock, so high rates need no sleep per reading."""

from __future__ import annotations

import math

from producers.producer_options import RunOptions

CATCH_UP_LIMIT_S = 1.0  # a schedule further behind than this restarts from now instead of bursting


class Schedule:
    """Due times of readings on the monotonic clock: bursts of `burst` readings every `period_s`.

    With `period_s=None` every reading is due at once. A sender that falls more than
    `CATCH_UP_LIMIT_S` behind restarts the schedule from now, so it never bursts to catch up.
    """

    def __init__(self, burst: int, period_s: float | None, start: float) -> None:
        self.burst = burst
        self.period_s = period_s
        self.start = start
        self.restarts = 0

    def seconds_until_due(self, index: int, now: float) -> float:
        """Return the seconds reading `index` (0-based) must wait, or 0 when it is due."""
        if self.period_s is None:
            return 0.0
        due = self.start + (index // self.burst) * self.period_s
        if now - due > CATCH_UP_LIMIT_S:
            self.start = now - (index // self.burst) * self.period_s
            self.restarts += 1
            return 0.0
        return max(0.0, due - now)


def make_schedule(options: RunOptions, start: float) -> Schedule:
    if options.rate_per_s is None:
        return Schedule(options.machines, options.interval_s, start)
    if math.isinf(options.rate_per_s):
        return Schedule(1, None, start)
    return Schedule(1, 1.0 / options.rate_per_s, start)
