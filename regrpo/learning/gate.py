"""The eval gate: a candidate adapter goes live only if it measurably beats the live one on held-out tasks.

``evaluate_and_gate(policy, registry, candidate, tasks, store=..., options=..., config=...)``
evaluates the candidate version and the live one (a version, or the base model) on the same tasks
with the same :class:`~regrpo.evaluation.EvalOptions`, records both in the registry, decides by
:func:`decide` (pure), and on a pass hot-swaps the candidate in (:func:`~regrpo.learning.hotswap.swap_in`)
*before* moving the registry's live pointer, so a candidate that cannot be activated never goes live.

The rule (``GateConfig.rule``), from a table of rules keyed by name:

- ``"paired_ci"`` (the default): both versions ran the same tasks, so each task is a pair of 0/1
  successes (:mod:`regrpo.evaluation.paired`). Promote iff the paired 95 % CI of ``candidate − live``
  success (Newcombe's interval; exact McNemar p beside it) lies strictly above ``margin`` *and* the
  held-out set has at least ``config.test.tasks_needed`` tasks (155 by default: a paired test's size
  for +10 points at power 0.8). With fewer tasks the verdict is ``too_few_tasks`` and nothing is
  promoted, however good the candidate looks: on 6 tasks one task is 17 points of noise.
- ``"any_improvement"``, the explicit opt-out for budgets too small to test anything (``regrpo demo``
  evaluates 2 tasks): promote iff the point estimate ``candidate − live > margin`` on ``metric``,
  strictly (an equal candidate is refused: a swap is never free), optionally breaking an exact tie
  by a lower per-episode cost (reflection tokens or tool calls). Its reason always says whether the
  paired test agrees, and says "NOT statistically significant" when it does not.

An undefined metric (recovery rate with no failed call) never promotes. Every decision records the
paired comparison (n, CI bounds, discordant tasks, p-value, verdict) and the rule that decided.

Metrics are cached in the registry: each version's ``AdapterMeta.metrics`` (the base model's in
``BASE.json``) under the key ``eval-<digest>/<metric>``, where the digest is a BLAKE2b of the model
name, the sorted task ids and the evaluation options (fault seed included, so cached outcomes pair
with fresh ones task by task); the per-task successes the paired test needs go to the registry state
file ``outcomes-<version|base>-eval-<digest>.json``. So the live adapter is measured once per task
set and settings, and a changed task set or budget is measured afresh, never compared against a
stale number. Greedy decoding (temperature 0, the default) makes a cached number reproducible.

The policy is shared: while the gate evaluates, its active adapter is the one under test. In a
process that also serves, pass a second ``LocalPolicy`` as ``policy`` and the serving one as
``live_policy``; the swap then only touches the serving policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Literal

import msgspec

from regrpo.agent.policy import Policy
from regrpo.errors import AdapterError, InputError
from regrpo.evaluation.paired import PairedComparison, PairedTest, compare_outcomes, report_outcomes
from regrpo.evaluation.records import EvalReport, GroupSummary
from regrpo.evaluation.runner import EvalOptions, evaluate
from regrpo.learning.hotswap import AdapterWeights, SwapResult, swap_in
from regrpo.learning.registry import AdapterRegistry
from regrpo.learning.serving_engine import ServingEngine
from regrpo.tasks.schema import Task
from regrpo.tools import Tool
from regrpo.traces import TraceStore

__all__ = [
    "GateConfig",
    "GateDecision",
    "decide",
    "eval_key",
    "evaluate_and_gate",
    "is_significant",
    "measure",
    "record_metrics",
]

GateRule = Literal["paired_ci", "any_improvement"]
Metric = Literal["success_rate", "recovery_rate"]
TieBreaker = Literal["none", "reflection_tokens", "tool_calls"]

# what the gate maximises (None = undefined for this run)
_METRICS: dict[str, Callable[[GroupSummary], float | None]] = {
    "success_rate": lambda s: s.success_rate,
    "recovery_rate": lambda s: s.recovery_rate,
}
# tie-breakers: a cost per episode, lower is better (names are the keys in the recorded metrics)
_COSTS: dict[str, str] = {
    "reflection_tokens": "reflection_tokens_per_episode",
    "tool_calls": "tool_calls_per_episode",
}


class GateConfig(msgspec.Struct, frozen=True):
    """When a candidate may replace the live adapter."""

    rule: GateRule = "paired_ci"
    """``paired_ci``: the paired CI of success must lie above ``margin`` on enough tasks (significant).
    ``any_improvement``: any point improvement over ``margin`` on ``metric``; NOT a statistical test,
    for budgets too small for one (the demo). See the module docstring."""
    metric: Metric = "success_rate"
    """What must improve (measured on the held-out tasks passed to the gate); ``paired_ci`` tests success."""
    margin: float = 0.0
    """Promote iff the CI's lower bound (``paired_ci``) or the point difference (``any_improvement``)
    exceeds it."""
    tie_breaker: TieBreaker = "none"
    """``any_improvement`` only: on an exactly equal metric, promote if this per-episode cost is lower."""
    reuse_live_metrics: bool = True
    """Reuse the live adapter's recorded metrics for the same task set and options (see module docstring)."""
    test: PairedTest = msgspec.field(default_factory=PairedTest)
    """How the paired test is sized: its ``tasks_needed`` (155 by default) is the least held-out set."""

    def __post_init__(self) -> None:
        if self.rule not in _RULES:
            raise InputError(f"gate rule must be one of {sorted(_RULES)}, got {self.rule!r}")
        if self.metric not in _METRICS:
            raise InputError(f"gate metric must be one of {sorted(_METRICS)}, got {self.metric!r}")
        if self.tie_breaker != "none" and self.tie_breaker not in _COSTS:
            raise InputError(
                f"tie_breaker must be 'none' or one of {sorted(_COSTS)}, got {self.tie_breaker!r}"
            )
        if not 0.0 <= self.margin < 1.0:
            raise InputError(f"gate margin must be in [0, 1), got {self.margin}")
        if self.rule == "paired_ci" and (self.metric != "success_rate" or self.tie_breaker != "none"):
            raise InputError(
                "rule 'paired_ci' tests per-task success (recovery is not paired task by task) and "
                "breaks no ties; for metric or tie_breaker use rule='any_improvement'"
            )


