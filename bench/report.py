"""Write the benchmark results as Markdown: machine, commands, one table row per figure, then the notes in `bench/notes.md`."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path

from bench.common import Spread
from bench.figures import Row, Sizes
from broker.node_config import libs_dir

NOTES = Path(__file__).with_name("notes.md")


def machine_lines(load_before: tuple[float, ...], load_after: tuple[float, ...], bootstrap: str) -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    kafka_jars = sorted(jar.name for jar in libs_dir().glob("kafka_2.13-*.jar"))
    kafka = kafka_jars[0].removeprefix("kafka_2.13-").removesuffix(".jar") if kafka_jars else "unknown"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; RAM {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, kafka-python {metadata.version('kafka-python')}, "
        f"Matplotlib {metadata.version('matplotlib')}, Apache Kafka {kafka} (one local KRaft node at {bootstrap}, "
        f"512 MB heap)",
        f"- Load average (1, 5, 15 min) at start {_load(load_before)}, at end {_load(load_after)}. The machine is "
        f"shared with other test runs, so absolute rates drift; ratios are measured side by side.",
    ]


def _load(values: tuple[float, ...]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def _cell(values: list[float], unit: str) -> str:
    spread = Spread.of(values)
    fmt = (lambda v: f"{v:,.0f}") if spread.median >= 100 else (lambda v: f"{v:,.1f}")
    return f"{fmt(spread.median)}{unit} ({fmt(spread.minimum)} to {fmt(spread.maximum)})"


def figure_table(rows: list[Row]) -> list[str]:
    lines = ["| # | figure | product | baseline | ratio, median (min to max) | runs | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = Spread.of(row.ratio)
        met = {True: "yes", False: "**no**", None: "-"}[row.met()]
        lines.append(f"| {row.figure} | {row.name}{row.detail} | {_cell(row.product, row.unit)} | "
                     f"{_cell(row.baseline, row.unit)} | {ratio.median:.2f} ({ratio.minimum:.2f} to "
                     f"{ratio.maximum:.2f}) | {ratio.runs} | {row.target or '-'} | {met} |")
    return lines


def sizes_lines(sizes: Sizes) -> list[str]:
    return [
        f"- Runs per figure: {sizes.runs} (latency diagnostic row, memory and chart frames: 1 run each, see below)",
        f"- Producer: {sizes.producer_count:,} readings per side, 5 machines, 3 partitions",
        f"- Consumer: a topic pre-filled with {sizes.consumer_count:,} readings of 5 machines on 3 partitions; "
        f"the commit-per-record baseline reads the first {sizes.teaching_count:,} of them",
        f"- Latency: {sizes.latency_s:g} s at each rate; memory: peak RSS up to {sizes.memory_first:,} and up to "
        f"{sizes.memory_last:,} readings",
        f"- Chart: frame {sizes.chart_late_frame:,} against frame 10, every frame updated, every "
        f"{sizes.chart_render_every}th frame rendered in between",
        f"- Scale: {sizes.scale_count:,} readings per machine count; {sizes.group_count:,} readings of 50 machines on "
        f"6 partitions for one against two processes; Java tools: {sizes.java_count:,} records",
    ]


def write_report(path: Path, rows: list[Row], sizes: Sizes, quick: bool, elapsed_s: float,
                 load_before: tuple[float, ...], load_after: tuple[float, ...], bootstrap: str,
                 complete: bool = True) -> None:
    """Write the page; with `complete=False` the page states that the run had not finished."""
    command = "make bench-quick" if quick else "make bench"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (`python -m bench.run{' --quick' if quick else ''} --output {path}`) on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, in {elapsed_s / 60:.0f} minutes. Every ratio is the product's "
        f"figure divided by a baseline measured in the same run on the same broker.",
        "",
        *([] if complete else ["**Partial: the run had not finished when this page was written; figures "
                               "missing from the table were not measured.**", ""]),
        "## Machine",
        "",
        *machine_lines(load_before, load_after, bootstrap),
        "",
        "## Commands and sizes",
        "",
        "```bash",
        "make bench          # this page: every figure, 3 runs where noted, about 40 minutes on 2 busy cores",
        "make bench-quick    # one run of each figure with small counts, under 3 minutes; prints one line per figure",
        "KAFKA_BOOTSTRAP_SERVERS=localhost:49092 make bench   # a broker of its own on another port",
        "```",
        "",
        *sizes_lines(sizes),
        "",
        "## Results",
        "",
        "Rates are readings (records) per second; \"product\" is the project's CLI or class, \"baseline\" the "
        "reference it is divided by.",
        "",
        *figure_table(rows),
        "",
        "",
    ]
    notes = NOTES.read_text(encoding="utf-8") if NOTES.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + notes, encoding="utf-8")
