"""ReGRPO: group-relative policy optimisation of reflection + corrected action at branch points.

The method, as this module runs it (one round = one pass over the branch points):

1. **Branch points.** States right after a failure observation (from the data engine's executed
   near-misses and from real traces), plus clean points where the last call worked. Each carries the
   exact prompt the runtime would show and the action the reference solution takes next.
2. **Group sampling.** At each point the *current* policy samples ``G`` continuations in one batched
   call (``policy.generate(n=G)``): a ``<reflection>{error_type, evidence, fix_plan}</reflection>``
   (where one is due) and one action.
3. **Execution and reward.** Each continuation's action runs with the real tools on a private copy of
   the point's state; :func:`regrpo.learning.rewards.score_continuation` scores it: local fix,
   diagnosis match, minus the reflection cost η·tokens/100 and a penalty for needless reflection.
4. **Advantages.** ``A_i = (R_i − mean R) / (std R + eps)`` within the group (``normalise_std=False``
   gives the reference release's ``R_i − mean R``). A group whose rewards are all equal carries no
   signal and is skipped (and counted).
5. **Loss.** Over the generated tokens only (the prompt and tool outputs are never in a completion):
   ``ρ_t = π_θ(o_t)/π_old(o_t)``, ``L = −min(ρ_t A, clip(ρ_t, 1±ε) A) + β·KL_t``, token-mean over the
   group, where ``π_old`` is the rollout's own log-probs and ``KL_t`` is the k3 estimator
   ``exp(r) − r − 1`` with ``r = log π_ref − log π_θ`` against the base model (adapters disabled:
   no second copy). It is zero, with zero gradient, while the adapter is fresh.

Where we differ from the public reference (``shared/REFERENCES.md`` §2.4) and why:

* Live groups: the release trains on a fixed offline group of five hand-built members and lets a
  teacher model write failure text; here the group is sampled from the current policy and every
  action is executed for real, and every failure observation in the data came from a real tool.
* Std-normalised advantages by default (the release: an option), so η means the same whatever the
  spread of a group's rewards; and ratio clipping (the release: plain REINFORCE), which is inert at
  one update per group (ratio 1) but keeps ``updates_per_group > 1`` safe.
* k3 KL instead of k1: non-negative per token and unbiased, so it cannot reward drifting away.
* The reference for KL is the base model (adapter disabled). When training continues from a warm
  start, the KL therefore also pulls towards the base; β = 0.04 keeps that weak.
* A diagnosis reward (0.25) that the release only has inside its optional verifier.
* Learning rate 2e-5 (release: 5e-6 over 250+ steps): a CPU round is tens of steps.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import torch

from regrpo.agent.actions import ACTION_STOP_STRINGS, parse_action, parse_reflection, split_reflection
from regrpo.agent.local import LocalPolicy
from regrpo.errors import InputError
from regrpo.learning.lora_trainer import LoraSettings, LoraTrainer
from regrpo.learning.progress import training_bar
from regrpo.learning.records import BranchPoint
from regrpo.learning.replay import BranchEnvironment
from regrpo.learning.rewards import LocalReward, RewardWeights, score_continuation
from regrpo.learning.sequences import rollout_sample
from regrpo.tools import Tool, Toolbox, default_tools
from regrpo.traces.schema import Completion, Message, ToolCall

__all__ = [
    "Group",
    "ReGRPOConfig",
    "RLReport",
    "group_advantages",
    "policy_loss",
    "sample_group",
    "train_regrpo",
]


class ReGRPOConfig(msgspec.Struct, frozen=True):
    """Every coefficient of a ReGRPO round, with the reference release's defaults where it has one."""

    group_size: int = 5
    """G: continuations per branch point (release: 5)."""
    temperature: float = 1.0
    max_new_tokens: int = 128
    lambda_exec: float = 1.0
    """Weight of the local fix reward (release: λ_exec = 1)."""
    diagnosis_weight: float = 0.25
    eta: float = 0.1
    """Reflection cost per ``reflection_cost_scale`` reflection tokens (release: η = 0.1, scale 100)."""
    reflection_cost_scale: float = 100.0
    needless_reflection_penalty: float = 0.1
    normalise_std: bool = True
    eps: float = 1e-4
    clip_eps: float = 0.2
    beta: float = 0.04
    """KL weight (release: 0.04 for the text model)."""
    learning_rate: float = 2e-5
    groups_per_step: int = 2
    """Groups whose gradients are accumulated into one optimizer step."""
    updates_per_group: int = 1
    epochs: int = 1
    max_rollouts: int | None = None
    """Stop after this many sampled continuations (for comparisons at equal rollouts)."""
    lora: LoraSettings = LoraSettings()
    detach_system_prompt: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise InputError(
                f"group_size must be at least 2 (advantages compare a group), got {self.group_size}"
            )
        if self.temperature <= 0:
            raise InputError(f"temperature must be > 0 to sample a group, got {self.temperature}")
        if min(self.groups_per_step, self.updates_per_group, self.epochs, self.max_new_tokens) < 1:
            raise InputError("groups_per_step, updates_per_group, epochs and max_new_tokens must be >= 1")
        if self.eps <= 0 or self.clip_eps <= 0 or self.beta < 0 or self.learning_rate <= 0:
            raise InputError(f"need eps > 0, clip_eps > 0, beta >= 0, learning_rate > 0; got {self}")

    @property
    def weights(self) -> RewardWeights:
        return RewardWeights(
            lambda_exec=self.lambda_exec,
            diagnosis=self.diagnosis_weight,
            eta=self.eta,
            reflection_cost_scale=self.reflection_cost_scale,
            needless_reflection=self.needless_reflection_penalty,
        )


