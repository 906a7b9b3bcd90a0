"""The report CLI on a real SQLite file written through the consumer's own SensorDatabase."""

from __future__ import annotations

import csv
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba

from consumers import sensor_report
from consumers.sensor_chart import ALERT_EDGE_COLOR, BAR_COLOR
from consumers.sensor_db import Batch, SensorDatabase
from consumers.sensor_report import TimeRange, build_chart, main, open_read_only
from tests.helpers import run_cli

TOPIC = "machine-sensors"
# M-001: seq 3 and 6-7 missing, 8 stored twice. M-002: seq 1 to 4, nothing missing.
SEQS = {"M-001": [1, 2, 4, 5, 8, 8, 9], "M-002": [1, 2, 3, 4]}


def reading_rows(machine_id: str, seqs: list[int], first_offset: int, partition: int) -> list[tuple]:
    """Build reading rows in `INSERT_READING` order, one second apart from 08:00:00."""
    rows = []
    for i, seq in enumerate(seqs):
        timestamp = f"2026-12-04T08:00:{i:02d}.000Z"
        temperature = 70.0 + i
        pressure = 300.0 + 10 * i + (5 if machine_id == "M-002" else 0)
        rows.append((machine_id, timestamp, temperature, pressure, 2.0 + i / 10, seq, TOPIC, partition,
                     first_offset + i, "2026-12-04T08:01:00.000Z", "normal"))
    return rows


def alert_row(machine_id: str, metric: str, kind: str, timestamp: str, partition: int, offset: int,
              zscore: float | None = None) -> tuple:
    """Build an alert row in `INSERT_ALERT` order."""
    return (machine_id, metric, 95.5, 90.0 if kind == "limit" else 5.0, zscore, kind, timestamp, TOPIC,
            partition, offset, "2026-12-04T08:01:00.000Z")


def sample_batch() -> Batch:
    batch = Batch()
    batch.readings += reading_rows("M-001", SEQS["M-001"], first_offset=0, partition=0)
    batch.readings += reading_rows("M-002", SEQS["M-002"], first_offset=0, partition=1)
    batch.alerts += [
        alert_row("M-001", "temperature", "limit", "2026-12-04T08:00:02.000Z", 0, 2),
        alert_row("M-001", "temperature", "limit", "2026-12-04T08:00:05.000Z", 0, 5),
        alert_row("M-001", "vibration", "zscore", "2026-12-04T08:00:05.000Z", 0, 5, zscore=6.2),
    ]
    batch.rejects += [
        (TOPIC, 0, 100, b"{", "invalid JSON: Expecting property name", "2026-12-04T08:00:30.000Z"),
        (TOPIC, 0, 101, b"{}", "machine_id is missing", "2026-12-04T08:00:31.000Z"),
        (TOPIC, 1, 100, b"[]", "machine_id 7 is not 1 to 64 letters", "2026-12-04T09:00:00.000Z"),
    ]
    return batch


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    path = tmp_path / "sensors.sqlite"
    database = SensorDatabase(path).open()
    try:
        result = database.write(sample_batch())
    finally:
        database.close()
    assert result.readings_stored == 11
    assert result.alerts_stored == 3
    return path


def machine_block(output: str, machine_id: str) -> list[str]:
    """Return the lines of one machine's block in the printed report."""
    lines = output.splitlines()
    start = lines.index(machine_id)
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    return block


def test_report_per_machine_figures(db_path, capsys):
    assert main(["--db", str(db_path)]) == 0
    output = capsys.readouterr().out

    first = machine_block(output, "M-001")
    assert first[0] == "readings     7  from 2026-12-04T08:00:00.000Z to 2026-12-04T08:00:06.000Z (6.0 s)"
    assert first[1] == "temperature  min 70.00  mean 73.00  max 76.00 °C"
    assert first[2] == "pressure     min 300.00  mean 330.00  max 360.00 kPa"
    assert first[3] == "vibration    min 2.00  mean 2.30  max 2.60 mm/s RMS"
    assert first[4] == "alerts       limit 2, zscore 1"
    assert first[5] == "seq          1 to 9, missing 3 in 2 gaps (3, 6-7), repeats 1"

    second = machine_block(output, "M-002")
    assert second[0].startswith("readings     4  ")
    assert second[4] == "alerts       none"
    assert second[5] == "seq          1 to 4, missing 0 in 0 gaps, repeats 0"

    assert "rejects 3 (machine_id 2, invalid 1)" in output


