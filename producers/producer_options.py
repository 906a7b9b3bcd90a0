"""Command-line options of the sensor producer, checked with the same parsers as the settings."""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, fields
from typing import Callable

from utils.utils_config import Settings, load_settings


@dataclass(frozen=True)
class RunOptions:
    """Number and pace of the readings to send. `rate_per_s=math.inf` means as fast as possible."""

    machines: int
    interval_s: float
    rate_per_s: float | None = None
    count: int | None = None
    duration_s: float | None = None
    seed: int = 0
    fault_rate: float = 0.0


def _setting_help(name: str, about: str) -> str:
    """Append the setting's environment variable and built-in default to an option's help text."""
    spec = next(spec for spec in fields(Settings) if spec.name == name)
    return f"{about} (default: {spec.metadata['env']}, else {spec.metadata['default']})"


def _setting_type(name: str) -> Callable[[str], object]:
    """Build an argparse type from the parser of the `Settings` field `name`, so flags and `.env` agree."""
    parse = next(spec.metadata["parse"] for spec in fields(Settings) if spec.name == name)

    def parse_flag(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {error}") from None

    return parse_flag


def _rate(text: str) -> float:
    if text.strip().lower() in ("max", "0"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number greater than 0, or max")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number of at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number greater than 0")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m producers.sensor_producer",
        description="Stream simulated machine sensor readings to a Kafka topic. An option left out takes "
                    "its value from the environment variable named in its help, then from .env, then from "
                    "the built-in default. Exit status: 0 when every reading was acknowledged, 1 when any "
                    "failed, 2 for invalid options or settings or an unreachable broker.")
    parser.add_argument("--topic", type=_setting_type("topic"), help=_setting_help("topic", "Kafka topic to send to"))
    parser.add_argument("--bootstrap-servers", type=_setting_type("bootstrap_servers"), metavar="HOST:PORT[,...]",
                        help=_setting_help("bootstrap_servers", "Kafka bootstrap servers"))
    parser.add_argument("--machines", type=_positive_int, metavar="N",
                        help=_setting_help("producer_machines", "number of simulated machines, named M-001, M-002, ..."))

    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--interval-s", type=_positive_float, metavar="S",
                      help=_setting_help("producer_interval_s",
                                         "seconds between rounds; each round sends one reading per machine"))
    pace.add_argument("--rate", type=_rate, metavar="R",
                      help="readings per second in total across all machines, for load tests, in place of "
                           "--interval-s; 'max' or 0 sends as fast as the client accepts them")

    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=_positive_int, metavar="N",
                      help="stop after N readings in total (default: run until Ctrl+C or SIGTERM)")
    stop.add_argument("--duration-s", type=_positive_float, metavar="S",
                      help="stop after S seconds (default: run until Ctrl+C or SIGTERM)")

    parser.add_argument("--seed", type=_seed, metavar="N",
                        help="random seed; the same seed and options give the same readings "
                             "(default: a random seed, logged at start)")
    parser.add_argument("--fault-rate", type=_setting_type("producer_fault_rate"), metavar="P",
                        help=_setting_help("producer_fault_rate",
                                           "probability from 0 to 1, per reading, that a fault starts on that machine"))
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace) -> Settings:
    """Load settings with the flags on top. Raises ConfigError for an invalid environment or .env value."""
    return load_settings(topic=args.topic, bootstrap_servers=args.bootstrap_servers,
                         producer_machines=args.machines, producer_interval_s=args.interval_s,
                         producer_fault_rate=args.fault_rate)


def build_options(args: argparse.Namespace, settings: Settings) -> RunOptions:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    return RunOptions(machines=settings.producer_machines, interval_s=settings.producer_interval_s,
                      rate_per_s=args.rate, count=args.count, duration_s=args.duration_s, seed=seed,
                      fault_rate=settings.producer_fault_rate)


def describe_pace(options: RunOptions) -> str:
    if options.rate_per_s is None:
        return f"interval_s={options.interval_s}"
    return "rate=max" if math.isinf(options.rate_per_s) else f"rate={options.rate_per_s}"