class GateDecision(msgspec.Struct, frozen=True):
    """The gate's verdict and the numbers behind it."""

    candidate: str
    live: str | None
    """The version that was live when the gate ran (``None``: the base model)."""
    candidate_metrics: dict[str, float]
    live_metrics: dict[str, float]
    promoted: bool
    reason: str
    key: str
    """The evaluation key (``eval-<digest>``) the metrics are recorded under."""
    live_from_cache: bool = False
    swap: SwapResult | None = None
    rule: GateRule = "paired_ci"
    """The rule that decided (``any_improvement``: not a statistical test)."""
    comparison: PairedComparison | None = None
    """Candidate against live on the same tasks: n, CI bounds, discordant tasks, p-value, verdict."""
    significant: bool = False
    """The paired test puts the candidate above live + margin on enough tasks (``paired_ci``'s condition)."""


def eval_key(
    model_name: str, tasks: Sequence[Task], options: EvalOptions, tools: Sequence[Tool] | None = None
) -> str:
    """``eval-<digest>``: identifies a task set + evaluation options (+ base model, + a toolbox other
    than the built-in one) for the metrics cache."""
    payload: dict[str, Any] = {
        "model": model_name,
        "tasks": sorted(t.id for t in tasks),
        "options": asdict(options),
    }
    if tools is not None:
        payload["tools"] = sorted(t.name for t in tools)
    digest = hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=6).hexdigest()
    return f"eval-{digest}"


def _loaded(policy: Policy) -> set[str]:
    return set(getattr(policy, "adapters", ()))


def _as_metrics(summary: GroupSummary) -> dict[str, float]:
    metrics = {
        "episodes": float(summary.episodes),
        "success_rate": summary.success_rate,
        "tool_calls_per_episode": summary.tool_calls_per_episode,
        "tool_failure_rate": summary.tool_failure_rate,
        "reflections_per_episode": summary.reflections_per_episode,
        "reflection_tokens_per_episode": summary.reflection_tokens_per_episode,
    }
    if summary.recovery_rate is not None:  # undefined stays absent, never a misleading 0
        metrics["recovery_rate"] = summary.recovery_rate
    return metrics


