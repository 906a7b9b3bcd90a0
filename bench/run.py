"""Run the benchmarks against the broker at KAFKA_BOOTSTRAP_SERVERS: `python -m bench.run [--quick] [--output FILE]`.

Starts the local broker when no broker responds there and stops it at the end. Prints one
line per figure, ending in its ratio against the baseline measured in the same run.
With `--output`, writes the full tables as Markdown. Exit status: 0 when every figure was
measured (met targets or not), 1 when a step failed, 2 when no broker could be used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import figures
from bench.common import BenchError, bench_context
from bench.report import write_report

FIGURE_GROUPS = ("producer", "consumer", "broker", "chart", "scale", "latency", "memory")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run of each figure with small counts, under 3 minutes on 2 cores")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the results as Markdown to FILE")
    parser.add_argument("--figures", default=",".join(FIGURE_GROUPS), metavar="NAME[,NAME...]",
                        help="figure groups to measure, in this order: " + ", ".join(FIGURE_GROUPS) + " (default: all)")
    parser.add_argument("--keep-scratch", action="store_true",
                        help="keep the scratch folder with the SQLite files and the CLIs' logs")
    return parser.parse_args(argv)


def run_all(context, sizes: figures.Sizes, selected: set[str], show) -> list[figures.Row]:
    """Measure the `selected` figure groups, cheapest first, calling `show(rows, new_rows)` as each one is done.

    The broker group divides the producer and consumer rates, so it runs only with both of them.
    """
    rows: list[figures.Row] = []

    def keep(new_rows: list[figures.Row]) -> list[figures.Row]:
        rows.extend(new_rows)
        show(rows, new_rows)
        return new_rows

    producer_row = consumer_row = None
    if "producer" in selected:
        producer_row = keep(figures.producer_figure(context, sizes))[0]
    if "consumer" in selected:
        consumer_topic = figures.fill_readings_topic(context, sizes.consumer_count)
        consumer_row = keep(figures.consumer_figures(context, sizes, consumer_topic))[0]
    if "broker" in selected and producer_row and consumer_row:
        keep(figures.broker_figures(context, sizes, producer_row, consumer_row))
    if "chart" in selected:
        keep(figures.chart_figures(context, sizes))
    if "scale" in selected:
        keep(figures.scale_figures(context, sizes))
    if "latency" in selected:
        keep(figures.latency_figures(context, sizes, diagnose=not context.quick))
    if "memory" in selected:
        memory_topic = figures.fill_readings_topic(context, sizes.memory_last)
        keep(figures.memory_figure(context, sizes, memory_topic))
    return rows


def main(argv: list[str] | None = None) -> int:
    from broker.local_kafka import BrokerToolError
    from utils.utils_config import ConfigError
    from utils.utils_kafka import BrokerUnavailable

    from loguru import logger

    args = parse_args(argv)
    selected = {name.strip() for name in args.figures.split(",") if name.strip()}
    unknown = selected - set(FIGURE_GROUPS)
    if unknown:
        print(f"error: invalid --figures {args.figures!r}: unknown {', '.join(sorted(unknown))}; "
              f"expected names from {', '.join(FIGURE_GROUPS)}", file=sys.stderr)
        return 2
    os.environ.setdefault("MPLBACKEND", "Agg")
    # The project's helpers log at INFO (topic created and so on); only their warnings belong in bench output.
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{level} {message}")
    sizes = figures.QUICK if args.quick else figures.FULL
    started = time.monotonic()
    load_before = os.getloadavg()

    def show(rows: list[figures.Row], new_rows: list[figures.Row]) -> None:
        for row in new_rows:
            print(row.line(), flush=True)
        if args.output:
            # Rewritten after each figure, so an interrupted run still leaves the figures it finished.
            write_report(args.output, rows, sizes, args.quick, time.monotonic() - started, load_before,
                         os.getloadavg(), bootstrap, complete=False)

    try:
        with bench_context(args.quick, args.keep_scratch) as context:
            bootstrap = context.settings.bootstrap_servers
            if args.keep_scratch:
                print(f"scratch folder: {context.scratch}", flush=True)
            rows = run_all(context, sizes, selected, show)
    except (ConfigError, BrokerUnavailable, BrokerToolError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    elapsed_s = time.monotonic() - started
    print(f"done in {elapsed_s:.0f} s", flush=True)
    if args.output:
        write_report(args.output, rows, sizes, args.quick, elapsed_s, load_before, os.getloadavg(), bootstrap)
        print(f"wrote {args.output}", flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