def test_report_time_range(db_path, capsys):
    assert main(["--db", str(db_path), "--since", "2026-12-04T08:00:02Z", "--until", "2026-12-04 08:00:04"]) == 0
    output = capsys.readouterr().out

    first = machine_block(output, "M-001")
    assert first[0].startswith("readings     3  from 2026-12-04T08:00:02.000Z to 2026-12-04T08:00:04.000Z")
    assert first[4] == "alerts       limit 1"
    assert first[5] == "seq          4 to 8, missing 2 in 1 gaps (6-7), repeats 0"
    assert "rejects 0" in output


def test_report_csv_export(db_path, tmp_path, capsys):
    folder = tmp_path / "export"
    assert main(["--db", str(db_path), "--csv", str(folder)]) == 0

    with open(folder / "readings.csv", newline="", encoding="utf-8") as handle:
        readings = list(csv.DictReader(handle))
    with open(folder / "alerts.csv", newline="", encoding="utf-8") as handle:
        alerts = list(csv.DictReader(handle))

    assert len(readings) == 11
    assert {"machine_id", "timestamp", "temperature", "pressure", "vibration", "seq", "offset"} <= set(readings[0])
    assert readings[0]["timestamp"] <= readings[-1]["timestamp"]
    first = [row for row in readings if row["machine_id"] == "M-001"][0]
    assert float(first["temperature"]) == 70.0
    assert first["seq"] == "1"
    assert len(alerts) == 3
    assert sorted(row["kind"] for row in alerts) == ["limit", "limit", "zscore"]
    assert [row["zscore"] for row in alerts if row["kind"] == "zscore"] == ["6.2"]


