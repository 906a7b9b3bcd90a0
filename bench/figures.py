"""The benchmark figures: each measures the project next to its baseline in the same run and returns result rows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

from bench.broker_limit import java_consumer_rate, java_producer_rate, reading_size_bytes
from bench.chart_frames import EARLY_FRAME, frame_times
from bench.common import BenchContext, Spread, fill_topic, unique_name
from bench.latency import latency_run, memory_run
from bench.throughput import (consumer_bare_rate, consumer_cli_rate, consumer_teaching_rate, prebuilt_messages,
                              producer_bare_rate, producer_cli_rate)

MB = 1024 * 1024
LATENCY_TARGET_MS = 500.0
LATENCY_CHART_TARGET_MS = 1000.0
MEMORY_TARGET_MB = 20.0


@dataclass(frozen=True)
class Sizes:
    """Record counts, durations and repetitions of one bench run."""

    runs: int
    producer_count: int
    consumer_count: int
    teaching_count: int
    latency_s: float
    memory_first: int
    memory_last: int
    chart_late_frame: int
    chart_render_every: int
    scale_count: int
    group_count: int
    java_count: int


QUICK = Sizes(runs=1, producer_count=20_000, consumer_count=20_000, teaching_count=300, latency_s=5,
              memory_first=10_000, memory_last=50_000, chart_late_frame=300, chart_render_every=100,
              scale_count=8_000, group_count=20_000, java_count=30_000)
FULL = Sizes(runs=3, producer_count=50_000, consumer_count=200_000, teaching_count=2_000, latency_s=60,
             memory_first=100_000, memory_last=1_000_000, chart_late_frame=5_000, chart_render_every=50,
             scale_count=30_000, group_count=60_000, java_count=200_000)


@dataclass
class Row:
    """One figure: what was measured, its values per run, and the ratio against its baseline per run."""

    figure: str
    name: str
    product: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    unit: str = "/s"
    target: str = ""
    meets: Callable[[float], bool] | None = None
    detail: str = ""

    def add(self, product: float, baseline: float) -> None:
        self.product.append(product)
        self.baseline.append(baseline)
        self.ratio.append(product / baseline)

    def met(self) -> bool | None:
        return None if self.meets is None else self.meets(Spread.of(self.ratio).median)

    def line(self) -> str:
        ratio = Spread.of(self.ratio)
        verdict = {True: " (target met)", False: " (target missed)", None: ""}[self.met()]
        return (f"{self.figure} {self.name}: {_number(statistics.median(self.product))}{self.unit} vs "
                f"{_number(statistics.median(self.baseline))}{self.unit}{self.detail}{verdict}, "
                f"ratio {ratio.median:.2f}")


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def producer_figure(context: BenchContext, sizes: Sizes) -> list[Row]:
    row = Row("1", "producer CLI --rate max vs bare send loop", target=">= 0.7", meets=lambda r: r >= 0.7)
    messages = prebuilt_messages(sizes.producer_count)
    for run in range(sizes.runs):
        # Alternate the order, so drift in the machine's load does not always favour one side.
        if run % 2 == 0:
            cli = producer_cli_rate(context, unique_name("bench-producer"), sizes.producer_count)
            bare = producer_bare_rate(context, unique_name("bench-bare-producer"), messages)
        else:
            bare = producer_bare_rate(context, unique_name("bench-bare-producer"), messages)
            cli = producer_cli_rate(context, unique_name("bench-producer"), sizes.producer_count)
        row.add(cli, bare)
    return [row]


def consumer_figures(context: BenchContext, sizes: Sizes, topic: str) -> list[Row]:
    bare_row = Row("2a", "consumer CLI into SQLite vs bare poll+json.loads", target=">= 0.5",
                   meets=lambda r: r >= 0.5)
    teaching_row = Row("2b", "consumer CLI into SQLite vs commit per record", target=">= 20",
                       meets=lambda r: r >= 20)
    for _ in range(sizes.runs):
        cli = consumer_cli_rate(context, topic, sizes.consumer_count)
        bare = consumer_bare_rate(context, topic, sizes.consumer_count)
        teaching = consumer_teaching_rate(context, topic, sizes.teaching_count)
        bare_row.add(cli, bare)
        teaching_row.add(cli, teaching)
    return [bare_row, teaching_row]


def latency_figures(context: BenchContext, sizes: Sizes, diagnose: bool) -> list[Row]:
    """Latency p99 against its target; with `diagnose`, one more run with a 200 ms batch interval."""
    cases = [("100/s, chart off", 100, False, LATENCY_TARGET_MS, {}),
             ("1,000/s, chart off", 1000, False, LATENCY_TARGET_MS, {}),
             ("1,000/s, chart frame every 1 s", 1000, True, LATENCY_CHART_TARGET_MS, {})]
    if diagnose:
        cases.append(("1,000/s, chart off, CONSUMER_BATCH_INTERVAL_MS=200", 1000, False, LATENCY_TARGET_MS,
                      {"CONSUMER_BATCH_INTERVAL_MS": "200"}))
    rows = []
    for name, rate, chart, target_ms, env in cases:
        row = Row("3", f"latency p99 {name}", unit=" ms", target=f"p99 < {target_ms:.0f} ms",
                  meets=lambda r: r < 1.0)
        results = []
        runs = 1 if env else sizes.runs
        for _ in range(runs):
            result = latency_run(context, rate, sizes.latency_s, chart, **env)
            results.append(result)
            row.add(result.p99, target_ms)
        row.detail = (f" (p50 {statistics.median(r.p50 for r in results):.0f} ms, "
                      f"p95 {statistics.median(r.p95 for r in results):.0f} ms, "
                      f"poll p99 {statistics.median(r.delivery_p99 for r in results):.0f} ms)")
        if env:
            row.target, row.meets = "diagnostic", None
        rows.append(row)
    return rows


def memory_figure(context: BenchContext, sizes: Sizes, topic: str) -> list[Row]:
    result = memory_run(context, topic, sizes.memory_first, sizes.memory_last)
    growth_mb = result.growth_bytes / MB
    row = Row("4", f"consumer peak RSS after {sizes.memory_last:,} vs after {sizes.memory_first:,} readings",
              unit=" MB", target=f"growth < {MEMORY_TARGET_MB:.0f} MB",
              meets=lambda _r: growth_mb < MEMORY_TARGET_MB, detail=f" (growth {growth_mb:.1f} MB)")
    row.add(result.peak_last_bytes / MB, result.peak_first_bytes / MB)
    return [row]


def chart_figures(context: BenchContext, sizes: Sizes) -> list[Row]:
    rows = []
    for machines in (5, 50):
        row = Row("5", f"chart frame {sizes.chart_late_frame:,} vs frame {EARLY_FRAME}, {machines} machines",
                  unit=" ms", target="at most 1.2", meets=lambda r: r <= 1.2)
        result = frame_times(machines, sizes.chart_late_frame, sizes.chart_render_every,
                             context.settings.consumer_window, context.settings.temperature_max_c)
        row.add(result.late_ms, result.early_ms)
        rows.append(row)
    return rows


def scale_figures(context: BenchContext, sizes: Sizes) -> list[Row]:
    topics = {}
    for machines in (5, 50, 500):
        topics[machines] = unique_name(f"bench-scale-{machines}")
        fill_topic(context.settings, topics[machines], sizes.scale_count, machines)
    group_topic = unique_name("bench-group-6p")
    fill_topic(context.with_partitions(6), group_topic, sizes.group_count, 50)

    rows = {machines: Row("6", f"consumer CLI with {machines} machines vs 5 machines") for machines in (50, 500)}
    group_row = Row("6", "two consumer processes vs one, 6 partitions, one SQLite file")
    for _ in range(sizes.runs):
        rates = {machines: consumer_cli_rate(context, topic, sizes.scale_count) for machines, topic in topics.items()}
        for machines in (50, 500):
            rows[machines].add(rates[machines], rates[5])
        one = consumer_cli_rate(context, group_topic, sizes.group_count)
        two = consumer_cli_rate(context, group_topic, sizes.group_count, processes=2)
        group_row.add(two, one)
    return [rows[50], rows[500], group_row]


def broker_figures(context: BenchContext, sizes: Sizes, producer: Row, consumer: Row) -> list[Row]:
    """Compare the CLIs' median rates from figures 1 and 2 with Kafka's Java tools on the same broker."""
    size = reading_size_bytes()
    producer_row = Row("7", "producer CLI vs Java ProducerPerformance", detail=f" ({size} B records)")
    consumer_row = Row("7", "consumer CLI vs Java ConsumerPerformance", detail=f" ({size} B records)")
    for run in range(sizes.runs):
        topic = unique_name("bench-java")
        java_producer = java_producer_rate(context, topic, sizes.java_count, size, context.settings.producer_linger_ms)
        java_consumer = java_consumer_rate(context, topic, sizes.java_count)
        producer_row.add(producer.product[run % len(producer.product)], java_producer)
        consumer_row.add(consumer.product[run % len(consumer.product)], java_consumer)
    return [producer_row, consumer_row]


def fill_readings_topic(context: BenchContext, count: int) -> str:
    """Fill a fresh topic with `count` readings of 5 machines on 3 partitions, for figures 2 and 4."""
    topic = unique_name("bench-readings")
    fill_topic(context.settings, topic, count)
    return topic
