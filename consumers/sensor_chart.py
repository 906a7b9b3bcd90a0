"""Live chart of the readings: temperature bars of one machine above pressure lines of all machines.

Every artist is created once and updated in place: the top axes contain exactly
`window` bar patches, and each machine gets one pressure line when it is first seen. Frame time
therefore stays flat however long the run lasts, and the data kept is bounded by
`window` points per machine and `MAX_PRESSURE_LINES` machines.

This module never polls Kafka and never touches pyplot: the caller owns the figure, so
the same class draws in a window (FuncAnimation) and into PNG snapshots (Agg).
"""

from __future__ import annotations

import os
from collections import deque
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from consumers.validation import Reading

BAR_COLOR = "orange"
ALERT_EDGE_COLOR = "red"
LIMIT_COLOR = "red"
SECONDS_PER_DAY = 86400.0
# A legend with more entries than this stops being readable; later machines are not drawn.
MAX_PRESSURE_LINES = 10


def to_date_number(timestamp_s: float) -> float:
    """Convert Unix seconds to a Matplotlib date number (days since `matplotlib.dates.get_epoch()`)."""
    return unix_epoch_days() + timestamp_s / SECONDS_PER_DAY


@lru_cache(maxsize=1)
def unix_epoch_days() -> float:
    return date2num(datetime(1970, 1, 1, tzinfo=timezone.utc))


class SensorChart:
    """Temperature bars of the selected machine (top) and pressure lines per machine (bottom) on one figure."""

    def __init__(self, figure: Figure, window: int, temperature_limit_c: float, machine: str | None = None):
        self.figure = figure
        self.window = window
        self.temperature_limit_c = temperature_limit_c
        self.machine = machine
        self.temperatures: deque[tuple[float, float, bool]] = deque(maxlen=window)
        self.pressures: dict[str, deque[tuple[float, float]]] = {}
        self._dirty_legend = False

        self.temperature_axes, self.pressure_axes = figure.subplots(2, 1)
        self.title = figure.suptitle("waiting for readings")
        self._build_temperature_axes()
        self._build_pressure_axes()
        figure.subplots_adjust(hspace=0.45)

    def _build_temperature_axes(self) -> None:
        axes = self.temperature_axes
        container = axes.bar([0.0] * self.window, [0.0] * self.window, width=0.0, align="center",
                             color=BAR_COLOR, edgecolor=BAR_COLOR, linewidth=0.0)
        self.bars = list(container.patches)
        for bar in self.bars:
            bar.set_visible(False)
        self.limit_line = axes.axhline(self.temperature_limit_c, color=LIMIT_COLOR, linestyle="--", linewidth=1.0,
                                       label=f"limit {self.temperature_limit_c:g} °C")
        axes.set_ylabel("temperature (°C)")
        axes.legend(loc="upper left", fontsize="small")
        self._use_date_axis(axes)
        self._set_temperature_title()

    def _build_pressure_axes(self) -> None:
        axes = self.pressure_axes
        axes.set_title("Pressure per machine")
        axes.set_ylabel("pressure (kPa)")
        self.lines: dict = {}
        self._use_date_axis(axes)

    @staticmethod
    def _use_date_axis(axes) -> None:
        locator = AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))

    def _set_temperature_title(self) -> None:
        name = self.machine or "first machine seen"
        self.temperature_axes.set_title(f"Temperature of {name} (red edge: reading raised an alert)")

    def add(self, reading: Reading, alerted: bool) -> None:
        """Keep a reading for the next frame; `alerted` marks its bar when it raised any alert."""
        if self.machine is None:
            self.machine = reading.machine_id
            self._set_temperature_title()
        x = to_date_number(reading.timestamp_s)
        if reading.machine_id == self.machine:
            self.temperatures.append((x, reading.temperature, alerted))

        points = self.pressures.get(reading.machine_id)
        if points is None:
            if len(self.pressures) >= MAX_PRESSURE_LINES:
                return
            points = deque(maxlen=self.window)
            self.pressures[reading.machine_id] = points
            (self.lines[reading.machine_id],) = self.pressure_axes.plot([], [], linewidth=1.2,
                                                                          label=reading.machine_id)
            self._dirty_legend = True
        points.append((x, reading.pressure))

    def set_status(self, text: str) -> None:
        self.title.set_text(text)

    def update(self) -> list:
        """Move the existing artists to the kept data and return them (a FuncAnimation frame)."""
        self._update_bars()
        self._update_lines()
        return [*self.bars, *self.lines.values(), self.title]

    def _update_bars(self) -> None:
        points = self.temperatures
        count = len(points)
        width = 1.0 / SECONDS_PER_DAY
        if count > 1:
            width = (points[-1][0] - points[0][0]) / (count - 1) * 0.8 or width

        for bar, point in zip(self.bars, points):
            x, temperature, alerted = point
            bar.set_x(x - width / 2)
            bar.set_width(width)
            bar.set_height(temperature)
            bar.set_edgecolor(ALERT_EDGE_COLOR if alerted else BAR_COLOR)
            bar.set_linewidth(2.0 if alerted else 0.0)
            bar.set_visible(True)
        for bar in self.bars[count:]:
            bar.set_visible(False)

        if count:
            axes = self.temperature_axes
            axes.set_xlim(points[0][0] - width, points[-1][0] + width)
            top = max(self.temperature_limit_c, max(p[1] for p in points))
            axes.set_ylim(min(0.0, min(p[1] for p in points)), top * 1.1 if top > 0 else 1.0)

    def _update_lines(self) -> None:
        if not self.pressures:
            return
        x_min = x_max = y_min = y_max = None
        for machine_id, points in self.pressures.items():
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            self.lines[machine_id].set_data(xs, ys)
            x_min = min(xs[0], x_min) if x_min is not None else xs[0]
            x_max = max(xs[-1], x_max) if x_max is not None else xs[-1]
            y_min = min(min(ys), y_min) if y_min is not None else min(ys)
            y_max = max(max(ys), y_max) if y_max is not None else max(ys)

        axes = self.pressure_axes
        margin_x = (x_max - x_min) * 0.02 or 1.0 / SECONDS_PER_DAY
        margin_y = (y_max - y_min) * 0.1 or 1.0
        axes.set_xlim(x_min - margin_x, x_max + margin_x)
        axes.set_ylim(y_min - margin_y, y_max + margin_y)
        if self._dirty_legend:
            axes.legend(loc="upper left", fontsize="small", ncols=min(5, len(self.lines)))
            self._dirty_legend = False


def save_png(figure: Figure, path: Path | str) -> Path:
    """Write the figure as PNG through a temporary file, so a reader never sees half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    figure.savefig(partial, format="png", dpi=100)
    os.replace(partial, path)
    return path