# -- the math ------------------------------------------------------------------------------------------


def group_advantages(
    rewards: Sequence[float], *, normalise_std: bool = True, eps: float = 1e-4
) -> list[float] | None:
    """``(r − mean) / (std + eps)`` (population std), or ``r − mean``; ``None`` when all rewards are equal."""
    if len(rewards) < 2:
        raise InputError("a group needs at least two rewards")
    mean = statistics.fmean(rewards)
    if max(rewards) - min(rewards) <= 1e-12:
        return None
    std = statistics.pstdev(rewards) if normalise_std else 0.0
    return [(r - mean) / (std + eps) if normalise_std else r - mean for r in rewards]


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantage: float,
    *,
    clip_eps: float,
    beta: float,
    total_tokens: int,
) -> torch.Tensor:
    """One completion's share of the clipped policy-gradient + KL loss, token-mean over ``total_tokens``."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    pg = -torch.minimum(unclipped, clipped)
    log_ratio_ref = ref_logprobs - logprobs
    kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1.0
    return (pg + beta * kl).sum() / total_tokens


# -- one group -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A branch point's sampled continuations, their rewards and advantages (``None``: skipped)."""

    point: BranchPoint
    completions: list[Completion]
    rewards: list[LocalReward]
    advantages: list[float] | None


def sample_group(
    policy: LocalPolicy, environment: BranchEnvironment, point: BranchPoint, config: ReGRPOConfig
) -> Group:
    """Sample G continuations at ``point`` in one batched call, execute each, score each."""
    completions = policy.generate(
        point.messages,
        n=config.group_size,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        stop=ACTION_STOP_STRINGS,
    )
    rewards = [asyncio.run(_score(policy, environment, point, c, config)) for c in completions]
    advantages = group_advantages(
        [r.reward for r in rewards], normalise_std=config.normalise_std, eps=config.eps
    )
    return Group(point, completions, rewards, advantages)


async def _score(
    policy: LocalPolicy,
    environment: BranchEnvironment,
    point: BranchPoint,
    completion: Completion,
    config: ReGRPOConfig,
) -> LocalReward:
    action = parse_action(completion.text)
    outcome = (await environment.execute(point, action)).outcome if isinstance(action, ToolCall) else None
    body, _ = split_reflection(completion.text)
    reflection, _problem = (
        parse_reflection(completion.text, point.observation) if body is not None else (None, None)
    )
    tokens = policy.count_tokens(body) if body is not None else 0
    return score_continuation(point, action, outcome, reflection, tokens, config.weights)


# -- a round -------------------------------------------------------------------------------------------


class RLReport(msgspec.Struct, frozen=True):
    """What an RL round did (ReGRPO or the GRPO baseline)."""

    method: str
    groups: int
    skipped_zero_variance: int
    rollouts: int
    """Sampled completions (model turns), the budget two methods are compared at."""
    generated_tokens: int
    steps: int
    mean_reward: list[float]
    """Mean reward of the rollouts sampled before each optimizer step (skipped groups included)."""
    fix_rate: list[float]
    """Fraction of fixed continuations (ReGRPO) or correct episodes (GRPO), per optimizer step."""
    seconds: float
    config: dict[str, object]


