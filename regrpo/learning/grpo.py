"""The baseline: trajectory-level GRPO (outcome reward over whole episodes), optionally with OTC's tool cost.

For each task the current policy runs ``G`` whole episodes concurrently (their model calls coalesce
into batched forward passes on a :class:`~regrpo.agent.LocalPolicy`), sampling at ``temperature`` with
the same agent loop, toolbox and reflection prompts as serving. Each episode earns ``1{correct}``
(times OTC-GRPO's tool-call reward when ``tool_cost=True``); advantages are group-relative over the G
episodes exactly as in :func:`regrpo.learning.policy_gradient.group_advantages`, and every token the policy
generated in an episode (all its turns) gets that episode's advantage, with the same clipped loss
and KL term (:func:`regrpo.learning.policy_gradient.policy_loss`).

The difference from ReGRPO is where the signal comes from: one sparse outcome per episode, spread
over every turn, versus one executed, locally scored turn per branch point. ``RLReport.rollouts``
counts sampled model turns in both, so the two are compared at equal rollouts (``max_rollouts``:
GRPO starts only as many episodes of a group as the budget left covers at ``max_steps`` turns each,
so it may pass it by at most ``max_steps - 1`` turns; ReGRPO checks it before each group and never
passes it). Rollout episodes are ordinary traces in the given store.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from regrpo.agent.local import LocalPolicy
from regrpo.agent.loop import Agent
from regrpo.errors import InputError
from regrpo.learning.distributed import any_rank, ranks, reseed, summed_each
from regrpo.learning.lora_trainer import LoraSettings, LoraTrainer
from regrpo.learning.policy_gradient import Rollout, group_advantages, policy_gradient_steps
from regrpo.learning.progress import training_bar
from regrpo.learning.rewards import episode_reward
from regrpo.learning.round_report import RLReport
from regrpo.learning.telemetry import StepLog
from regrpo.tasks.schema import Task
from regrpo.tools import Tool, default_tools
from regrpo.tools.faults import FaultConfig, inject_faults
from regrpo.traces import Episode, TraceStore

__all__ = ["GRPOConfig", "train_grpo"]


class GRPOConfig(msgspec.Struct, frozen=True):
    """Trajectory-level GRPO settings; shared coefficients mean what they mean in ``ReGRPOConfig``."""

    group_size: int = 5
    """Episodes per task."""
    temperature: float = 1.0
    max_steps: int = 6
    """Turns per rollout episode, as ``regrpo eval`` runs them (at 4, a retry leaves a 4-step task no turn
    to answer in)."""
    max_new_tokens: int = 128
    tool_cost: bool = False
    """Multiply the reward of correct episodes by OTC-GRPO's tool-call reward."""
    fault_rate: float = 0.0
    """Injected tool-fault rate during rollouts (the same injector as evaluation)."""
    normalise_std: bool = True
    eps: float = 1e-4
    clip_eps: float = 0.2
    beta: float = 0.04
    learning_rate: float = 2e-5
    epochs: int = 1
    max_rollouts: int | None = None
    """Stop after this many sampled model turns (the budget ReGRPO is compared at)."""
    lora: LoraSettings = LoraSettings()
    detach_system_prompt: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 2 or self.temperature <= 0 or self.max_steps < 1 or self.epochs < 1:
            raise InputError(
                f"GRPO needs group_size >= 2, temperature > 0, max_steps >= 1, epochs >= 1; got {self}"
            )
        if not 0 <= self.fault_rate <= 1:
            raise InputError(f"fault_rate must be between 0 and 1, got {self.fault_rate}")


