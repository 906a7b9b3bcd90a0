"""Loguru set up for one CLI process: console plus a rotating file of its own."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import IO, Iterable

from loguru import logger

from utils.utils_config import ConfigError

_LOCK_HANDLES: list[IO[str]] = []  # Kept open for the life of the process so the file lock holds.


def _claim_log_file(log_dir: Path, name: str) -> Path:
    """Return `<name>.log`, or `<name>-<pid>.log` when another live process writes `<name>.log`.

    The claim is an advisory lock on `<name>.log.lock`, released by the OS when the process
    ends, so a crashed process never keeps the main file.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    handle = open(log_dir / f"{name}.log.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return log_dir / f"{name}-{os.getpid()}.log"
    _LOCK_HANDLES.append(handle)
    return log_dir / f"{name}.log"


def _masker(secrets: Iterable[str]):
    hidden = [secret for secret in secrets if secret]

    def patch(record) -> None:
        for secret in hidden:
            if secret in record["message"]:
                record["message"] = record["message"].replace(secret, "*****")

    return patch


class _ToLoguru(logging.Handler):
    """Pass records of a standard-library logger (kafka-python's) on to loguru, keeping their level.

    The client attaches a traceback even to ordinary network errors, such as a broker that
    closed a connection. Those are logged as one line with the exception's repr. Only
    CRITICAL records keep their traceback.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        exception = record.exc_info
        if exception and record.levelno < logging.CRITICAL:
            message = f"{message}: {exception[1]!r}"
            exception = None
        logger.opt(depth=6, exception=exception).log(level, "kafka-python: {}", message)


def _route_library_logs(level: int = logging.WARNING) -> None:
    """Send kafka-python's warnings and errors (reconnects, failed callbacks) into our logs."""
    library_logger = logging.getLogger("kafka")
    library_logger.handlers = [_ToLoguru()]
    library_logger.setLevel(level)
    library_logger.propagate = False


def setup_logging(name: str, level: str = "INFO", log_dir: Path | str = "logs",
                  secrets: Iterable[str] = ()) -> Path:
    """Send logs to stderr at `level` and to a rotating DEBUG file `log_dir/<name>.log`.

    Returns the file in use. Every secret in `secrets` is masked in every message. Raises
    `ConfigError` naming LOG_DIR when the folder cannot be created or written.
    """
    logger.remove()
    logger.configure(patcher=_masker(secrets))
    logger.add(sys.stderr, level=level, format="<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
                                                "{message}", colorize=None)
    _route_library_logs()
    try:
        log_file = _claim_log_file(Path(log_dir), name)
    except OSError as error:
        raise ConfigError(f"invalid LOG_DIR={str(log_dir)!r}: cannot write log files there ({error.strerror}); "
                          f"set LOG_DIR to a writable folder") from None
    logger.add(log_file, level="DEBUG", rotation="10 MB", retention=5, encoding="utf-8",
               format="{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level: <7} pid={process} {name}:{line} {message}")
    if log_file.stem != name:
        logger.info("log_file={} (another process writes {}.log)", log_file, name)
    return log_file
