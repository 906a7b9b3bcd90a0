"""Summarise the sensor database per machine, and export it as CSV files or as the live chart in a PNG.

    python -m consumers.sensor_report [--db PATH] [--since TIME] [--until TIME]
                                      [--csv DIR] [--png PATH] [--machine ID]

The file is opened read-only, so the report runs while a consumer writes to it. In WAL
mode a reader sees the last committed transaction, and SQLite's WAL documentation states
that readers do not block writers (the reader does hold back checkpoints while it reads). All
queries of one run share one read transaction, so the figures agree with each other.
`--since` and `--until` limit every part of the report: readings and alerts by reading
timestamp, rejects by the time they were received.
Exit status: 0 done, 1 the database stayed locked or failed, 2 usage error, missing file
or a file that is not a sensor database.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from loguru import logger

from consumers.chart_runner import create_headless_chart
from consumers.sensor_chart import SensorChart, save_png
from consumers.sensor_db import is_lock_error
from consumers.validation import METRICS, Reading
from utils.utils_config import ConfigError, Settings, load_settings, project_path
from utils.utils_logger import setup_logging

UNITS = {"temperature": "°C", "pressure": "kPa", "vibration": "mm/s RMS"}
LOCK_RETRIES = 5
LOCK_FIRST_DELAY_S = 0.1
# Bars per machine in the PNG at most. A longer range keeps its latest readings, as the live chart's window does.
MAX_CHART_POINTS = 2000
MAX_LISTED_GAPS = 5
CSV_FETCH_ROWS = 1000


class ReportError(RuntimeError):
    """A database the report cannot read; the message names the file and what to do."""


@dataclass(frozen=True)
class TimeRange:
    """Inclusive bounds as stored timestamp text (UTC with milliseconds and `Z`), None when open."""

    since: str | None = None
    until: str | None = None

    def where(self, column: str) -> tuple[str, list[str]]:
        """Return an SQL condition on `column` and its parameters, `1` when the range is open."""
        conditions, parameters = [], []
        if self.since:
            conditions.append(f"{column} >= ?")
            parameters.append(self.since)
        if self.until:
            conditions.append(f"{column} <= ?")
            parameters.append(self.until)
        return (" AND ".join(conditions) or "1"), parameters


def parse_time(text: str) -> str:
    """Normalise an ISO-8601 time (a zone-less one is taken as UTC) to the stored text form."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected ISO-8601 such as 2026-12-04T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def open_read_only(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open an existing database read-only through a `file:` URI; raise `ReportError` when it is missing."""
    if not path.is_file():
        raise ReportError(f"database file not found: {path}; run the consumer first, or pass --db PATH")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=busy_timeout_ms / 1000, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return connection


# ---------------------------------------------------------------------------- figures


def machine_summaries(connection: sqlite3.Connection, time_range: TimeRange) -> list[dict]:
    """Compute per machine: reading count, first and last timestamp, min/mean/max per metric, seq figures."""
    where, parameters = time_range.where("timestamp")
    columns = ", ".join(f"MIN({m}), AVG({m}), MAX({m})" for m in METRICS)
    rows = connection.execute(
        f"SELECT machine_id, COUNT(*), MIN(timestamp), MAX(timestamp), {columns}, "
        f"MIN(seq), MAX(seq), COUNT(seq), COUNT(DISTINCT seq) "
        f"FROM readings WHERE {where} GROUP BY machine_id ORDER BY machine_id", parameters).fetchall()

    summaries = []
    for row in rows:
        machine_id, count, first, last = row[:4]
        metrics = {metric: row[4 + 3 * i: 7 + 3 * i] for i, metric in enumerate(METRICS)}
        seq_min, seq_max, seq_count, seq_distinct = row[4 + 3 * len(METRICS):]
        summary = {"machine_id": machine_id, "readings": count, "first": first, "last": last,
                   "metrics": metrics, "seq_min": seq_min, "seq_max": seq_max, "seq_count": seq_count,
                   "seq_repeats": seq_count - seq_distinct, "seq_missing": 0, "seq_gaps": []}
        if seq_count:
            summary["seq_missing"] = (seq_max - seq_min + 1) - seq_distinct
        summaries.append(summary)

    gaps = seq_gaps(connection, time_range)
    for summary in summaries:
        summary["seq_gaps"] = gaps.get(summary["machine_id"], [])
    return summaries


