"""Helpers for tests that drive the real CLIs as subprocesses against the real broker."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from utils.utils_config import PROJECT_ROOT


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cli_env(tmp_path: Path, bootstrap: str, topic: str, **extra: Any) -> dict[str, str]:
    """Return an environment for a CLI subprocess whose database and logs live in `tmp_path`."""
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "SQLITE_PATH": str(tmp_path / "sensors.sqlite"),
        "LOG_DIR": str(tmp_path / "logs"),
        "CONSUMER_GROUP_ID": unique_name("test-group"),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({key: str(value) for key, value in extra.items()})
    return env


def run_cli(module: str, *args: str, env: dict[str, str], timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the project folder and return its exit status and output."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def start_cli(module: str, *args: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `python -m module args` in the background, with its output in `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as output:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, quiet_s: float = 1.0) -> list:
    """Read `topic` from the start until `expected` records arrived, then `quiet_s` more to catch extra ones."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    records = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def query(db_path: Path, sql: str, *params) -> list[tuple]:
    """Run one read query on a SQLite file, waiting up to 10 s for a writer's lock."""
    connection = sqlite3.connect(db_path, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()
