"""Summaries over episode records: the numbers every report and results table is built from."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regrpo.evaluation import EpisodeRecord, summarise


def record(
    correct: bool, calls: int = 1, failures: int = 0, reflection_tokens: int = 0, wall_s: float = 1.0, **kw
):
    fields = dict(
        task_id="t",
        category="receipt",
        difficulty=1,
        trace_id="x",
        status="answered",
        answer="1",
        expected="1",
        correct=correct,
        steps=calls + 1,
        tool_calls=calls,
        tool_failures=failures,
        reflections=1 if reflection_tokens else 0,
        valid_reflections=0,
        reflection_tokens=reflection_tokens,
        wall_s=wall_s,
    )
    return EpisodeRecord(**(fields | kw))


def test_summary_counts_success_calls_failures_and_recovery():
    records = [
        record(True, calls=2, failures=1, reflection_tokens=30, wall_s=1.0),  # recovered
        record(False, calls=3, failures=2, reflection_tokens=10, wall_s=3.0),  # failed, not recovered
        record(True, calls=1, wall_s=2.0),
        record(False, calls=0, wall_s=4.0),
    ]
    s = summarise(records)
    assert s.episodes == 4
    assert s.success_rate == 0.5
    assert s.tool_calls_per_episode == 6 / 4
    assert s.tool_failure_rate == 3 / 6
    assert s.episodes_with_failure == 2
    assert s.recovery_rate == 0.5
    assert s.reflections_per_episode == 2 / 4
    assert s.reflection_tokens_per_episode == 40 / 4
    assert s.latency_p50_s == 2.5 and s.latency_mean_s == 2.5


def test_recovery_rate_is_undefined_without_failures_not_zero():
    s = summarise([record(True), record(False)])
    assert s.episodes_with_failure == 0 and s.recovery_rate is None


def test_empty_group_and_no_tool_calls_give_zeros_not_division_errors():
    assert summarise([]).episodes == 0
    assert summarise([record(True, calls=0)]).tool_failure_rate == 0.0


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=30))
def test_rates_stay_between_zero_and_one(rows):
    records = [record(ok, calls=calls, failures=min(fails, calls)) for ok, calls, fails in rows]
    s = summarise(records)
    assert 0.0 <= s.success_rate <= 1.0 and 0.0 <= s.tool_failure_rate <= 1.0
    assert s.recovery_rate is None or 0.0 <= s.recovery_rate <= 1.0


def test_records_round_trip_through_json():
    r = record(True, calls=2, failures=1, error=None)
    assert msgspec.json.decode(msgspec.json.encode(r), type=EpisodeRecord) == r
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"task_id": 3}', type=EpisodeRecord)
