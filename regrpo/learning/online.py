"""One online learning round: the agent's own new failures → branch points → ReGRPO → a new adapter.

:class:`ReGRPORound` is the ``train_round`` the trainer daemon calls (``regrpo trainer``) and the
step ``regrpo demo`` runs to close the loop. Given the trace ids of new failed episodes and an empty
folder, it

1. runs the data engine on the training tasks, mining exactly those episodes: their branch points
   (the prompt right after each real failure, the reference step as the target) come first, then
   executed near-miss points of the training tasks fill the round up to ``max_points``;
2. continues training from the live adapter (or the warm start, when the base model is live), so
   each round builds on the last promoted one;
3. writes the adapter into the folder and returns what it did (stored as the version's metadata).

With a ``sampler`` (``regrpo trainer --sample-on-engine``: the serving engine the daemon promotes
into, through :class:`~regrpo.agent.OpenAIPolicy` under its stable served name), the groups are
sampled there and this process only scores and trains (``train_regrpo(sampler=...)``). That is
on-policy only while the engine serves the round's starting point, i.e. the live version: before the
first promotion (the round starts from the warm start, which the engine does not serve) or when the
engine does not list the served name (restarted since), the round samples locally and says so in
its report (``sampled_on``).

Promotion is not decided here: the caller gates the committed version on held-out tasks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from regrpo.agent.local import LocalPolicy
from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.errors import ModelError, NothingToLearn
from regrpo.learning.data_engine import build_dataset
from regrpo.learning.records import BranchPoint
from regrpo.learning.registry import AdapterRegistry
from regrpo.learning.regrpo import ReGRPOConfig, train_regrpo
from regrpo.tasks.schema import Task
from regrpo.tools import Tool, Toolbox
from regrpo.traces import TraceStore
from regrpo.traces.schema import Answer

__all__ = ["ReGRPORound"]


class ReGRPORound:
    """A training round over new failures (see the module docstring).

    Args:
        policy: The local engine to train in (the adapter is added to it and taken out again).
        registry: Where the live version (the round's starting point) is read from.
        tasks: Training tasks (never the gate's held-out tasks).
        store: The trace store the failed episodes are in.
        config: ReGRPO's settings.
        warm_start: The adapter to start from while the base model is live (``None``: a fresh adapter).
        max_points: Branch points per round (trace points first).
        near_misses_per_step: Near-misses per reference step for the filler points.
        progress: Show progress bars.
        sampler: The serving engine to sample groups on, serving the live version (module docstring).
        tools: The agent's toolbox (default: the built-in tools): traffic episodes are replayed and
            continuations executed with it, so it must be the one the agent ran with.
    """

    def __init__(
        self,
        policy: LocalPolicy,
        registry: AdapterRegistry,
        tasks: Sequence[Task],
        store: TraceStore,
        config: ReGRPOConfig,
        *,
        warm_start: str | os.PathLike[str] | None = None,
        max_points: int = 16,
        near_misses_per_step: int = 1,
        progress: bool = False,
        sampler: OpenAIPolicy | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> None:
        self.policy, self.registry, self.tasks, self.store = policy, registry, list(tasks), store
        self.sampler = sampler
        self.tools = list(tools) if tools is not None else None
        self.config = config
        self.warm_start = Path(warm_start) if warm_start is not None else None
        self.max_points = max_points
        self.near_misses_per_step = near_misses_per_step
        self.progress = progress

    def points(self, trace_ids: Sequence[str]) -> list[BranchPoint]:
        """The round's branch points: from the given episodes first, then executed near-misses.

        Raises :class:`NothingToLearn` when there are none (traffic alone, whose failures could not
        be replayed or scored), saying why from the data engine's counts.
        """
        data = build_dataset(
            self.tasks,
            store=self.store,
            trace_ids=list(trace_ids),
            near_misses_per_step=self.near_misses_per_step,
            seed=len(self.registry.list()),
            progress=self.progress,
            toolbox=Toolbox(self.tools) if self.tools is not None else None,
        )
        if not data.branch_points:
            counts = data.counts
            raise NothingToLearn(
                f"{len(trace_ids)} episodes gave no branch points (traffic episodes mined "
                f"{counts.traffic_episodes}, images missing {counts.traffic_images_missing}, prompts "
                f"unmatched {counts.traffic_unmatched}, verifiers not importable "
                f"{counts.traffic_verifier_unresolved}, reward 0 with nothing to score against "
                f"{counts.traffic_wrong_unnamed})"
            )
        from_traces = [p for p in data.branch_points if p.source in ("trace", "traffic")]
        others = [p for p in data.branch_points if p.source not in ("trace", "traffic")]
        return (from_traces + others)[: self.max_points]

    def __call__(self, trace_ids: Sequence[str], folder: Path) -> dict[str, Any]:
        points = self.points(trace_ids)
        live = self.registry.live()
        start = self.registry.path(live) if live is not None else self.warm_start
        sampler, sampled_on = self._sampler(live)
        report = train_regrpo(
            self.policy,
            points,
            self.config,
            folder,
            init_from=start,
            tools=self.tools,
            progress=self.progress,
            sampler=sampler,
        )
        return {
            "method": "regrpo",
            "started_from": str(start) if start is not None else None,
            "sampled_on": sampled_on,
            "trace_ids": len(trace_ids),
            "branch_points": len(points),
            "from_traces": sum(p.source in ("trace", "traffic") for p in points),
            "at_wrong_answers": sum(isinstance(p.failed_action, Answer) for p in points),
            "report": msgspec.to_builtins(report),
        }

    def _sampler(self, live: str | None) -> tuple[OpenAIPolicy | None, str]:
        """The engine to sample on, if it serves the round's start (``live``); and where sampling runs."""
        if self.sampler is None:
            return None, "local"
        where = f"{self.sampler.base_url} ({self.sampler.model_name})"
        if live is None:
            return (
                None,
                f"local: {where} serves no promoted version yet (the round starts from the warm start)",
            )
        try:
            listed = self.sampler.listed_models()
        except ModelError as exc:
            return None, f"local: {where} is unreachable ({exc})"
        if self.sampler.model_name not in listed:
            why = f"restarted since {live} was pushed, or an engine that takes versioned names"
            return None, f"local: {where} does not list {self.sampler.model_name!r} ({why})"
        return self.sampler, f"{where}, serving {live}"
