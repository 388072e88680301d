"""What an evaluation measures: one record per episode, summaries per group, the report that holds both.

The metrics are the ones the issue names and ``docs/results.md`` reports:

- **success**: the episode's answer passes the task's verifier;
- **tool calls per episode** and the **tool-failure rate** (failed calls / calls);
- **recovery rate**: among episodes with at least one failed tool call, the fraction that still end
  correct (``None`` when no episode failed a call: a rate over nothing is not zero);
- **reflections** and **reflection tokens per episode** (the reflection cost ReGRPO trades against);
- **latency**: wall seconds per episode (median and mean).

Everything here is a msgspec Struct, so a report round-trips through JSON exactly
(``msgspec.json.decode(data, type=EvalReport)``) and two reports written months apart compare.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import msgspec

__all__ = ["EpisodeRecord", "EvalReport", "GroupSummary", "summarise"]


class EpisodeRecord(msgspec.Struct, frozen=True):
    """One task's episode, reduced to what the report counts (the full episode is in the trace store)."""

    task_id: str
    category: str
    difficulty: int
    trace_id: str
    status: str
    """``answered``, ``max_steps`` or ``error``."""
    answer: str | None
    expected: str
    correct: bool
    steps: int
    tool_calls: int
    tool_failures: int
    reflections: int
    valid_reflections: int
    reflection_tokens: int
    wall_s: float
    error: str | None = None
    """Set when the episode raised (our bug or a bad task); such an episode counts as not correct."""


class GroupSummary(msgspec.Struct, frozen=True):
    """Aggregates over a group of episodes (all of them, or one category)."""

    episodes: int
    success_rate: float
    tool_calls_per_episode: float
    tool_failure_rate: float
    """Failed tool calls / tool calls (0 when no tool was called)."""
    episodes_with_failure: int
    recovery_rate: float | None
    """Correct episodes among those with a failed tool call; ``None`` when there were none."""
    reflections_per_episode: float
    reflection_tokens_per_episode: float
    latency_p50_s: float
    latency_mean_s: float


class EvalReport(msgspec.Struct):
    """A whole evaluation run: settings, the overall summary, per-category summaries, every episode."""

    label: str
    created_at: float
    model: str
    adapter: str | None
    settings: dict[str, object]
    overall: GroupSummary
    by_category: dict[str, GroupSummary]
    episodes: list[EpisodeRecord]


def summarise(records: Sequence[EpisodeRecord]) -> GroupSummary:
    """Aggregate episode records into one :class:`GroupSummary` (an empty group gives zeros)."""
    n = len(records)
    if n == 0:
        return GroupSummary(0, 0.0, 0.0, 0.0, 0, None, 0.0, 0.0, 0.0, 0.0)
    calls = sum(r.tool_calls for r in records)
    failed_calls = sum(r.tool_failures for r in records)
    with_failure = [r for r in records if r.tool_failures > 0]
    latencies = [r.wall_s for r in records]
    return GroupSummary(
        episodes=n,
        success_rate=sum(r.correct for r in records) / n,
        tool_calls_per_episode=calls / n,
        tool_failure_rate=failed_calls / calls if calls else 0.0,
        episodes_with_failure=len(with_failure),
        recovery_rate=(sum(r.correct for r in with_failure) / len(with_failure)) if with_failure else None,
        reflections_per_episode=sum(r.reflections for r in records) / n,
        reflection_tokens_per_episode=sum(r.reflection_tokens for r in records) / n,
        latency_p50_s=statistics.median(latencies),
        latency_mean_s=statistics.fmean(latencies),
    )