def _keyed(metrics: dict[str, float], key: str) -> dict[str, float]:
    return {f"{key}/{name}": value for name, value in metrics.items()}


def _unkeyed(metrics: dict[str, float], key: str) -> dict[str, float]:
    prefix = f"{key}/"
    return {name[len(prefix) :]: value for name, value in metrics.items() if name.startswith(prefix)}


def _evaluate(
    policy: Policy,
    registry: AdapterRegistry,
    version: str | None,
    tasks: Sequence[Task],
    *,
    store: TraceStore,
    options: EvalOptions,
    keep_loaded: bool,
    tools: Sequence[Tool] | None = None,
) -> EvalReport:
    """Run ``version`` on ``tasks`` under its own name, then restore the policy's active adapter."""
    before = policy.active_adapter
    # the active adapter is loaded even on engines that cannot list their adapters
    loaded_here = version is not None and version != before and version not in _loaded(policy)
    if version is not None and loaded_here:
        policy.load_adapter(version, str(registry.path(version)))
    try:
        policy.activate_adapter(version)
        report = evaluate(
            policy, tasks, store=store, options=options, tools=tools, label=version or "base", progress=False
        )
    except BaseException:
        if loaded_here and version is not None:
            policy.activate_adapter(before)
            policy.unload_adapter(version)
        raise
    policy.activate_adapter(before)
    if loaded_here and version is not None and not keep_loaded:
        policy.unload_adapter(version)
    return report


def measure(
    policy: Policy,
    registry: AdapterRegistry,
    version: str | None,
    tasks: Sequence[Task],
    *,
    store: TraceStore,
    options: EvalOptions,
    keep_loaded: bool = False,
    tools: Sequence[Tool] | None = None,
) -> dict[str, float]:
    """Evaluate ``version`` (``None``: the base model) on ``tasks`` and record the metrics in the registry.

    The version is loaded under its own name (so its evaluation traces say which version acted) and
    activated for the run; the policy's previous active adapter is restored after. A version this
    call loaded is unloaded again unless ``keep_loaded`` (the gate keeps a candidate loaded so that
    promoting it is an activate-only swap). The per-task outcomes are recorded too (for the paired test).
    ``tools``: the agent's toolbox (default: the built-in tools).
    """
    report = _evaluate(
        policy, registry, version, tasks, store=store, options=options, keep_loaded=keep_loaded, tools=tools
    )
    return record_metrics(registry, version, policy.model_name, tasks, options, report, tools)


def _outcomes_file(version: str | None, key: str) -> str:
    return f"outcomes-{version or 'base'}-{key}.json"


def record_metrics(
    registry: AdapterRegistry,
    version: str | None,
    model_name: str,
    tasks: Sequence[Task],
    options: EvalOptions,
    report: EvalReport,
    tools: Sequence[Tool] | None = None,
) -> dict[str, float]:
    """Cache an evaluation already run (``version`` on ``tasks``, ``options``, ``tools``) for the gate.

    The summary metrics go to the version's metrics under ``eval-<digest>/``, the per-task successes
    to the state file ``outcomes-<version|base>-eval-<digest>.json``; returns the metrics.
    """
    key = eval_key(model_name, tasks, options, tools)
    outcomes = report_outcomes(report)
    registry.write_state(_outcomes_file(version, key), msgspec.json.encode(dict(sorted(outcomes.items()))))
    metrics = _as_metrics(report.overall)
    registry.update_metrics(version, _keyed(metrics, key))
    return metrics


def _recorded_outcomes(registry: AdapterRegistry, version: str | None, key: str) -> dict[str, bool] | None:
    data = registry.read_state(_outcomes_file(version, key))
    if data is None:
        return None
    try:
        return msgspec.json.decode(data, type=dict[str, bool])
    except msgspec.DecodeError:  # a damaged cache is measured again, never trusted
        return None


