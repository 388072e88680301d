"""What an RL round did: :class:`RLReport` (ReGRPO and the GRPO baseline), and the running counts a
ReGRPO round keeps for it and for its per-step telemetry (:class:`RoundTally`)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import msgspec

from regrpo.learning.distributed import summed_each
from regrpo.learning.telemetry import StepLog

if TYPE_CHECKING:
    from regrpo.learning.regrpo import Group

__all__ = ["RLReport", "RoundTally"]


class RLReport(msgspec.Struct, frozen=True):
    """What an RL round did (ReGRPO or the GRPO baseline)."""

    method: str
    groups: int
    skipped_zero_variance: int
    """Groups skipped for too little reward spread (``min_reward_spread``; all-equal groups included)."""
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
    stale_dropped: int = 0
    """Remote samples dropped because they came from another version than the round started from."""
    unscored: int = 0
    """Continuations dropped because the user's verifier raised on their answer (counted in ``rollouts``)."""
    taken_turns: int = 0
    """Traffic points' taken turns held in their groups beside the samples (not in ``rollouts``)."""
    stopped_for_staleness: bool = False
    """The round stopped sampling ``max_staleness`` steps past the remote sampler's version."""
    unreplayable: int = 0
    """Branch points skipped because their state could not be rebuilt (a replayed call failed, or
    made other pixels than the episode recorded: :class:`~regrpo.learning.replay.ReplayError`)."""


class RoundTally:
    """Running counts of a ReGRPO round, for its report and its per-step telemetry."""

    def __init__(self) -> None:
        self.groups = self.skipped = self.rollouts = self.tokens = self.stale_dropped = self.unscored = 0
        self.taken = self.unreplayable = 0
        self.stopped_for_staleness = False
        self.mean_reward: list[float] = []
        self.fix_rate: list[float] = []
        self._recent: list[Group] = []
        self._since = time.perf_counter()
        self._last: dict[str, float] = {}  # the latest step's update metrics, for the progress bar

    def add_group(self, group: Group) -> None:
        self.groups += 1
        self.skipped += group.advantages is None
        self.rollouts += len(group.sampled) + group.unscored  # sampled and run: spent budget
        self.unscored += group.unscored
        self.taken += group.taken
        self.tokens += sum(len(c.token_ids) for c in group.sampled)
        self._recent.append(group)

    def close_step(self, log: StepLog, step: int, update: dict[str, float]) -> None:
        """Record the groups sampled since the last optimizer step, with the step's ``update`` metrics.

        Data-parallel: the means are over every rank's groups (every rank calls this at each step).
        """
        rewards = [r for g in self._recent for r in g.rewards]
        completions = [c for g in self._recent for c in g.sampled]
        spreads = [
            max(r.reward for r in g.rewards) - min(r.reward for r in g.rewards)
            for g in self._recent
            if g.rewards
        ]
        now = time.perf_counter()
        self._last = update
        count, reward, fixed, spread, groups, truncated, turns, tokens = summed_each(
            [
                len(rewards),
                sum(r.reward for r in rewards),
                sum(r.fixed for r in rewards),
                sum(spreads),  # a remote group whose samples were all dropped has none
                len(spreads),
                sum(c.finish_reason == "length" for c in completions),
                len(completions),
                sum(len(c.token_ids) for c in completions),
            ]
        )
        if count:
            self.mean_reward.append(reward / count)
            self.fix_rate.append(fixed / count)
            log.log(
                step,
                {
                    **update,
                    "reward_mean": self.mean_reward[-1],
                    "reward_spread": spread / max(1.0, groups),
                    "fix_rate": self.fix_rate[-1],
                    "skipped_groups": summed_each([self.skipped])[0],
                    "truncation_rate": truncated / max(1.0, turns),
                    "tokens_per_s": tokens / max(1e-9, now - self._since),
                },
            )
        self._recent = []
        self._since = now

    def status(self) -> str:
        recent = [r for g in self._recent for r in g.rewards]
        fixed = statistics.fmean(r.fixed for r in recent) if recent else 0.0
        last = (
            f"  kl {self._last['kl']:.3f}  grad {self._last['grad_norm']:.2f}" if "kl" in self._last else ""
        )
        return f"rollouts {self.rollouts}  skipped {self.skipped}  fixed {fixed:.2f}{last}"

    def report(self, method: str, steps: int, seconds: float, config: dict[str, object]) -> RLReport:
        """The round's report, its counts summed over ranks (every rank calls this once, at the end)."""
        groups, skipped, rollouts, tokens, stale, unscored, taken, stopped, unreplayable = summed_each(
            [
                self.groups,
                self.skipped,
                self.rollouts,
                self.tokens,
                self.stale_dropped,
                self.unscored,
                self.taken,
                self.stopped_for_staleness,
                self.unreplayable,
            ]
        )
        return RLReport(
            method=method,
            groups=int(groups),
            skipped_zero_variance=int(skipped),
            rollouts=int(rollouts),
            generated_tokens=int(tokens),
            steps=steps,
            mean_reward=self.mean_reward,
            fix_rate=self.fix_rate,
            seconds=seconds,
            config=config,
            stale_dropped=int(stale),
            unscored=int(unscored),
            taken_turns=int(taken),
            stopped_for_staleness=stopped > 0,
            unreplayable=int(unreplayable),
        )
