"""The eval gate: a candidate adapter goes live only if it measurably beats the live one on held-out tasks.

``evaluate_and_gate(policy, registry, candidate, tasks, store=..., options=..., config=...)``
evaluates the candidate version and the live one (a version, or the base model) on the same tasks
with the same :class:`~regrpo.evaluation.EvalOptions`, records both in the registry, decides by
:func:`decide` (pure), and on a pass hot-swaps the candidate in (:func:`~regrpo.learning.hotswap.swap_in`)
*before* moving the registry's live pointer, so a candidate that cannot be activated never goes live.

The rule (``GateConfig``): promote iff ``candidate − live > margin`` on ``metric``. The comparison is
strict, so with the default margin 0 an equal candidate is refused: a swap is never free (risk,
cache flush), and on a handful of held-out tasks "equal" is mostly noise. Optionally a tie (equal
metric) is broken by a cost where lower is better (reflection tokens or tool calls per episode),
again strictly. An undefined metric (recovery rate with no failed call) never promotes.

Metrics are cached in the registry: each version's ``AdapterMeta.metrics`` (the base model's in
``BASE.json``) under the key ``eval-<digest>/<metric>``, where the digest is a BLAKE2b of the model
name, the sorted task ids and the evaluation options. So the live adapter is measured once per task
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
from typing import Literal

import msgspec

from regrpo.agent.policy import Policy
from regrpo.errors import AdapterError, InputError
from regrpo.evaluation.records import GroupSummary
from regrpo.evaluation.runner import EvalOptions, evaluate
from regrpo.learning.hotswap import AdapterWeights, SwapResult, swap_in
from regrpo.learning.registry import AdapterRegistry
from regrpo.tasks.schema import Task
from regrpo.traces import TraceStore

__all__ = [
    "GateConfig",
    "GateDecision",
    "decide",
    "eval_key",
    "evaluate_and_gate",
    "measure",
    "record_metrics",
]

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

    metric: Metric = "success_rate"
    """What must improve (measured on the held-out tasks passed to the gate)."""
    margin: float = 0.0
    """Promote iff ``candidate − live > margin`` (strict: at 0, an equal candidate is refused)."""
    tie_breaker: TieBreaker = "none"
    """On an exactly equal metric, promote if this per-episode cost is strictly lower; "none" refuses ties."""
    reuse_live_metrics: bool = True
    """Reuse the live adapter's recorded metrics for the same task set and options (see module docstring)."""

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise InputError(f"gate metric must be one of {sorted(_METRICS)}, got {self.metric!r}")
        if self.tie_breaker != "none" and self.tie_breaker not in _COSTS:
            raise InputError(
                f"tie_breaker must be 'none' or one of {sorted(_COSTS)}, got {self.tie_breaker!r}"
            )
        if not 0.0 <= self.margin < 1.0:
            raise InputError(f"gate margin must be in [0, 1), got {self.margin}")


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


def eval_key(model_name: str, tasks: Sequence[Task], options: EvalOptions) -> str:
    """``eval-<digest>``: identifies a task set + evaluation options (+ base model) for the metrics cache."""
    payload = {"model": model_name, "tasks": sorted(t.id for t in tasks), "options": asdict(options)}
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


def measure(
    policy: Policy,
    registry: AdapterRegistry,
    version: str | None,
    tasks: Sequence[Task],
    *,
    store: TraceStore,
    options: EvalOptions,
    keep_loaded: bool = False,
) -> dict[str, float]:
    """Evaluate ``version`` (``None``: the base model) on ``tasks`` and record the metrics in the registry.

    The version is loaded under its own name (so its evaluation traces say which version acted) and
    activated for the run; the policy's previous active adapter is restored after. A version this
    call loaded is unloaded again unless ``keep_loaded`` (the gate keeps a candidate loaded so that
    promoting it is an activate-only swap).
    """
    before = policy.active_adapter
    # the active adapter is loaded even on engines that cannot list their adapters
    loaded_here = version is not None and version != before and version not in _loaded(policy)
    if version is not None and loaded_here:
        policy.load_adapter(version, str(registry.path(version)))
    try:
        policy.activate_adapter(version)
        report = evaluate(
            policy, tasks, store=store, options=options, label=version or "base", progress=False
        )
    except BaseException:
        if loaded_here and version is not None:
            policy.activate_adapter(before)
            policy.unload_adapter(version)
        raise
    policy.activate_adapter(before)
    if loaded_here and version is not None and not keep_loaded:
        policy.unload_adapter(version)
    return record_metrics(registry, version, policy.model_name, tasks, options, report.overall)


def record_metrics(
    registry: AdapterRegistry,
    version: str | None,
    model_name: str,
    tasks: Sequence[Task],
    options: EvalOptions,
    summary: GroupSummary,
) -> dict[str, float]:
    """Cache the metrics of an evaluation already run (``version`` on ``tasks``, ``options``) for the gate."""
    metrics = _as_metrics(summary)
    registry.update_metrics(version, _keyed(metrics, eval_key(model_name, tasks, options)))
    return metrics


def decide(candidate: dict[str, float], live: dict[str, float], config: GateConfig) -> tuple[bool, str]:
    """The gate's rule as a pure function: ``(promote, reason)`` from two metric dicts."""
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
) -> GateDecision:
    """Evaluate a committed candidate against the live adapter; promote and hot-swap it only if it wins.

    Args:
        policy: The engine the evaluations run on.
        registry: Holds the candidate and the live pointer.
        candidate_version: A committed, not yet live version (``registry.commit``'s ``meta.version``).
        tasks: Held-out tasks (e.g. the second part of ``regrpo.tasks.suite.split``), never trained on.
        store: Where the evaluation episodes go (keep it apart from the store a trainer reads).
        options: Budgets and fault rate of both evaluations (default :class:`EvalOptions`).
        config: The promotion rule (default :class:`GateConfig`).
        live_policy: The engine to hot-swap on a pass (default: ``policy``).
        weights: The candidate's tensors in memory, for a swap that skips the disk.
    """
    options = options or EvalOptions()
    config = config or GateConfig()
    if not tasks:
        raise InputError("the gate needs held-out tasks to evaluate on; pass at least one task")
    live = registry.live()
    if candidate_version == live:
        raise InputError(f"{candidate_version} is already live; gate a new version")
    key = eval_key(policy.model_name, tasks, options)
    was_loaded = candidate_version in _loaded(policy)
    candidate_metrics = measure(
        policy, registry, candidate_version, tasks, store=store, options=options, keep_loaded=True
    )
    swap = None
    try:
        live_metrics = _unkeyed(registry.metrics(live), key) if config.reuse_live_metrics else {}
        from_cache = bool(live_metrics)
        if not from_cache:
            live_metrics = measure(policy, registry, live, tasks, store=store, options=options)
        promoted, reason = decide(candidate_metrics, live_metrics, config)
        if promoted:
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
    )
