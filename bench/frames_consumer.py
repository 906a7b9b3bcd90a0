"""Run the consumer CLI headless, drawing a chart frame every CHART_INTERVAL_MS as a window would.

    python -m bench.frames_consumer --snapshot PATH [consumer options]

The consumer's own headless mode (`--snapshot`) draws only every `SNAPSHOT_INTERVAL_S`
(10 s), far less often than a window, which draws a frame every CHART_INTERVAL_MS
(default 1000 ms). This wrapper shortens the snapshot interval to CHART_INTERVAL_MS, so
each frame is `SensorChart.update()` plus a full Agg render and a PNG write, in the same
thread and between the same polls. The PNG encoding makes a frame a little dearer than
a window's redraw, so latency with this wrapper is an upper bound for the window.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from consumers import sensor_consumer
    from consumers.chart_runner import SnapshotWriter
    from utils.utils_config import load_settings

    frame_interval_s = load_settings().chart_interval_ms / 1000

    class FrameWriter(SnapshotWriter):
        def __init__(self, chart, path, interval_s: float = frame_interval_s):
            super().__init__(chart, path, interval_s)

    sensor_consumer.SnapshotWriter = FrameWriter
    return sensor_consumer.main(argv)


if __name__ == "__main__":
    sys.exit(main())