def train_grpo(
    policy: LocalPolicy,
    tasks: Sequence[Task],
    config: GRPOConfig,
    out_dir: str | Path,
    *,
    store: TraceStore,
    init_from: str | Path | None = None,
    tools: Sequence[Tool] | None = None,
    progress: bool = True,
) -> RLReport:
    """Run trajectory GRPO over ``tasks``, save the adapter to ``out_dir``; rollouts go to ``store``."""
    if not tasks:
        raise InputError("no tasks to train on; pass suite tasks (regrpo.tasks.suite.builtin_suite)")
    if not isinstance(policy, LocalPolicy):
        raise InputError(
            f"the trajectory GRPO baseline trains a LocalPolicy (text), got {type(policy).__name__}; "
            "on an engine that takes images, train with ReGRPO"
        )
    started = time.perf_counter()
    toolbox = list(tools) if tools is not None else default_tools()
    if config.fault_rate > 0:
        toolbox = inject_faults(toolbox, FaultConfig(rate=config.fault_rate, seed=config.seed))
    order = [t for _ in range(config.epochs) for t in tasks]
    random.Random(config.seed).shuffle(order)
    place = ranks()  # data-parallel: this rank's shard of the tasks, its share of the budget
    mine = place.shard(order)
    budget = place.share(config.max_rollouts) if config.max_rollouts is not None else None
    rollouts = tokens = groups = skipped = 0
    mean_reward: list[float] = []
    correct_rate: list[float] = []
    with (
        LoraTrainer.for_config(policy, config, init_from, temperature=config.temperature) as trainer,
        StepLog(out_dir, enabled=place.main) as log,
    ):
        if place.rank:  # the LoRA start is the same on every rank; the samples are not
            reseed(config.seed + place.rank)
        agent = Agent(
            policy,
            toolbox,
            store,
            config.max_steps,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            keep_images=False,  # suite tasks: their images are on disk
        )
        left = iter(mine)
        exhausted = False
        with training_bar("GRPO", len(mine), progress and place.main) as advance:
            while True:
                group_started = time.perf_counter()
                task = None if exhausted else next(left, None)
                episodes = _group(agent, store, task, config, rollouts, budget) if task is not None else []
                rollouts += sum(len(e.steps) for e in episodes)
                # the budget ran out (one episode has no group to be relative to), or the tasks did
                exhausted = len(episodes) < 2
                if not any_rank(not exhausted):  # every rank goes round together, until all are done
                    break
                advantages = None
                rewards: list[float] = []
                correct: list[bool] = []
                if task is not None and not exhausted:
                    correct = [task.check(e.answer) for e in episodes]
                    calls = [e.usage.tool_calls for e in episodes]
                    fewest = min((c for c, ok in zip(calls, correct, strict=True) if ok), default=None)
                    rewards = [
                        episode_reward(ok, c, fewest, tool_cost=config.tool_cost)
                        for ok, c in zip(correct, calls, strict=True)
                    ]
                    groups += 1
                    tokens += sum(len(s.completion.token_ids) for e in episodes for s in e.steps)
                    mean_reward.append(sum(rewards) / len(rewards))
                    correct_rate.append(sum(correct) / len(correct))
                    advantages = group_advantages(rewards, normalise_std=config.normalise_std, eps=config.eps)
                    skipped += advantages is None
                trained = _rollouts(episodes, advantages) if advantages is not None else []
                if any_rank(bool(trained)):  # one step for all ranks; one with no group adds zeros
                    update = policy_gradient_steps(
                        trainer, policy, trained, clip_eps=config.clip_eps, beta=config.beta
                    )
                    kept = _StepGroup(episodes, rewards, correct) if trained else _StepGroup([], [], [])
                    log.log(
                        trainer.steps, update | kept.metrics(skipped, time.perf_counter() - group_started)
                    )
                if rewards:
                    advance(f"rollouts {rollouts}  skipped {skipped}  correct {correct_rate[-1]:.2f}")
        if place.main:
            trainer.save(out_dir)
        steps = trainer.steps
    groups, skipped, rollouts, tokens = (int(v) for v in summed_each([groups, skipped, rollouts, tokens]))
    return RLReport(
        method="grpo+otc" if config.tool_cost else "grpo",
        groups=groups,
        skipped_zero_variance=skipped,
        rollouts=rollouts,
        generated_tokens=tokens,
        steps=steps,
        mean_reward=mean_reward,
        fix_rate=correct_rate,
        seconds=time.perf_counter() - started,
        config=msgspec.to_builtins(config),
    )


def _group(
    agent: Agent, store: TraceStore, task: Task, config: GRPOConfig, spent: int, budget: int | None
) -> list[Episode]:
    """Up to G episodes of ``task``, run concurrently so their model calls share batched forward passes.

    An episode's length is known only at its end, so the group starts as many episodes as the budget
    left after ``spent`` turns covers at ``max_steps`` turns each (rounded up, at most G): the group
    passes the ``budget`` (this rank's share of ``max_rollouts``) by at most ``max_steps - 1`` turns.
    """
    count = config.group_size
    if budget is not None:
        count = min(count, max(0, -(-(budget - spent) // config.max_steps)))

    async def episodes() -> list[str]:
        runs = [
            agent.arun(task.question, list(task.images), metadata={"task_id": task.id}) for _ in range(count)
        ]
        return [result.trace_id for result in await asyncio.gather(*runs)]

    return [store.get(trace_id) for trace_id in asyncio.run(episodes())] if count else []


def _rollouts(episodes: Sequence[Episode], advantages: Sequence[float]) -> list[Rollout]:
    """Every generated turn of every episode, weighted by its episode's advantage (turns without
    token ids, e.g. from a remote engine that sent none, cannot be trained on and are left out)."""
    return [
        (episode.messages[: step.prompt_messages], step.completion, advantage)
        for episode, advantage in zip(episodes, advantages, strict=True)
        for step in episode.steps
        if step.completion.token_ids
    ]


@dataclass(frozen=True)
class _StepGroup:
    """The group an optimizer step trained on (empty on a rank that trained on none)."""

    episodes: Sequence[Episode]
    rewards: Sequence[float]
    correct: Sequence[bool]

    def metrics(self, skipped: int, seconds: float) -> dict[str, float]:
        """The step's group telemetry, over every rank's group (every rank calls it at each step)."""
        turns = [s.completion for e in self.episodes for s in e.steps]
        spread = max(self.rewards) - min(self.rewards) if self.rewards else 0.0
        groups, count, reward, spreads, right, truncated, n_turns, n_tokens, n_skipped = summed_each(
            [
                bool(self.rewards),
                len(self.rewards),
                sum(self.rewards),
                spread,
                sum(self.correct),
                sum(c.finish_reason == "length" for c in turns),
                len(turns),
                sum(len(c.token_ids) for c in turns),
                skipped,
            ]
        )
        return {
            "reward_mean": reward / max(1.0, count),
            "reward_spread": spreads / max(1.0, groups),
            "correct_rate": right / max(1.0, count),
            "skipped_groups": n_skipped,
            "truncation_rate": truncated / max(1.0, n_turns),
            "tokens_per_s": n_tokens / max(1e-9, seconds),
        }
