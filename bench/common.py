"""Helpers shared by every benchmark: the broker, a scratch folder, the CLIs as subprocesses, topic filling, statistics."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from utils.utils_config import PROJECT_ROOT, Settings, load_settings

PYTHON = sys.executable
PROCESS_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 60.0
FILL_SEED = 7


@dataclass
class BenchContext:
    """Settings of the broker under test and the scratch folder of one bench run (logs, SQLite files)."""

    settings: Settings
    scratch: Path
    quick: bool

    def path(self, name: str) -> Path:
        return self.scratch / name

    def child_env(self, **extra: str) -> dict[str, str]:
        """Return the environment of a CLI subprocess: logs in the scratch folder, Agg for Matplotlib."""
        env = dict(os.environ)
        env.update(KAFKA_BOOTSTRAP_SERVERS=self.settings.bootstrap_servers, LOG_DIR=str(self.scratch / "logs"),
                   LOG_LEVEL="INFO", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        env.update(extra)
        return env

    def with_partitions(self, partitions: int) -> Settings:
        return dataclasses.replace(self.settings, topic_partitions=partitions)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def bench_context(quick: bool, keep_scratch: bool = False) -> Iterator[BenchContext]:
    """Yield a context on the broker at KAFKA_BOOTSTRAP_SERVERS, starting the local one when no broker responds there.

    A broker started here is stopped at the end; one that was already running is left running.
    """
    from broker import local_kafka
    from broker.node_config import cluster_nodes

    settings = load_settings()
    address = settings.bootstrap_servers.split(",")[0]
    started = []
    if not local_kafka.answers_metadata(address, 3.0):
        nodes = cluster_nodes(local_kafka.first_local_port(settings.bootstrap_servers), 1)
        began = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):
            local_kafka.start(nodes)
        started = nodes
        print(f"started the local broker at {address} in {time.monotonic() - began:.1f} s", flush=True)

    scratch = Path(tempfile.mkdtemp(prefix="sensor-bench-"))
    failed = True
    try:
        yield BenchContext(settings, scratch, quick)
        failed = False
    finally:
        if failed:
            print(f"the CLIs' logs and SQLite files stay in {scratch} for diagnosis", file=sys.stderr, flush=True)
        elif not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if started:
            with contextlib.redirect_stdout(io.StringIO()):
                local_kafka.stop(started)
            print(f"stopped the local broker at {address}", flush=True)


# ---------------------------------------------------------------------------- subprocesses


class Child:
    """A CLI started as a subprocess, with stdout and stderr in files of the scratch folder."""

    def __init__(self, context: BenchContext, name: str, args: Sequence[str], env: dict[str, str] | None = None):
        self.name = name
        self.out_path = context.path(f"{name}.out")
        self.err_path = context.path(f"{name}.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen([PYTHON, *args], cwd=PROJECT_ROOT, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, env=env or context.child_env())

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until `text` appears on the child's stderr; raise when it exits or the time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.stderr_text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not log {text!r} within {timeout_s:.0f} s "
                         f"(exit status {self.process.poll()}); its stderr ends with:\n{self.tail()}")

    def wait(self, timeout_s: float = PROCESS_TIMEOUT_S) -> str:
        """Wait for a clean exit and return stderr; raise `BenchError` on a timeout or a non-zero exit."""
        try:
            status = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise BenchError(f"{self.name} did not finish within {timeout_s:.0f} s:\n{self.tail()}") from None
        if status != 0:
            raise BenchError(f"{self.name} exited with status {status}:\n{self.tail()}")
        return self.stderr_text()

    def stop(self) -> None:
        """Send SIGTERM, which the CLIs handle as a clean stop, if the child still runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


class BenchError(RuntimeError):
    """A benchmark step failed; the message names the step and shows the child's last log lines."""


# ---------------------------------------------------------------------------- topics


def create_topic(settings: Settings, topic: str) -> None:
    from utils.utils_kafka import ensure_topic

    ensure_topic(settings, topic)


def fill_topic(settings: Settings, topic: str, count: int, machines: int = 5) -> None:
    """Send `count` simulated readings of `machines` machines with the project's producer settings, then flush.

    The readings are those the producer CLI sends (same simulation, encoding, keys and
    `fault` header), built in this process so that filling is not itself measured.
    """
    from producers.message import FAULT_HEADER, LABELS, encode_value
    from producers.simulation import Plant
    from utils.utils_producer import create_producer

    create_topic(settings, topic)
    plant = Plant(machines, FILL_SEED, settings.producer_fault_rate)
    headers = {label: [(FAULT_HEADER, label.encode())] for label in LABELS}
    producer = create_producer(settings, max_block_ms=60_000)
    try:
        for _ in range(count):
            reading = plant.next_reading(time.time_ns() // 1_000_000)
            message = reading.message
            producer.send(topic, key=message["machine_id"].encode(), value=encode_value(message),
                          headers=headers[reading.label])
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of repeated measurements of one quantity."""

    median: float
    minimum: float
    maximum: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            raise ValueError("no measurements to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile (0 to 1) by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
