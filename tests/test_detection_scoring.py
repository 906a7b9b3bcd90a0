"""Unit tests of detection scoring on hand-made label and alert sequences."""

from __future__ import annotations

import pytest

from bench.detection_scoring import Episode, find_episodes, nearest_rank, score_run

N, O, P, B, S = "normal", "overheating", "pressure_loss", "bearing_wear", "spike"


def test_episodes_split_on_label_change():
    labels = [N, O, O, O, N, N, S, P, P, N, B]

    assert find_episodes("M-001", labels) == [
        Episode("M-001", O, 1, 3),
        Episode("M-001", S, 6, 6),
        Episode("M-001", P, 7, 8),
        Episode("M-001", B, 10, 10),
    ]


def test_episodes_same_kind_back_to_back_merge():
    assert find_episodes("M-001", [N, S, S, N]) == [Episode("M-001", S, 1, 2)]


def test_episodes_none_when_all_normal():
    assert find_episodes("M-001", [N, N, N]) == []


def test_episodes_missing_label_rejected():
    with pytest.raises(ValueError, match="reading 2"):
        find_episodes("M-001", [N, N, None])


def test_detected_on_first_reading():
    score = score_run({"M-001": ([N, N, O, O, O, N, N], [2, 4])})

    assert score.kinds[O].episodes == 1
    assert score.kinds[O].detected == 1
    assert score.kinds[O].delays == [0]
    assert score.episode_alerts == 2
    assert score.false_alarms == 0


def test_delay_counts_readings_from_start():
    score = score_run({"M-001": ([N, O, O, O, O, N], [3])})

    assert score.kinds[O].delays == [2]


def test_alert_in_tail_detects():
    labels = [N, S, N, N, N, N, N]

    within = score_run({"M-001": (labels, [4])}, tail_readings=3)
    past = score_run({"M-001": (labels, [5])}, tail_readings=3)

    assert within.kinds[S].detected == 1
    assert within.kinds[S].delays == [3]
    assert within.tail_alerts == 1
    assert within.false_alarms == 0
    assert past.kinds[S].detected == 0
    assert past.missed == [Episode("M-001", S, 1, 1)]
    assert past.false_alarms == 1


def test_alert_before_episode_no_detection():
    score = score_run({"M-001": ([N, N, P, P, N], [1])})

    assert score.kinds[P].detected == 0
    assert score.false_alarms == 1


def test_alert_on_other_machine_no_detection():
    score = score_run({"M-001": ([N, B, B, N], []), "M-002": ([N, N, N, N], [2])})

    assert score.kinds[B].detected == 0
    assert score.false_alarms == 1


def test_false_alarm_rate_excludes_tails():
    labels = [N] * 10 + [S] + [N] * 9
    alerts = [0, 0, 5, 12]  # two alerts on reading 0, one on reading 5, one in the tail of the spike

    score = score_run({"M-001": (labels, alerts)}, tail_readings=3)

    assert score.false_alarms == 3
    assert score.tail_readings == 3
    assert score.tail_alerts == 1
    assert score.normal_readings == 19 - 3
    assert score.false_alarms_per_1000 == pytest.approx(3 * 1000 / 16)


def test_tail_clipped_at_sequence_end():
    score = score_run({"M-001": ([N, N, O], [])}, tail_readings=3)

    assert score.tail_readings == 0
    assert score.normal_readings == 2
    assert score.kinds[O].detected == 0


def test_recall_and_delays_per_kind():
    machines = {
        "M-001": ([N, O, O, N, N, N, P, P, N, N], [2, 6]),
        "M-002": ([N, O, O, O, N, N, N, N, S, N], [9]),
    }

    score = score_run(machines, tail_readings=1)

    assert score.kinds[O].episodes == 2
    assert score.kinds[O].detected == 1
    assert score.kinds[O].recall == 0.5
    assert score.kinds[P].recall == 1.0
    assert score.kinds[S].delays == [1]
    assert score.overall().episodes == 4
    assert score.overall().delays == [1, 0, 1]
    assert sorted((e.machine_id, e.kind) for e in score.missed) == [("M-002", O)]


def test_empty_run_scores_none():
    score = score_run({})

    assert score.episodes == 0
    assert score.false_alarms_per_1000 is None
    assert score.overall().recall is None
    assert score.overall().median_delay is None


def test_alert_outside_sequence_rejected():
    with pytest.raises(ValueError, match="outside"):
        score_run({"M-001": ([N, N], [2])})


@pytest.mark.parametrize("values, fraction, expected", [
    ([0, 0, 0, 0, 1], 0.95, 1),
    ([0] * 19 + [5], 0.95, 0),
    ([0] * 18 + [4, 5], 0.95, 4),
    ([3], 0.95, 3),
    ([2, 1, 3], 0.5, 2),
])
def test_nearest_rank_percentile(values, fraction, expected):
    assert nearest_rank(values, fraction) == expected


def test_nearest_rank_empty_rejected():
    with pytest.raises(ValueError):
        nearest_rank([], 0.95)