# -- the rules: pure functions of the two metric dicts and the paired comparison -------------------------

_Rule = Callable[[dict[str, float], dict[str, float], PairedComparison | None, GateConfig], tuple[bool, str]]


def is_significant(comparison: PairedComparison | None, margin: float) -> bool:
    """The paired test's answer: enough tasks, and the CI of candidate − live lies above ``margin``."""
    return comparison is not None and comparison.verdict == "better" and comparison.ci_low > margin


def _paired_ci(
    candidate: dict[str, float],
    live: dict[str, float],
    comparison: PairedComparison | None,
    config: GateConfig,
) -> tuple[bool, str]:
    if comparison is None:
        raise InputError("rule 'paired_ci' needs the paired comparison of the two runs' per-task outcomes")
    paired = comparison.summary()
    if comparison.verdict == "too_few_tasks":
        return False, (
            f"too few held-out tasks for a paired test: {paired}; gate on at least "
            f"{comparison.tasks_needed} tasks, or opt out with GateConfig(rule='any_improvement') "
            "(not statistically significant)"
        )
    if is_significant(comparison, config.margin):
        return (
            True,
            f"significant: {paired}; CI lower bound {comparison.ci_low:+.3f} > margin {config.margin:.3f}",
        )
    return False, (
        f"not significant: {paired}; CI lower bound {comparison.ci_low:+.3f} is not above "
        f"margin {config.margin:.3f}"
    )


def _point_rule(candidate: dict[str, float], live: dict[str, float], config: GateConfig) -> tuple[bool, str]:
    name = config.metric
    if name not in candidate or name not in live:
        return False, f"{name} is undefined for the candidate or the live adapter (no episode it applies to)"
    delta = candidate[name] - live[name]
    if delta > config.margin:
        return True, f"{name} {candidate[name]:.3f} > live {live[name]:.3f} + margin {config.margin:.3f}"
    if delta == 0.0 and config.tie_breaker != "none":
        cost = _COSTS[config.tie_breaker]
        if candidate[cost] < live[cost]:
            return (
                True,
                f"{name} tied at {live[name]:.3f}; {cost} {candidate[cost]:.2f} < live {live[cost]:.2f}",
            )
        return (
            False,
            f"{name} tied at {live[name]:.3f}; {cost} {candidate[cost]:.2f} not below live {live[cost]:.2f}",
        )
    return (
        False,
        f"{name} {candidate[name]:.3f} does not beat live {live[name]:.3f} by more than {config.margin:.3f}",
    )


def _any_improvement(
    candidate: dict[str, float],
    live: dict[str, float],
    comparison: PairedComparison | None,
    config: GateConfig,
) -> tuple[bool, str]:
    promote, reason = _point_rule(candidate, live, config)
    if is_significant(comparison, config.margin):
        note = "rule any_improvement; the paired test agrees it is significant"
    else:
        note = "rule any_improvement: NOT statistically significant"
    paired = f"; paired: {comparison.summary()}" if comparison is not None else ""
    return promote, f"{reason} ({note}{paired})"


_RULES: dict[str, _Rule] = {"paired_ci": _paired_ci, "any_improvement": _any_improvement}


def decide(
    candidate: dict[str, float],
    live: dict[str, float],
    config: GateConfig,
    comparison: PairedComparison | None = None,
) -> tuple[bool, str]:
    """The gate's rule as a pure function: ``(promote, reason)``.

    Args:
        candidate: The candidate's metrics (``success_rate``, costs per episode, ...).
        live: The live version's metrics on the same tasks and options.
        config: The rule and its margin.
        comparison: Candidate (B) against live (A) task by task
            (:func:`~regrpo.evaluation.paired.compare_outcomes`); required by ``paired_ci``, reported
            by ``any_improvement``.
    """
    return _RULES[config.rule](candidate, live, comparison, config)