def train_regrpo(
    policy: LocalPolicy,
    points: Sequence[BranchPoint],
    config: ReGRPOConfig,
    out_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    tools: Sequence[Tool] | None = None,
    progress: bool = True,
) -> RLReport:
    """Run ReGRPO over ``points`` and save the adapter to ``out_dir`` (a PEFT folder).

    ``init_from`` continues from an adapter (the SFT warm start); ``tools`` must be the agent's
    toolbox (default: the built-in tools), since continuations are executed with them.
    """
    if not points:
        raise InputError("no branch points to train on; build them with `regrpo train data` first")
    started = time.perf_counter()
    order = [p for _ in range(config.epochs) for p in points]
    random.Random(config.seed).shuffle(order)
    environment = BranchEnvironment(Toolbox(list(tools) if tools is not None else default_tools()))
    stats = _Tally()
    with LoraTrainer.for_config(policy, config, init_from) as trainer:
        pending: list[Group] = []
        with training_bar("ReGRPO", len(order), progress) as advance:
            for point in order:
                if (
                    config.max_rollouts is not None
                    and stats.rollouts + config.group_size > config.max_rollouts
                ):
                    break
                group = sample_group(policy, environment, point, config)
                stats.add_group(group)
                if group.advantages is not None:
                    pending.append(group)
                if len(pending) >= config.groups_per_step:
                    _update(trainer, policy, pending, config)
                    stats.close_step()
                    pending = []
                advance(stats.status())
            if pending:
                _update(trainer, policy, pending, config)
                stats.close_step()
        trainer.save(out_dir)
        steps = trainer.steps
    return stats.report("regrpo", steps, time.perf_counter() - started, msgspec.to_builtins(config))


def _update(trainer: LoraTrainer, policy: LocalPolicy, groups: Sequence[Group], config: ReGRPOConfig) -> None:
    """``updates_per_group`` optimizer steps on the accumulated loss of ``groups``."""
    rollouts = []
    for group in groups:
        assert group.advantages is not None
        rollouts += [
            (group.point.messages, completion, advantage)
            for completion, advantage in zip(group.completions, group.advantages, strict=True)
        ]
    policy_gradient_steps(
        trainer,
        policy,
        rollouts,
        clip_eps=config.clip_eps,
        beta=config.beta,
        updates=config.updates_per_group,
    )


def policy_gradient_steps(
    trainer: LoraTrainer,
    policy: LocalPolicy,
    rollouts: Sequence[tuple[Sequence[Message], Completion, float]],
    *,
    clip_eps: float,
    beta: float,
    updates: int = 1,
) -> None:
    """``updates`` optimizer steps of :func:`policy_loss` over ``(prompt, completion, advantage)`` rollouts.

    ``π_old`` is each completion's own log-probs; the KL reference (adapters off) is computed once.
    Shared by ReGRPO (one turn per branch point) and the trajectory GRPO baseline (every turn).
    """
    samples = [rollout_sample(policy, messages, completion) for messages, completion, _ in rollouts]
    advantages = [advantage for _, _, advantage in rollouts]
    old = [torch.tensor(completion.logprobs, device=policy.device) for _, completion, _ in rollouts]
    reference = trainer.logprobs(samples, reference=True)
    total = sum(len(s.completion_ids) for s in samples)

    def loss_of(i: int, logprobs: torch.Tensor) -> torch.Tensor:
        return policy_loss(
            logprobs, old[i], reference[i], advantages[i], clip_eps=clip_eps, beta=beta, total_tokens=total
        )

    for _ in range(updates):
        trainer.backward(samples, loss_of)
        trainer.step()


class _Tally:
    """Running counts for an RL report."""

    def __init__(self) -> None:
        self.groups = self.skipped = self.rollouts = self.tokens = 0
        self.mean_reward: list[float] = []
        self.fix_rate: list[float] = []
        self._recent: list[Group] = []

    def add_group(self, group: Group) -> None:
        self.groups += 1
        self.skipped += group.advantages is None
        self.rollouts += len(group.completions)
        self.tokens += sum(len(c.token_ids) for c in group.completions)
        self._recent.append(group)

    def close_step(self) -> None:
        """Record the groups sampled since the last optimizer step."""
        rewards = [r for g in self._recent for r in g.rewards]
        if rewards:
            self.mean_reward.append(statistics.fmean(r.reward for r in rewards))
            self.fix_rate.append(statistics.fmean(r.fixed for r in rewards))
        self._recent = []

    def status(self) -> str:
        recent = [r for g in self._recent for r in g.rewards]
        fixed = statistics.fmean(r.fixed for r in recent) if recent else 0.0
        return f"rollouts {self.rollouts}  skipped {self.skipped}  fixed {fixed:.2f}"

    def report(self, method: str, steps: int, seconds: float, config: dict[str, object]) -> RLReport:
        return RLReport(
            method=method,
            groups=self.groups,
            skipped_zero_variance=self.skipped,
            rollouts=self.rollouts,
            generated_tokens=self.tokens,
            steps=steps,
            mean_reward=self.mean_reward,
            fix_rate=self.fix_rate,
            seconds=seconds,
            config=config,
        )
