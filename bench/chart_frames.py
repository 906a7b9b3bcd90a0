"""Frame time of `SensorChart` early and late in a run, driven directly with Agg and no Kafka."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

FRAME_RADIUS = 4  # frames timed on each side of a measured frame
EARLY_FRAME = 10


@dataclass(frozen=True)
class FrameResult:
    """Median frame time in milliseconds around frame `EARLY_FRAME` and around frame `late_frame`."""

    machines: int
    late_frame: int
    early_ms: float
    late_ms: float


def frame_times(machines: int, late_frame: int, render_every: int, window: int = 60,
                temperature_limit_c: float = 90.0) -> FrameResult:
    """Feed one reading per machine per frame, as at the default 1 s interval, and time update plus render.

    Every frame calls `SensorChart.update()`. Frames near `EARLY_FRAME` and `late_frame` are
    timed, each as `update()` plus `canvas.draw()`. In between, every `render_every`-th frame
    is rendered untimed, so state that grows with drawing would still show at the late frame.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from consumers.chart_runner import create_headless_chart
    from consumers.validation import Reading
    from producers.simulation import Plant

    chart = create_headless_chart(window, temperature_limit_c, None)
    canvas = FigureCanvasAgg(chart.figure)
    plant = Plant(machines, 3, 0.005)
    start_ms = int(time.time() * 1000)
    timed = set(range(EARLY_FRAME - FRAME_RADIUS, EARLY_FRAME + FRAME_RADIUS + 1))
    timed |= set(range(late_frame - FRAME_RADIUS, late_frame + FRAME_RADIUS + 1))
    durations: dict[int, float] = {}

    for frame in range(1, late_frame + FRAME_RADIUS + 1):
        for _ in range(machines):
            message = plant.next_reading(start_ms + frame * 1000).message
            reading = Reading(message["machine_id"], message["timestamp"], start_ms / 1000 + frame,
                              message["temperature"], message["pressure"], message["vibration"], message["seq"])
            chart.add(reading, reading.temperature > temperature_limit_c)
        chart.set_status(f"frame {frame}")

        if frame in timed:
            began = time.perf_counter()
            chart.update()
            canvas.draw()
            durations[frame] = (time.perf_counter() - began) * 1000
        else:
            chart.update()
            if frame % render_every == 0:
                canvas.draw()

    early = [durations[f] for f in durations if f <= EARLY_FRAME + FRAME_RADIUS]
    late = [durations[f] for f in durations if f >= late_frame - FRAME_RADIUS]
    return FrameResult(machines, late_frame, statistics.median(early), statistics.median(late))