def test_report_png_written(db_path, tmp_path, capsys):
    png = tmp_path / "chart.png"
    assert main(["--db", str(db_path), "--png", str(png), "--machine", "M-002"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not png.with_name(png.name + ".partial").exists()


def test_chart_orange_bars_and_alert_edges(db_path):
    connection = open_read_only(db_path, 1000)
    try:
        chart = build_chart(connection, "M-001", TimeRange(), temperature_limit_c=90.0)
    finally:
        connection.close()

    visible = [bar for bar in chart.bars if bar.get_visible()]
    assert len(visible) == 7
    assert all(bar.get_facecolor() == to_rgba(BAR_COLOR) for bar in visible)
    assert to_rgba(BAR_COLOR) == to_rgba("orange")
    heights = [bar.get_height() for bar in visible]
    assert heights == [70.0, 71.0, 72.0, 73.0, 74.0, 75.0, 76.0]
    alerted = [i for i, bar in enumerate(visible) if bar.get_edgecolor() == to_rgba(ALERT_EDGE_COLOR)]
    assert alerted == [2, 5]  # The readings at offsets 2 and 5 raised alerts.
    assert sorted(chart.lines) == ["M-001", "M-002"]
    assert list(chart.lines["M-002"].get_ydata()) == [305.0, 315.0, 325.0, 335.0]
    legend = chart.pressure_axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["M-001", "M-002"]


def test_report_default_machine_is_first(db_path, tmp_path, monkeypatch, capsys):
    chosen = []
    original = sensor_report.build_chart

    def record(connection, machine, time_range, limit):
        chosen.append(machine)
        return original(connection, machine, time_range, limit)

    monkeypatch.setattr(sensor_report, "build_chart", record)
    assert main(["--db", str(db_path), "--png", str(tmp_path / "chart.png")]) == 0
    assert chosen == ["M-001"]


def test_report_unknown_machine(db_path, tmp_path, capsys):
    assert main(["--db", str(db_path), "--png", str(tmp_path / "chart.png"), "--machine", "M-404"]) == 2
    error = capsys.readouterr().err
    assert "machine 'M-404' has no readings" in error
    assert "M-001, M-002" in error
    assert not (tmp_path / "chart.png").exists()


def test_report_png_without_readings(db_path, tmp_path, capsys):
    png = tmp_path / "chart.png"
    assert main(["--db", str(db_path), "--png", str(png), "--since", "2030-01-01T00:00:00Z"]) == 2
    assert "no readings in the selected time range" in capsys.readouterr().err
    assert not png.exists()


def test_report_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    missing = tmp_path / "absent.sqlite"
    assert main(["--db", str(missing)]) == 2
    assert f"database file not found: {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_report_not_a_database(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    path = tmp_path / "notes.sqlite"
    path.write_text("not SQLite at all, just some text that is long enough to fill a header" * 10)
    assert main(["--db", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_invalid_time(db_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", str(db_path), "--since", "yesterday"])
    assert exit_info.value.code == 2
    assert "invalid time 'yesterday'" in capsys.readouterr().err


def test_report_as_subprocess(db_path, tmp_path):
    env = dict(os.environ, LOG_DIR=str(tmp_path / "logs"), MPLBACKEND="Agg")
    png = tmp_path / "chart.png"
    result = run_cli("consumers.sensor_report", "--db", str(db_path), "--png", str(png), env=env, timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert "M-001" in result.stdout
    assert "alerts       limit 2, zscore 1" in result.stdout
    assert png.stat().st_size > 0

    missing = run_cli("consumers.sensor_report", "--db", str(tmp_path / "absent.sqlite"), env=env, timeout_s=60)
    assert missing.returncode == 2
    assert "database file not found" in missing.stderr


def test_report_ignores_uncommitted_writes(db_path, capsys):
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany(
            "INSERT INTO readings (machine_id, timestamp, temperature, pressure, vibration, seq, topic, "
            "partition, offset, received_at) VALUES ('M-009', '2026-12-04T08:05:00.000Z', 1, 1, 1, ?, 't', 0, ?, "
            "'2026-12-04T08:05:00.000Z')", [(n, n) for n in range(1, 4)])
        started = time.monotonic()
        assert main(["--db", str(db_path)]) == 0
        elapsed_s = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    output = capsys.readouterr().out
    assert "M-009" not in output
    assert "M-001" in output
    assert elapsed_s < 5.0  # A WAL reader does not wait for the writer's open transaction.


def test_report_while_consumer_writes(db_path, capsys):
    stop = threading.Event()
    written = []

    def write_batches() -> None:
        database = SensorDatabase(db_path).open()
        offset = 1000
        try:
            while not stop.is_set():
                batch = Batch(readings=reading_rows("M-003", [offset], first_offset=offset, partition=2))
                database.write(batch)
                written.append(offset)
                offset += 1
        finally:
            database.close()

    thread = threading.Thread(target=write_batches)
    thread.start()
    try:
        while len(written) < 5:
            time.sleep(0.01)
        codes = [main(["--db", str(db_path)]) for _ in range(3)]
    finally:
        stop.set()
        thread.join(10)

    assert codes == [0, 0, 0]
    output = capsys.readouterr().out
    assert output.count("M-003") == 3
    assert len(written) > 5


def test_report_retries_while_locked(db_path, monkeypatch, capsys):
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "0")
    holder = lock_exclusively(db_path)
    release = threading.Timer(0.3, holder.close)
    release.start()
    try:
        assert main(["--db", str(db_path)]) == 0
    finally:
        release.join()

    captured = capsys.readouterr()
    assert "sqlite_busy" in captured.err
    assert "M-001" in captured.out


def test_report_gives_up_when_lock_stays(db_path, monkeypatch, capsys):
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "0")
    holder = lock_exclusively(db_path)
    try:
        assert main(["--db", str(db_path)]) == 1
    finally:
        holder.close()
    assert "stayed locked after 5 attempts" in capsys.readouterr().err


def lock_exclusively(path: Path) -> sqlite3.Connection:
    """Take and keep an exclusive lock, which makes every reader of the WAL file get SQLITE_BUSY."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA locking_mode = EXCLUSIVE")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO consumer_runs (started_at) VALUES ('2026-12-04T08:00:00.000Z')")
    connection.execute("COMMIT")
    return connection