def evaluate_and_gate(
    policy: Policy,
    registry: AdapterRegistry,
    candidate_version: str,
    tasks: Sequence[Task],
    *,
    store: TraceStore,
    options: EvalOptions | None = None,
    config: GateConfig | None = None,
    live_policy: Policy | None = None,
    weights: AdapterWeights | None = None,
    serving: ServingEngine | None = None,
    tools: Sequence[Tool] | None = None,
) -> GateDecision:
    """Evaluate a committed candidate against the live adapter; promote and hot-swap it only if it wins.

    Args:
        policy: The engine the evaluations run on.
        registry: Holds the candidate and the live pointer.
        candidate_version: A committed, not yet live version (``registry.commit``'s ``meta.version``).
        tasks: Held-out tasks (e.g. the second part of ``regrpo.tasks.suite.split``), never trained on;
            at least ``config.test.tasks_needed`` of them for the default rule to be able to promote.
        store: Where the evaluation episodes go (keep it apart from the store a trainer reads).
        options: Budgets and fault rate of both evaluations (default :class:`EvalOptions`).
        config: The promotion rule (default :class:`GateConfig`).
        live_policy: The engine to hot-swap on a pass (default: ``policy``).
        weights: The candidate's tensors in memory, for a swap that skips the disk.
        serving: A serving engine in another process to promote into instead of ``live_policy``
            (:mod:`~regrpo.learning.serving_engine`): the live pointer moves only once the engine
            verified the swap; an unverified swap is rolled back there and the decision is a refusal
            that says why.
        tools: The agent's toolbox for both evaluations (default: the built-in tools); a user task
            set needs the user's tools. It is part of the metrics cache key.
    """
    options = options or EvalOptions()
    config = config or GateConfig()
    if not tasks:
        raise InputError("the gate needs held-out tasks to evaluate on; pass at least one task")
    live = registry.live()
    if candidate_version == live:
        raise InputError(f"{candidate_version} is already live; gate a new version")
    key = eval_key(policy.model_name, tasks, options, tools)
    was_loaded = candidate_version in _loaded(policy)
    report = _evaluate(
        policy,
        registry,
        candidate_version,
        tasks,
        store=store,
        options=options,
        keep_loaded=True,
        tools=tools,
    )
    swap = None
    try:
        candidate_metrics = record_metrics(
            registry, candidate_version, policy.model_name, tasks, options, report, tools
        )
        candidate_outcomes = report_outcomes(report)
        live_metrics, live_outcomes = {}, None
        if config.reuse_live_metrics:
            live_metrics = _unkeyed(registry.metrics(live), key)
            live_outcomes = _recorded_outcomes(registry, live, key)
        from_cache = bool(live_metrics) and live_outcomes is not None
        if not from_cache:
            live_report = _evaluate(
                policy, registry, live, tasks, store=store, options=options, keep_loaded=False, tools=tools
            )
            live_metrics = record_metrics(
                registry, live, policy.model_name, tasks, options, live_report, tools
            )
            live_outcomes = report_outcomes(live_report)
        assert live_outcomes is not None  # measured above when not cached
        labels = (live or "base", candidate_version)
        comparison = compare_outcomes(live_outcomes, candidate_outcomes, config.test, labels=labels)
        promoted, reason = decide(candidate_metrics, live_metrics, config, comparison)
        if promoted and serving is not None:
            try:
                swap = serving.swap(registry, candidate_version)
            except AdapterError as exc:  # rolled back there: nothing is live that was not verified
                promoted, reason = (
                    False,
                    f"passed the gate ({reason}), but the serving engine refused it: {exc}",
                )
            else:
                registry.promote(candidate_version)
        elif promoted:
            # activate first, then move the pointer: a candidate that cannot be activated never goes live
            swap = swap_in(live_policy or policy, registry, candidate_version, weights=weights)
            registry.promote(candidate_version)
    finally:
        if not was_loaded and policy.active_adapter != candidate_version:
            with contextlib.suppress(AdapterError):  # refused, or swapped into another policy
                policy.unload_adapter(candidate_version)
    return GateDecision(
        candidate=candidate_version,
        live=live,
        candidate_metrics=candidate_metrics,
        live_metrics=live_metrics,
        promoted=promoted,
        reason=reason,
        key=key,
        live_from_cache=from_cache,
        swap=swap,
        rule=config.rule,
        comparison=comparison,
        significant=is_significant(comparison, config.margin),
    )
