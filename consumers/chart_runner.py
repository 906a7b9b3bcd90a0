"""Drive the sensor chart: in a window with FuncAnimation, or into PNG snapshots without one.

Kafka is polled in the main thread in both modes. In a window, a GUI timer calls the poll
step every `POLL_INTERVAL_MS` with a short poll timeout, so the window stays responsive
when the topic is idle and no other thread ever draws.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from loguru import logger
from matplotlib.figure import Figure

from consumers.sensor_chart import SensorChart, save_png

POLL_INTERVAL_MS = 50
SNAPSHOT_INTERVAL_S = 10.0
FIGURE_SIZE_IN = (11, 7)


def window_unavailable_reason() -> str | None:
    """Return why no chart window can open (no display, non-interactive backend), or None when one can."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    try:
        import matplotlib.pyplot as plt
        from matplotlib.backends import BackendFilter, backend_registry

        backend = plt.get_backend()
    except ImportError as error:
        return f"Matplotlib cannot load a GUI backend: {error}"
    if backend.lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        return f"Matplotlib backend {backend!r} cannot open a window"
    return None


class SnapshotWriter:
    """Write the chart as PNG at most every `interval_s`, and once more at exit."""

    def __init__(self, chart: SensorChart, path: Path, interval_s: float = SNAPSHOT_INTERVAL_S):
        self.chart = chart
        self.path = path
        self.interval_s = interval_s
        self._last_s = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last_s >= self.interval_s

    def maybe_write(self) -> None:
        if self.due():
            self.write()

    def write(self) -> None:
        self._last_s = time.monotonic()
        self.chart.update()
        try:
            save_png(self.chart.figure, self.path)
        except OSError as error:
            logger.warning("could not write the chart snapshot path={} error=\"{}\"", self.path, error)
            return
        logger.debug("chart snapshot written path={}", self.path)


def create_headless_chart(window: int, temperature_limit_c: float, machine: str | None) -> SensorChart:
    """Build the chart on a plain Figure, which renders with Agg and needs no display or pyplot."""
    return SensorChart(Figure(figsize=FIGURE_SIZE_IN), window, temperature_limit_c, machine)


def run_window(step: Callable[[], None], stopped: Callable[[], bool], request_stop: Callable[[str], None],
               status: Callable[[], str], window: int, temperature_limit_c: float, machine: str | None,
               chart_interval_ms: int, snapshot_path: Path | None,
               attach: Callable[[SensorChart], None]) -> None:
    """Show the chart window until it is closed or `stopped()` turns true.

    `step` polls Kafka once with a short timeout, `attach` connects the chart to the
    readings, and `status` returns the title text. Returns after the window has closed.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    figure = plt.figure(figsize=FIGURE_SIZE_IN)
    figure.canvas.manager.set_window_title("Machine sensors")
    chart = SensorChart(figure, window, temperature_limit_c, machine)
    attach(chart)
    snapshots = SnapshotWriter(chart, snapshot_path) if snapshot_path else None

    def on_close(_event) -> None:
        poll_timer.stop()
        request_stop("chart window closed")

    def on_timer() -> None:
        if stopped():
            poll_timer.stop()
            plt.close(figure)
            return
        step()

    def on_frame(_frame):
        chart.set_status(status())
        artists = chart.update()
        if snapshots:
            snapshots.maybe_write()
        return artists

    poll_timer = figure.canvas.new_timer(interval=POLL_INTERVAL_MS)
    poll_timer.add_callback(on_timer)
    figure.canvas.mpl_connect("close_event", on_close)
    poll_timer.start()
    # The animation must stay referenced while the window is open, or it is garbage-collected and
    # stops. It stops its own timer when the figure closes.
    animation = FuncAnimation(figure, on_frame, interval=chart_interval_ms, cache_frame_data=False, blit=False)
    plt.show()
    del animation

    if snapshots:
        snapshots.write()