def seq_gaps(connection: sqlite3.Connection, time_range: TimeRange) -> dict[str, list[tuple[int, int]]]:
    """Find the missing seq ranges (first, last) per machine between its lowest and highest stored seq."""
    where, parameters = time_range.where("timestamp")
    rows = connection.execute(
        "SELECT machine_id, previous + 1, seq - 1 FROM ("
        "  SELECT machine_id, seq, LAG(seq) OVER (PARTITION BY machine_id ORDER BY seq) AS previous"
        f"  FROM (SELECT DISTINCT machine_id, seq FROM readings WHERE seq IS NOT NULL AND {where})"
        ") WHERE seq - previous > 1 ORDER BY machine_id, seq", parameters).fetchall()
    gaps: dict[str, list[tuple[int, int]]] = {}
    for machine_id, first, last in rows:
        gaps.setdefault(machine_id, []).append((first, last))
    return gaps


def alert_counts(connection: sqlite3.Connection, time_range: TimeRange) -> dict[str, dict[str, int]]:
    """Count alerts per machine and kind."""
    where, parameters = time_range.where("timestamp")
    counts: dict[str, dict[str, int]] = {}
    for machine_id, kind, count in connection.execute(
            f"SELECT machine_id, kind, COUNT(*) FROM alerts WHERE {where} GROUP BY machine_id, kind "
            "ORDER BY machine_id, kind", parameters):
        counts.setdefault(machine_id, {})[kind] = count
    return counts


def reject_counts(connection: sqlite3.Connection, time_range: TimeRange) -> dict[str, int]:
    """Count rejects by the first word of their reason, which names the field (rejects may have no machine id)."""
    where, parameters = time_range.where("received_at")
    counts: dict[str, int] = {}
    for (reason,) in connection.execute(f"SELECT reason FROM rejects WHERE {where}", parameters):
        word = reason.split(" ", 1)[0]
        counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def format_report(path: Path, summaries: list[dict], alerts: dict[str, dict[str, int]],
                  rejects: dict[str, int]) -> str:
    """Lay out the figures as plain text, one block per machine."""
    lines = [f"Sensor report of {path}"]
    if not summaries:
        lines.append("no readings in the selected time range")
    for summary in summaries:
        machine_id = summary["machine_id"]
        span_s = _seconds_between(summary["first"], summary["last"])
        lines.append("")
        lines.append(f"{machine_id}")
        lines.append(f"  readings     {summary['readings']}  from {summary['first']} to {summary['last']} "
                     f"({span_s:.1f} s)")
        for metric, (low, mean, high) in summary["metrics"].items():
            lines.append(f"  {metric:<12} min {low:.2f}  mean {mean:.2f}  max {high:.2f} {UNITS[metric]}")
        kinds = alerts.get(machine_id, {})
        lines.append("  alerts       " + (", ".join(f"{kind} {n}" for kind, n in kinds.items()) or "none"))
        lines.append("  seq          " + _seq_text(summary))

    total = sum(rejects.values())
    lines.append("")
    by_field = ", ".join(f"{word} {n}" for word, n in rejects.items())
    lines.append(f"rejects {total}" + (f" ({by_field})" if by_field else ""))
    return "\n".join(lines)


def _seq_text(summary: dict) -> str:
    if not summary["seq_count"]:
        return "none stored"
    gaps = summary["seq_gaps"]
    gap_list = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in gaps[:MAX_LISTED_GAPS])
    if len(gaps) > MAX_LISTED_GAPS:
        gap_list += f", … {len(gaps) - MAX_LISTED_GAPS} more"
    text = (f"{summary['seq_min']} to {summary['seq_max']}, missing {summary['seq_missing']} "
            f"in {len(gaps)} gaps")
    if gap_list:
        text += f" ({gap_list})"
    # A producer restart begins again at seq 1, so its readings count as repeats here.
    return text + f", repeats {summary['seq_repeats']}"


def _seconds_between(first: str, last: str) -> float:
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


# ---------------------------------------------------------------------------- CSV and PNG


