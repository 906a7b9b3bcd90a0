"""Tests of the sensor chart rendered with Agg: colours, one pressure line per machine, constant artists."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # Before pyplot is imported anywhere in this process; the chart itself never uses pyplot.

import numpy
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from consumers.chart_runner import SnapshotWriter, window_unavailable_reason
from consumers.sensor_chart import MAX_PRESSURE_LINES, SensorChart
from consumers.validation import Reading

START_S = 1796371200.0
WINDOW = 20


def make_reading(i: int, machine_id: str = "M-001", temperature: float = 70.0, pressure: float = 300.0) -> Reading:
    return Reading(machine_id, f"t{i}", START_S + i, temperature, pressure, 2.5, i + 1)


def make_chart(machine: str | None = None) -> SensorChart:
    return SensorChart(Figure(figsize=(8, 6)), WINDOW, 90.0, machine)


def bar_patches(chart: SensorChart) -> list[Rectangle]:
    return [patch for patch in chart.temperature_axes.patches if isinstance(patch, Rectangle)]


def test_temperature_bars_orange(tmp_path):
    chart = make_chart()
    for i in range(10):
        chart.add(make_reading(i, temperature=70.0 + i), alerted=False)
    chart.update()
    chart.figure.savefig(tmp_path / "chart.png")

    visible = [bar for bar in chart.bars if bar.get_visible()]

    assert len(visible) == 10
    for bar in visible:
        assert bar.get_facecolor() == to_rgba("orange")
    assert [bar.get_height() for bar in visible] == [70.0 + i for i in range(10)]


def test_alerted_bar_marked():
    chart = make_chart()
    chart.add(make_reading(0, temperature=70.0), alerted=False)
    chart.add(make_reading(1, temperature=95.0), alerted=True)
    chart.update()

    normal, alerted = chart.bars[0], chart.bars[1]

    assert alerted.get_facecolor() == to_rgba("orange")
    assert alerted.get_edgecolor() == to_rgba("red")
    assert alerted.get_linewidth() > 0
    assert normal.get_linewidth() == 0


def test_temperature_limit_line():
    chart = make_chart()

    assert list(chart.limit_line.get_ydata()) == [90.0, 90.0]


def test_bars_follow_selected_machine():
    chart = make_chart(machine="M-002")
    for i in range(6):
        chart.add(make_reading(i, machine_id="M-001", temperature=60.0), alerted=False)
        chart.add(make_reading(i, machine_id="M-002", temperature=80.0), alerted=False)
    chart.update()

    heights = [bar.get_height() for bar in chart.bars if bar.get_visible()]

    assert heights == [80.0] * 6
    assert "M-002" in chart.temperature_axes.get_title()


def test_first_machine_selected_by_default():
    chart = make_chart()
    chart.add(make_reading(0, machine_id="M-003"), alerted=False)
    chart.add(make_reading(0, machine_id="M-001"), alerted=False)

    assert chart.machine == "M-003"


def test_one_pressure_line_per_machine():
    chart = make_chart()
    machines = ["M-001", "M-002", "M-003"]
    for i in range(30):
        for machine_id in machines:
            chart.add(make_reading(i, machine_id=machine_id, pressure=300.0 + i), alerted=False)
    chart.update()

    lines = chart.pressure_axes.get_lines()
    legend = [text.get_text() for text in chart.pressure_axes.get_legend().get_texts()]

    assert len(lines) == 3
    assert sorted(line.get_label() for line in lines) == machines
    assert sorted(legend) == machines
    for line in lines:
        assert len(line.get_xdata()) == WINDOW


def test_pressure_lines_capped():
    chart = make_chart()
    for m in range(MAX_PRESSURE_LINES + 5):
        chart.add(make_reading(0, machine_id=f"M-{m:03d}"), alerted=False)
    chart.update()

    assert len(chart.pressure_axes.get_lines()) == MAX_PRESSURE_LINES


def test_artist_count_constant(tmp_path):
    chart = make_chart()
    counts = []
    for frame in range(200):
        for machine_id in ("M-001", "M-002"):
            chart.add(make_reading(frame, machine_id=machine_id, temperature=60.0 + frame % 40), frame % 7 == 0)
        chart.set_status(f"frame {frame}")
        chart.update()
        if frame % 50 == 0:
            chart.figure.savefig(tmp_path / f"frame{frame}.png")
        counts.append((len(bar_patches(chart)), len(chart.pressure_axes.get_lines()),
                       len(chart.figure.get_children())))

    assert {count[0] for count in counts} == {WINDOW}
    assert {count[1] for count in counts} == {2}
    assert len({count[2] for count in counts}) == 1
    assert len(chart.temperatures) == WINDOW


def test_status_in_title():
    chart = make_chart()

    chart.set_status("12.0 readings/s   stored 5   rejected 1   alerts 0")

    assert "rejected 1" in chart.figure._suptitle.get_text()


def test_snapshot_png_written(tmp_path):
    chart = make_chart()
    for i in range(5):
        chart.add(make_reading(i), alerted=False)
    path = tmp_path / "out" / "chart.png"

    SnapshotWriter(chart, path).write()

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (800, 600)
    assert not path.with_name("chart.png.partial").exists()


def test_snapshot_orange_pixels(tmp_path):
    chart = make_chart()
    for i in range(WINDOW):
        chart.add(make_reading(i, temperature=70.0), alerted=False)
    path = tmp_path / "chart.png"
    SnapshotWriter(chart, path).write()

    with Image.open(path) as image:
        pixels = numpy.asarray(image.convert("RGB"))
    orange = int(numpy.all(pixels == (255, 165, 0), axis=-1).sum())

    assert orange > 1000


def test_no_display_detected(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    assert "no display" in window_unavailable_reason()


def test_agg_backend_detected(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")

    reason = window_unavailable_reason()

    assert reason is not None
    assert "agg" in reason.lower()


@pytest.mark.parametrize("count", [0, 1])
def test_update_with_few_points(count):
    chart = make_chart()
    for i in range(count):
        chart.add(make_reading(i), alerted=False)

    artists = chart.update()

    assert len([bar for bar in chart.bars if bar.get_visible()]) == count
    assert chart.title in artists
