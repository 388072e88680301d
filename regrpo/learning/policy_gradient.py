"""The policy-gradient arithmetic ReGRPO and the trajectory GRPO baseline share.

Group-relative advantages (with the spread filter), the clipped surrogate, the clamped k3 KL, their
token-mean loss, and :func:`policy_gradient_steps`, which runs optimizer steps of that loss over
``(prompt, completion, advantage)`` rollouts on a :class:`~regrpo.learning.lora_trainer.LoraTrainer`.
What each term means and why it is this way: :mod:`regrpo.learning.regrpo`'s docstring, steps 4-5.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from regrpo.agent.vision import VisionMessage
from regrpo.errors import InputError
from regrpo.learning.distributed import summed, summed_each
from regrpo.learning.lora_trainer import LoraTrainer, TrainablePolicy
from regrpo.learning.sequences import TokenSample, rollout_sample
from regrpo.traces.schema import Completion, Message

Rollout = tuple[Sequence[Message] | Sequence[VisionMessage], Completion, float]
"""One trained completion: ``(the prompt it answered, the completion, its advantage)``."""

__all__ = [
    "Rollout",
    "clipped_surrogate",
    "group_advantages",
    "k3_kl",
    "old_logprobs",
    "policy_gradient_steps",
    "policy_loss",
]


def group_advantages(
    rewards: Sequence[float],
    *,
    normalise_std: bool = True,
    eps: float = 1e-4,
    min_spread: float = 0.0,
) -> list[float] | None:
    """``(r − mean) / (std + eps)`` (population std), or ``r − mean``.

    ``None`` (skip the group) when ``max r − min r`` is below ``min_spread``, or the rewards are all
    equal: the group-filtering rule of the module docstring, step 4.
    """
    if len(rewards) < 2:
        raise InputError("a group needs at least two rewards")
    mean = statistics.fmean(rewards)
    spread = max(rewards) - min(rewards)
    if spread <= 1e-12 or spread < min_spread:
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
    """One completion's share of the clipped policy-gradient + KL loss, token-mean over ``total_tokens``.

    ``L = Σ_t [−min(ρ_t A, clip(ρ_t, 1 ± ε) A) + β·KL_t] / total_tokens``, ``ρ_t = exp(log π_θ − log π_old)``.
    """
    pg = clipped_surrogate(logprobs, old_logprobs, advantage, clip_eps)
    return (pg + beta * k3_kl(logprobs, ref_logprobs)).sum() / total_tokens


def clipped_surrogate(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantage: float, clip_eps: float
) -> torch.Tensor:
    """Per-token PPO surrogate ``−min(ρ_t A, clip(ρ_t, 1 ± ε) A)``, shape of ``logprobs``."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    return -torch.minimum(unclipped, clipped)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): ``exp(r) − r − 1``, ``r = log π_ref − log π_θ``.

    Clamped as verl's ``low_var_kl`` (``r`` to ±20, the estimate to ≤ 10): one token the reference
    finds near-impossible (r ≈ −23) otherwise contributes ~1e6 and its gradient swamps the step.
    """
    log_ratio = torch.clamp(ref_logprobs - logprobs, -20.0, 20.0)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, max=10.0)


def old_logprobs(
    trainer: LoraTrainer,
    policy: TrainablePolicy,
    samples: Sequence[TokenSample],
    completions: Sequence[Completion],
    *,
    sampler_reference: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """``π_old``'s per-token log-probs of each sampled completion, as the update's ratio needs them.

    In float32 they are the sampler's own (``Completion.logprobs``: equal to a fresh forward pass
    within 1e-4, tests/agent/test_local_policy.py), so nothing is recomputed. A bfloat16 sampler's
    differ from the trainer's forward pass by rounding, which would make the first update's ratio
    ≠ 1 for no change of policy; then they are recomputed by the trainer's own forward pass (its
    log-softmax in float32) before any update, and the ratio is exact. ``sampler_reference``: the
    completions came from a sampler serving the round's starting weights, whose log-probs (the KL
    reference, already computed) these are. A completion without log-probs (a traffic point's taken
    turn, which this round did not sample) gets the trainer's own in every case
    (:mod:`regrpo.learning.regrpo`, "The taken turn").
    """
    if sampler_reference is not None:
        old = list(sampler_reference)
    elif policy.dtype == torch.float32:
        old = [torch.tensor(c.logprobs, device=policy.device) for c in completions]
    else:
        return trainer.logprobs(samples)  # every completion, taken turns included
    taken = [i for i, completion in enumerate(completions) if not completion.logprobs]
    for i, fresh in zip(taken, trainer.logprobs([samples[i] for i in taken]), strict=True):
        old[i] = fresh
    return old


def policy_gradient_steps(
    trainer: LoraTrainer,
    policy: TrainablePolicy,
    rollouts: Sequence[Rollout],
    *,
    clip_eps: float,
    beta: float,
    updates: int = 1,
    remote: bool = False,
) -> dict[str, float]:
    """``updates`` optimizer steps of :func:`policy_loss` over ``(prompt, completion, advantage)`` rollouts.

    ``π_old`` is :func:`old_logprobs`; the KL reference (the round's starting weights) is computed
    once. Shared by ReGRPO (one turn per branch point) and the trajectory GRPO baseline (every turn).
    ``remote``: the completions came from a sampler serving the round's starting weights, so those
    (the KL reference) are ``π_old``. Returns the last update's telemetry (:mod:`regrpo.learning.telemetry`).

    Data-parallel (:mod:`regrpo.learning.distributed`): ``rollouts`` are this rank's share of the step
    (possibly none); the token-mean is over every rank's completion tokens, so N ranks' summed
    gradients are the step one process would take on all the rollouts, and the telemetry is global.
    Every rank must call it for every step.
    """
    samples = [rollout_sample(policy, messages, completion) for messages, completion, _ in rollouts]
    advantages = [advantage for _, _, advantage in rollouts]
    reference = trainer.logprobs(samples, reference=True)
    completions = [c for _, c, _ in rollouts]
    old = old_logprobs(trainer, policy, samples, completions, sampler_reference=reference if remote else None)
    total = max(1, round(summed(sum(len(s.completion_ids) for s in samples))))  # every rank's tokens
    terms = {"policy_loss": 0.0, "kl": 0.0, "clipped_tokens": 0.0}

    def loss_of(i: int, logprobs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # telemetry: each term's share of the token-mean
            ratio = torch.exp(logprobs - old[i])
            terms["policy_loss"] += float(clipped_surrogate(logprobs, old[i], advantages[i], clip_eps).sum())
            terms["kl"] += float(k3_kl(logprobs, reference[i]).sum())
            terms["clipped_tokens"] += float(((ratio - 1.0).abs() > clip_eps).sum())
        return policy_loss(
            logprobs, old[i], reference[i], advantages[i], clip_eps=clip_eps, beta=beta, total_tokens=total
        )

    metrics: dict[str, float] = {}
    for _ in range(updates):
        terms.update(policy_loss=0.0, kl=0.0, clipped_tokens=0.0)
        result = trainer.backward(samples, loss_of)
        grad_norm = trainer.step()
        local_tokens = sum(len(s.completion_ids) for s in samples)
        loss, surrogate, kl, clipped, entropy = summed_each(
            [
                result.loss,
                terms["policy_loss"],
                terms["kl"],
                terms["clipped_tokens"],
                result.entropy * local_tokens,
            ]
        )
        metrics = {
            "loss": loss,
            "policy_loss": surrogate / total,
            "kl": kl / total,
            "entropy": entropy / total,
            "clip_fraction": clipped / total,
            "grad_norm": grad_norm,
            "learning_rate": trainer.learning_rate,
        }
    return metrics
