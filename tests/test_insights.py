"""Unit tests of rolling statistics, limit and z-score alerts, cooldown, re-arm and seq tracking."""

from __future__ import annotations

import random
import statistics

import pytest

from consumers.insights import DetectionConfig, Insights, RollingWindow
from consumers.validation import Reading

START_S = 1796371200.0  # 2026-12-04T08:00:00Z


def make_reading(offset_s: float, machine_id: str = "M-001", temperature: float = 70.0, pressure: float = 300.0,
                 vibration: float = 2.5, seq: int | None = None) -> Reading:
    return Reading(machine_id, f"t+{offset_s:g}s", START_S + offset_s, temperature, pressure, vibration, seq)


def make_insights(window: int = 60, z_threshold: float = 5.0, cooldown_s: float = 60.0) -> Insights:
    config = DetectionConfig(limits={"temperature": ("max", 90.0), "pressure": ("min", 250.0),
                                     "vibration": ("max", 7.1)},
                             z_threshold=z_threshold, cooldown_s=cooldown_s)
    return Insights(config, window)


def test_window_stats_match_statistics():
    window = RollingWindow(5)
    for value in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]:
        window.add(value)

    assert list(window.values) == [4.0, 8.0, 16.0, 32.0, 64.0]
    assert window.mean() == pytest.approx(statistics.mean(window.values))
    assert window.std() == pytest.approx(statistics.stdev(window.values))


def test_window_precision_long_run():
    rng = random.Random(7)
    window = RollingWindow(60)
    for _ in range(100_000):
        window.add(300.0 + rng.gauss(0, 0.01))

    assert window.mean() == pytest.approx(statistics.mean(window.values), rel=1e-12)
    assert window.std() == pytest.approx(statistics.stdev(window.values), rel=1e-6)


def test_window_zscore_needs_spread():
    window = RollingWindow(10)
    for _ in range(10):
        window.add(5.0)

    assert window.std() == 0.0
    assert window.zscore(9.0) is None


def test_insights_rolling_stats():
    insights = make_insights(window=4)
    for i, temperature in enumerate([60.0, 62.0, 64.0, 66.0, 70.0]):
        insights.update(make_reading(i * 2.0, temperature=temperature))

    stats = insights.stats("M-001")["temperature"]

    assert stats.count == 4
    assert stats.last == 70.0
    assert stats.mean == pytest.approx(65.5)
    assert stats.minimum == 62.0
    assert stats.maximum == 70.0
    assert stats.std == pytest.approx(statistics.stdev([62.0, 64.0, 66.0, 70.0]))
    assert stats.rate_per_s == pytest.approx(2.0)


def test_insights_stats_unknown_machine():
    assert make_insights().stats("M-404") == {}


@pytest.mark.parametrize("metric, value, limit", [("temperature", 95.0, 90.0), ("pressure", 240.0, 250.0),
                                                  ("vibration", 8.0, 7.1)])
def test_limit_alert_each_metric(metric, value, limit):
    insights = make_insights()

    alerts = insights.update(make_reading(0, **{metric: value}))

    assert len(alerts) == 1
    assert alerts[0].kind == "limit"
    assert alerts[0].metric == metric
    assert alerts[0].value == value
    assert alerts[0].threshold == limit
    assert alerts[0].zscore is None


def test_limit_not_crossed_no_alert():
    insights = make_insights()

    assert insights.update(make_reading(0, temperature=90.0, pressure=250.0, vibration=7.1)) == []


def test_zscore_alert_after_min_points():
    insights = make_insights(z_threshold=4.0)
    rng = random.Random(1)
    for i in range(20):
        assert insights.update(make_reading(i, temperature=70.0 + rng.gauss(0, 0.5))) == []

    alerts = insights.update(make_reading(20, temperature=80.0))

    assert [alert.kind for alert in alerts] == ["zscore"]
    assert alerts[0].metric == "temperature"
    assert alerts[0].zscore > 4.0
    assert alerts[0].threshold == 4.0


def test_zscore_quiet_before_min_points():
    insights = make_insights(z_threshold=2.0)
    for i, temperature in enumerate([70.0, 70.5, 69.5, 70.2, 69.8]):
        insights.update(make_reading(i, temperature=temperature))

    assert insights.update(make_reading(5, temperature=85.0)) == []


def test_zscore_drop_detected():
    insights = make_insights(z_threshold=4.0)
    rng = random.Random(2)
    for i in range(30):
        insights.update(make_reading(i, pressure=300.0 + rng.gauss(0, 1.0)))

    alerts = insights.update(make_reading(30, pressure=280.0))

    assert len(alerts) == 1
    assert alerts[0].metric == "pressure"
    assert alerts[0].zscore < -4.0