def export_csv(connection: sqlite3.Connection, folder: Path, time_range: TimeRange) -> list[Path]:
    """Write `readings.csv` and `alerts.csv` (every column, header row first) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    where, parameters = time_range.where("timestamp")
    written = []
    for table in ("readings", "alerts"):
        path = folder / f"{table}.csv"
        cursor = connection.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY timestamp, id", parameters)
        with open(path, "w", newline="", encoding="utf-8") as output:
            writer = csv.writer(output)
            writer.writerow([column[0] for column in cursor.description])
            while rows := cursor.fetchmany(CSV_FETCH_ROWS):
                writer.writerows(rows)
        written.append(path)
    return written


def build_chart(connection: sqlite3.Connection, machine: str, time_range: TimeRange,
                temperature_limit_c: float) -> SensorChart:
    """Draw the live consumer's chart from stored readings: `machine`'s temperature bars, pressure per machine.

    A bar gets the alert edge when any alert was stored for its record.
    """
    where, parameters = time_range.where("r.timestamp")
    (most,) = connection.execute(
        f"SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM readings r WHERE {where} "
        "GROUP BY machine_id)", parameters).fetchone()
    window = max(1, min(most, MAX_CHART_POINTS))
    if most > MAX_CHART_POINTS:
        logger.warning("the chart shows the last {} readings per machine of {}; narrow --since/--until to see "
                       "earlier ones", MAX_CHART_POINTS, most)

    chart = create_headless_chart(window, temperature_limit_c, machine)
    rows = connection.execute(
        "SELECT r.machine_id, r.timestamp, r.temperature, r.pressure, r.vibration, r.seq, "
        "EXISTS (SELECT 1 FROM alerts a WHERE a.topic = r.topic AND a.partition = r.partition "
        "AND a.offset = r.offset) "
        f"FROM readings r WHERE {where} ORDER BY r.timestamp, r.id", parameters)
    for machine_id, timestamp, temperature, pressure, vibration, seq, alerted in rows:
        timestamp_s = datetime.fromisoformat(timestamp).timestamp()
        reading = Reading(machine_id, timestamp, timestamp_s, temperature, pressure, vibration, seq)
        chart.add(reading, bool(alerted))

    span = f"{time_range.since or 'start'} to {time_range.until or 'end'}"
    chart.set_status(f"Stored readings, {span}")
    chart.update()
    return chart


# ---------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m consumers.sensor_report", description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="SQLite database file (default SQLITE_PATH); a relative path is taken "
                                     "from the project folder")
    parser.add_argument("--since", type=parse_time, help="first reading time to include, ISO-8601 (zone-less = UTC)")
    parser.add_argument("--until", type=parse_time, help="last reading time to include, ISO-8601 (zone-less = UTC)")
    parser.add_argument("--csv", metavar="DIR", help="write readings.csv and alerts.csv into this folder")
    parser.add_argument("--png", metavar="PATH", help="write the temperature and pressure chart as a PNG file")
    parser.add_argument("--machine", metavar="ID", help="machine whose temperature bars the PNG shows "
                                                        "(default: the first machine id in sort order)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Read the figures, print the report, and write the requested CSV and PNG files."""
    path = settings.sqlite_file()
    time_range = TimeRange(args.since, args.until)
    delay_s = LOCK_FIRST_DELAY_S
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            return _run_once(args, settings, path, time_range)
        except sqlite3.OperationalError as error:
            if not is_lock_error(error):
                raise
            if attempt == LOCK_RETRIES:
                print(f"error: the database {path} stayed locked after {attempt} attempts: {error}; "
                      "try again when the writer is idle", file=sys.stderr)
                return 1
            logger.warning("sqlite_busy path={} attempt={} retry_in_s={:.1f} error=\"{}\"", path, attempt,
                           delay_s, error)
            time.sleep(delay_s)
            delay_s *= 2
    return 1


def _run_once(args: argparse.Namespace, settings: Settings, path: Path, time_range: TimeRange) -> int:
    connection = open_read_only(path, settings.sqlite_busy_timeout_ms)
    try:
        connection.execute("BEGIN")  # One snapshot for every query below.
        summaries = machine_summaries(connection, time_range)
        report = format_report(path, summaries, alert_counts(connection, time_range),
                               reject_counts(connection, time_range))

        machine = args.machine
        machines = [summary["machine_id"] for summary in summaries]
        if args.png and machine is None and machines:
            machine = machines[0]
        if args.png and not machines:
            print("error: no readings in the selected time range, so there is no chart to draw; "
                  "widen --since/--until", file=sys.stderr)
            return 2
        if args.png and machine not in machines:
            print(f"error: machine {machine!r} has no readings in the selected time range; "
                  f"machines with readings: {', '.join(machines)}", file=sys.stderr)
            return 2

        if args.csv:
            try:
                for written in export_csv(connection, project_path(args.csv), time_range):
                    logger.info("wrote {}", written)
            except OSError as error:
                raise ReportError(f"cannot write CSV files to --csv {args.csv}: {error.strerror}; "
                                  f"give a writable folder") from None
        if args.png:
            chart = build_chart(connection, machine, time_range, settings.temperature_max_c)
            try:
                logger.info("wrote {}", save_png(chart.figure, project_path(args.png)))
            except OSError as error:
                raise ReportError(f"cannot write the chart to --png {args.png}: {error.strerror}; "
                                  f"give a path in a writable folder") from None
        connection.execute("COMMIT")
    finally:
        connection.close()
    print(report, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(sqlite_path=args.db)
        setup_logging("sensor_report", settings.log_level, settings.log_folder(), settings.secrets())
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    try:
        return run(args, settings)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:
        # "file is not a database", "no such table: readings", and other damage to the file.
        print(f"error: cannot read {settings.sqlite_file()} as a sensor database: {error}; "
              "pass --db with a file the consumer wrote", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