def test_cooldown_suppresses_repeat():
    insights = make_insights(cooldown_s=60.0)

    first = insights.update(make_reading(0, temperature=95.0))
    repeat = insights.update(make_reading(30, temperature=96.0))
    later = insights.update(make_reading(60, temperature=97.0))

    assert len(first) == 1
    assert repeat == []
    assert len(later) == 1
    assert insights.alerts_suppressed == 1


def test_cooldown_per_machine_and_metric():
    insights = make_insights(cooldown_s=60.0)

    insights.update(make_reading(0, temperature=95.0))
    other_metric = insights.update(make_reading(1, temperature=95.0, vibration=9.0))
    other_machine = insights.update(make_reading(2, machine_id="M-002", temperature=95.0))

    assert [(a.metric, a.kind) for a in other_metric] == [("vibration", "limit")]
    assert [(a.machine_id, a.metric) for a in other_machine] == [("M-002", "temperature")]


def test_cooldown_uses_reading_time():
    readings = [make_reading(i * 20.0, temperature=95.0) for i in range(10)]

    live = make_insights(cooldown_s=60.0)
    replay = make_insights(cooldown_s=60.0)
    live_alerts = [len(live.update(r)) for r in readings]
    replay_alerts = [len(replay.update(r)) for r in readings]

    assert live_alerts == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert replay_alerts == live_alerts


def alert_counts(insights: Insights, temperatures: list[float], spacing_s: float) -> list[int]:
    return [len(insights.update(make_reading(i * spacing_s, temperature=t))) for i, t in enumerate(temperatures)]


def test_rearm_after_quiet_readings():
    insights = make_insights(cooldown_s=60.0)

    counts = alert_counts(insights, [95.0, 70.0, 70.0, 70.0, 95.0], spacing_s=1.0)

    assert counts == [1, 0, 0, 0, 1]
    assert insights.alerts_suppressed == 0


def test_rearm_needs_enough_quiet_readings():
    insights = make_insights(cooldown_s=60.0)

    counts = alert_counts(insights, [95.0, 70.0, 70.0, 95.0, 96.0], spacing_s=1.0)

    assert counts == [1, 0, 0, 0, 0]
    assert insights.alerts_suppressed == 2


def test_repeats_same_at_any_pace():
    temperatures = [95.0, 96.0, 70.0, 70.0, 70.0, 94.0, 70.0, 93.0] + [70.0] * 5 + [97.0]

    one_second = alert_counts(make_insights(cooldown_s=60.0), temperatures, spacing_s=1.0)
    one_millisecond = alert_counts(make_insights(cooldown_s=60.0), temperatures, spacing_s=0.001)

    assert one_second == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert one_millisecond == one_second


def test_rearm_per_detector_kind():
    insights = make_insights(z_threshold=4.0, cooldown_s=60.0)
    rng = random.Random(3)
    for i in range(20):
        insights.update(make_reading(i, temperature=70.0 + rng.gauss(0, 0.5)))

    first = insights.update(make_reading(20, temperature=85.0))
    crossing = insights.update(make_reading(21, temperature=95.0))

    assert [a.kind for a in first] == ["zscore"]
    assert [a.kind for a in crossing] == ["limit"]


def test_seq_gaps_and_repeats():
    insights = make_insights()
    for i, seq in enumerate([1, 2, 3, 6, 7, 7, 8, 12, 1, 2]):
        insights.update(make_reading(i, seq=seq))

    state = insights.machines["M-001"]

    assert state.seq_gaps == 2
    assert state.seq_missing == 2 + 3
    assert state.seq_repeats == 2
    assert insights.seq_totals() == {"seq_gaps": 2, "seq_missing": 5, "seq_repeats": 2}


def test_seq_absent_ignored():
    insights = make_insights()
    for i in range(3):
        insights.update(make_reading(i, seq=None))

    assert insights.seq_totals() == {"seq_gaps": 0, "seq_missing": 0, "seq_repeats": 0}


def test_seq_counted_per_machine():
    insights = make_insights()
    insights.update(make_reading(0, machine_id="M-001", seq=1))
    insights.update(make_reading(0, machine_id="M-002", seq=5))
    insights.update(make_reading(1, machine_id="M-001", seq=2))
    insights.update(make_reading(1, machine_id="M-002", seq=6))

    assert insights.seq_totals()["seq_gaps"] == 0


def test_detection_config_from_settings():
    from utils.utils_config import load_settings

    settings = load_settings(env_file="/nonexistent/.env",
                             environ={"ALERT_TEMPERATURE_MAX_C": "85", "ALERT_Z_THRESHOLD": "3.5",
                                      "ALERT_COOLDOWN_S": "10"})
    config = DetectionConfig.from_settings(settings)

    assert config.limits["temperature"] == ("max", 85.0)
    assert config.limits["pressure"] == ("min", settings.pressure_min_kpa)
    assert config.z_threshold == 3.5
    assert config.cooldown_s == 10.0
