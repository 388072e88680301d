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
   diagnosis match, minus the reflection cost η·tokens/100 and a penalty for needless reflection;
   with ``outcome_max_steps`` set, plus the outcome term: the same policy carries the continuation on
   to an answer, within the episode's turn budget, and the task's verifier scores it
   (:mod:`regrpo.learning.outcome`; off by default: it multiplies a round's generation cost).
4. **Advantages.** ``A_i = (R_i − mean R) / (std R + eps)`` within the group (``normalise_std=False``
   gives the reference release's ``R_i − mean R``). A group whose reward *spread*
   ``max R − min R`` is below ``min_reward_spread`` carries no signal worth its step and is skipped
   (and counted): DAPO's dynamic sampling drops groups whose rewards are all equal; we drop groups
   that differ by less than the smallest meaningful reward difference (default 0.1, the needless-
   reflection penalty), because std-normalising would blow a reflection-length difference of one
   token (rewards −0.024 vs −0.025) up to advantages of ±1.6. A skipped group still *anchors* the
   step (``kl_on_skipped``, the default): its completions enter the loss at ``A = 0``, so only their
   KL term acts, as in GRPO's own loss, where every sampled completion carries ``β·KL``. Without
   it the KL is only ever measured at the points the round changes, and nothing holds the points
   the policy already gets right (a round that dropped them moved count tasks' first call from
   ``count`` to ``ocr``: docs/results.md).
5. **Loss.** Over the generated tokens only (the prompt and tool outputs are never in a completion):
   ``ρ_t = π_θ(o_t)/π_old(o_t)``, ``L = −min(ρ_t A, clip(ρ_t, 1±ε) A) + β·KL_t``, token-mean over the
   group, where ``π_old`` is the rollout's own log-probs (of the distribution sampled from, at
   ``temperature``; the trainer scores at the same temperature; recomputed by the trainer for a
   bfloat16 policy, :func:`old_logprobs`, and for a remote sampler, below) and ``KL_t`` is the k3 estimator
   ``exp(r) − r − 1`` with ``r = log π_ref − log π_θ``, clamped as verl's ``low_var_kl`` does
   (``r`` to ±20, ``KL_t`` to ≤ 10). The reference ``π_ref`` is the round's *starting* adapter (the
   warm start when the round continues from one; the base model otherwise), swapped in for the
   reference pass: the KL keeps a round near where it started instead of pulling a tool-using warm
   start back towards a base model that never calls tools.

**The taken turn** (traffic points; ``taken_turn=True``, the default): a user's episode already holds
one continuation of its failed step, the turn the serving model really wrote next, and it ran to
the episode's real end. The group holds it beside the ``G`` sampled ones (``BranchPoint.taken``,
token ids as the serving engine gave them): it is executed and scored like them, and with the
outcome term on, its outcome is where the episode really ended — its own final answer, judged as a
roll-out's would be — not a roll-out. So a recovery the user saw succeed is in the group even when
no sample finds it again. It is not sampled by this round (it does not count in ``rollouts``:
``RLReport.taken_turns`` counts it) and its log-probs are of whichever version wrote it, maybe at
another temperature, so its ``π_old`` is the trainer's own weights at the step (ratio 1 at the first
update: it enters as if on-policy, as off-policy guidance in LUFFY does).

**Sampling through a serving engine** (``train_regrpo(sampler=...)``, ``regrpo train regrpo
--sample-url``): the groups are sampled by another engine (a GPU vLLM, ``regrpo serve-model``) through
:class:`~regrpo.agent.OpenAIPolicy` with ``n=G`` and the server's token ids, and this process only
executes, scores and computes gradients. The sampler must serve the adapter the round starts from
(``init_from``), so ``π_old`` is the round's starting weights, which the trainer already holds for
the KL reference: their float32 log-probs of the sampled tokens are exact whatever the server's
precision or its log-prob convention (vLLM's are of the raw logits, before temperature). Each
completion names the version it came from; one from another version than the round started with
(the engine was swapped mid-round) is dropped and counted (``RLReport.stale_dropped``), and once the
trainer is ``max_staleness`` optimizer steps past the served version the round stops sampling, so no
update uses samples further off-policy than that.

Where we differ from the public reference (``shared/REFERENCES.md`` §2.4) and why:

* Live groups: the release trains on a fixed offline group of five hand-built members and lets a
  teacher model write failure text; here the group is sampled from the current policy and every
  action is executed for real, and every failure observation in the data came from a real tool.
* Std-normalised advantages by default (the release: an option), so η means the same whatever the
  spread of a group's rewards; and ratio clipping (the release: plain REINFORCE), which is inert at
  one update per group (ratio 1) but keeps ``updates_per_group > 1`` safe.
* k3 KL instead of k1: non-negative per token and unbiased, so it cannot reward drifting away.
* A diagnosis reward (0.25) that the release only has inside its optional verifier, paid only for a
  *grounded* reflection (its evidence quotes the observation) whose error type matches the
  classifier's verdict; the observation text never names the error type, so it cannot be copied.
* The reflection cost counts every token of the reflection block (tags, JSON and all), not just
  the parsed fields.
* Learning rate 2e-5 (release: 5e-6 over 250+ steps): a CPU round is tens of steps.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from regrpo.agent.actions import ACTION_STOP_STRINGS, parse_action, parse_reflection, reflection_block
from regrpo.agent.image_parts import chat_for, takes_images
from regrpo.agent.policy import Policy
from regrpo.agent.turn import execute_action
from regrpo.agent.vision import VisionMessage
from regrpo.errors import InputError
from regrpo.learning.distributed import any_rank, ranks, reseed
from regrpo.learning.judging import answer_score, judges_answers
from regrpo.learning.lora_trainer import LoraSettings, LoraTrainer, TrainablePolicy
from regrpo.learning.outcome import roll_out
from regrpo.learning.policy_gradient import Rollout, group_advantages, policy_gradient_steps
from regrpo.learning.progress import training_bar
from regrpo.learning.records import BranchPoint
from regrpo.learning.replay import BranchEnvironment, Execution, ReplayError
from regrpo.learning.rewards import LocalReward, RewardWeights, score_continuation
from regrpo.learning.round_report import RLReport, RoundTally
from regrpo.learning.telemetry import StepLog
from regrpo.tools import Tool, Toolbox, default_tools
from regrpo.traces.schema import Action, Completion, Message, Observation, Reflection, ToolCall
from regrpo.verifier import VerifierError

log = logging.getLogger(__name__)

__all__ = [
    "Group",
    "ReGRPOConfig",
    "point_order",
    "sample_group",
    "scored_reflection",
    "step_rollouts",
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
    outcome_max_steps: int = 0
    """0: no outcome term. Else the episode's turn budget (the agent's ``max_steps``) within which each
    continuation is rolled out to an answer that the task's verifier scores (step 3)."""
    outcome_weight: float = 1.0
    """Weight of the outcome term (``solved``), when ``outcome_max_steps`` is set."""
    diagnosis_weight: float = 0.25
    eta: float = 0.1
    """Reflection cost per ``reflection_cost_scale`` reflection tokens (release: η = 0.1, scale 100)."""
    reflection_cost_scale: float = 100.0
    needless_reflection_penalty: float = 0.1
    normalise_std: bool = True
    min_reward_spread: float = 0.1
    """Skip a group whose ``max R − min R`` is below this (module docstring, step 4)."""
    eps: float = 1e-4
    clip_eps: float = 0.2
    beta: float = 0.04
    """KL weight (release: 0.04 for the text model)."""
    kl_on_skipped: bool = True
    """Skipped groups still enter the step's loss at advantage 0, so their KL term holds them (step 4)."""
    learning_rate: float = 2e-5
    groups_per_step: int = 2
    """Groups whose gradients are accumulated into one optimizer step."""
    updates_per_group: int = 1
    epochs: int = 1
    max_rollouts: int | None = None
    """Stop after this many sampled continuations (for comparisons at equal rollouts)."""
    stratify: bool = False
    """Visit points round-robin over strata (the target's tool, or answer, × the point's source)
    instead of in one shuffled order, so a round capped by ``max_rollouts`` sees every kind of
    decision (:func:`point_order`). Off by default until a round with it is measured."""
    taken_turn: bool = True
    """Hold a traffic point's taken turn in its group (module docstring, "The taken turn")."""
    max_staleness: int = 8
    """With a remote sampler: optimizer steps the trainer may take past the version it serves before
    the round stops sampling (module docstring). Unused when the round samples itself."""
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
        if self.max_staleness < 1:
            raise InputError(f"max_staleness must be at least 1 optimizer step, got {self.max_staleness}")
        if self.eps <= 0 or self.clip_eps <= 0 or self.beta < 0 or self.learning_rate <= 0:
            raise InputError(f"need eps > 0, clip_eps > 0, beta >= 0, learning_rate > 0; got {self}")
        if self.min_reward_spread < 0:
            raise InputError(f"min_reward_spread must be >= 0, got {self.min_reward_spread}")
        if self.outcome_max_steps < 0:
            raise InputError(
                f"outcome_max_steps must be >= 0 (0: no outcome term), got {self.outcome_max_steps}"
            )

    @property
    def weights(self) -> RewardWeights:
        return RewardWeights(
            lambda_exec=self.lambda_exec,
            outcome=self.outcome_weight,
            diagnosis=self.diagnosis_weight,
            eta=self.eta,
            reflection_cost_scale=self.reflection_cost_scale,
            needless_reflection=self.needless_reflection_penalty,
        )


# -- the order of points -------------------------------------------------------------------------------


def point_order(points: Sequence[BranchPoint], config: ReGRPOConfig) -> list[BranchPoint]:
    """The order a round visits ``points`` in, ``config.epochs`` times over, seeded by ``config.seed``.

    Plain: one shuffle of all of them. Stratified: each stratum (target tool or ``answer``, × source)
    shuffled, then one point from each stratum in turn (strata in a shuffled order), so the first
    ``m`` points cover ``min(m, strata)`` strata. A random 50 of 1,264 points once held 22 ``ocr``
    targets and 1 ``count`` target (docs/results.md).
    """
    rng = random.Random(config.seed)
    order = [p for _ in range(config.epochs) for p in points]
    if not config.stratify:
        rng.shuffle(order)
        return order
    strata: dict[tuple[str, str], list[BranchPoint]] = {}
    for point in order:
        if isinstance(point.target, ToolCall):
            target = point.target.name
        else:  # an answer, or no target at all (a user's traffic)
            target = "answer" if point.target is not None else "none"
        strata.setdefault((target, point.source), []).append(point)
    queues = [strata[key] for key in sorted(strata)]
    for queue in queues:
        rng.shuffle(queue)
    rng.shuffle(queues)
    interleaved: list[BranchPoint] = []
    for turn in range(max(map(len, queues), default=0)):
        interleaved += [queue[turn] for queue in queues if turn < len(queue)]
    return interleaved


# -- one group -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A branch point's sampled continuations, their rewards and advantages (``None``: skipped)."""

    point: BranchPoint
    completions: list[Completion]
    rewards: list[LocalReward]
    advantages: list[float] | None
    unscored: int = 0
    """Continuations dropped because the user's verifier failed on their answer (not scored as wrong)."""
    taken: int = 0
    """1 when the last of ``completions`` is the point's taken turn (not sampled by this round)."""
    chat: Sequence[VisionMessage] | None = None
    """The point's messages as the trained engine takes them, image parts included (:func:`engine_chat`);
    ``None``: ``point.messages``."""

    @property
    def messages(self) -> Sequence[Message] | Sequence[VisionMessage]:
        """What the completions were sampled after, as training scores them."""
        return self.chat if self.chat is not None else self.point.messages

    @property
    def sampled(self) -> list[Completion]:
        """The completions this round sampled (the taken turn left out)."""
        return self.completions[: len(self.completions) - self.taken]


def sample_group(
    policy: TrainablePolicy,
    environment: BranchEnvironment,
    point: BranchPoint,
    config: ReGRPOConfig,
    *,
    sampler: Policy | None = None,
    version: str | None = None,
) -> tuple[Group, int]:
    """Sample G continuations at ``point`` in one batched call, execute each, score each.

    ``sampler`` (default: ``policy``) draws them; with one, completions that name another version than
    ``version`` are dropped. A traffic point's taken turn joins them last (``config.taken_turn``).
    Returns the group and how many were dropped.
    """
    chat = engine_chat(policy, environment, point)  # what training scores
    engine = sampler or policy
    shown = chat if takes_images(engine) == takes_images(policy) else engine_chat(engine, environment, point)
    completions = engine.generate(
        shown,
        n=config.group_size,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        stop=ACTION_STOP_STRINGS,
    )
    drawn = len(completions)
    if sampler is not None:
        completions = [c for c in completions if _version(sampler, c) == version]
    taken = _taken_completion(point) if config.taken_turn else None
    members = completions + ([taken] if taken is not None else [])
    scored = asyncio.run(
        _score_all(sampler or policy, policy, environment, point, completions, config, taken=taken)
    )
    kept = [(c, r) for c, r in zip(members, scored, strict=True) if r is not None]
    held = int(taken is not None and scored[-1] is not None)
    unscored = sum(r is None for r in scored[: len(completions)])  # sampled ones only
    completions, rewards = [c for c, _ in kept], [r for _, r in kept]
    advantages = (
        group_advantages(
            [r.reward for r in rewards],
            normalise_std=config.normalise_std,
            eps=config.eps,
            min_spread=config.min_reward_spread,
        )
        if len(rewards) >= 2
        else None  # too few left to compare
    )
    group = Group(point, completions, rewards, advantages, unscored, held, chat=chat)
    return group, drawn - len(group.sampled) - unscored


def engine_chat(
    engine: object, environment: BranchEnvironment, point: BranchPoint
) -> Sequence[VisionMessage]:
    """``point.messages`` as ``engine`` takes them: for one that takes images, with the images each
    message showed (rebuilt by replaying the point: the task's images and the tools' outputs)."""
    if not takes_images(engine):
        return point.messages
    context = asyncio.run(environment.context(point))
    return chat_for(engine, point.messages, context.images)


def _taken_completion(point: BranchPoint) -> Completion | None:
    """The point's taken turn as a group member: no log-probs of its own (module docstring)."""
    if point.taken is None:
        return None
    return Completion(
        text=point.taken.text, token_ids=list(point.taken.token_ids), adapter=point.taken.adapter
    )


def _version(sampler: Policy, completion: Completion) -> str:
    """The adapter (or base model) a sampler's completion came from."""
    return completion.adapter or sampler.model_name


async def _score_all(
    roller: Policy,
    policy: TrainablePolicy,
    environment: BranchEnvironment,
    point: BranchPoint,
    completions: Sequence[Completion],
    config: ReGRPOConfig,
    *,
    taken: Completion | None = None,
) -> list[LocalReward | None]:
    """Every continuation's reward (then the ``taken`` turn's, if given), executed (and rolled out by
    ``roller``) concurrently, so the roll-outs' turns can share a batched engine's forward passes;
    ``None`` where the user's verifier failed on the answer (a model's odd answer must not stop a
    round, nor count as a wrong one)."""
    if completions or taken is not None:
        await environment.context(point)  # restore the state once, before the continuations copy it

    async def scored(completion: Completion, is_taken: bool) -> LocalReward | None:
        try:
            return await _score(roller, policy, environment, point, completion, config, taken=is_taken)
        except VerifierError as exc:
            log.warning("dropped a continuation at branch point %s: %s", point.id, exc)
            return None

    members = [(c, False) for c in completions] + ([(taken, True)] if taken is not None else [])
    return list(await asyncio.gather(*(scored(c, is_taken) for c, is_taken in members)))


async def _score(
    roller: Policy,
    policy: TrainablePolicy,
    environment: BranchEnvironment,
    point: BranchPoint,
    completion: Completion,
    config: ReGRPOConfig,
    *,
    taken: bool = False,
) -> LocalReward:
    action = parse_action(completion.text)
    execution = await environment.execute(point, action) if isinstance(action, ToolCall) else None
    reflection, tokens = scored_reflection(completion.text, point.observation, policy.count_tokens)
    solved = (
        await _solved(roller, environment, point, completion.text, action, execution, config, taken)
        if config.outcome_max_steps and judges_answers(point)
        else None
    )
    outcome = execution.outcome if execution is not None else None
    return score_continuation(point, action, outcome, reflection, tokens, config.weights, solved=solved)


async def _solved(
    roller: Policy,
    environment: BranchEnvironment,
    point: BranchPoint,
    text: str,
    action: Action,
    execution: Execution | None,
    config: ReGRPOConfig,
    taken: bool,
) -> float:
    """The outcome term: the episode's own final answer for the taken turn (where the episode really
    ended), else the score of a roll-out by ``roller`` from this continuation to an answer."""
    if taken and point.taken is not None:
        final = point.taken.final_answer
        return answer_score(point, final) if final is not None else 0.0
    observation: Observation | None
    if execution is not None:
        context, observation = execution.context, execution.observation
    else:  # an answer (needs no state) or an unparseable turn (its observation says so)
        context = await environment.context(point)
        observation, _ = await execute_action(environment.toolbox, action, context)
    reached = await roll_out(
        roller,
        environment.toolbox,
        point,
        text,
        action,
        observation,
        context,
        max_steps=config.outcome_max_steps,
        max_new_tokens=config.max_new_tokens,
    )
    return reached.score


def scored_reflection(
    text: str, observation: str, count_tokens: Callable[[str], int]
) -> tuple[Reflection | None, int]:
    """``(the reflection if it parsed and is grounded, else None; tokens of the whole block)``.

    An ungrounded reflection (its evidence does not quote ``observation``) still costs its tokens but
    earns no diagnosis reward: otherwise a guessed error type is paid like a diagnosis.
    """
    block = reflection_block(text)
    if not block:
        return None, 0
    reflection, problem = parse_reflection(text, observation)
    return (reflection if problem is None else None), count_tokens(block)


# -- a round -------------------------------------------------------------------------------------------


def train_regrpo(
    policy: TrainablePolicy,
    points: Sequence[BranchPoint],
    config: ReGRPOConfig,
    out_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    tools: Sequence[Tool] | None = None,
    progress: bool = True,
    sampler: Policy | None = None,
) -> RLReport:
    """Run ReGRPO over ``points`` and save the adapter to ``out_dir`` (a PEFT folder).

    ``init_from`` continues from an adapter (the SFT warm start); ``tools`` must be the agent's
    toolbox (default: the built-in tools), since continuations are executed with them. ``sampler``
    samples the groups instead of ``policy`` (a serving engine through ``OpenAIPolicy``, serving
    ``init_from``; module docstring): ``policy`` then only scores and trains.
    """
    if not points:
        raise InputError("no branch points to train on; build them with `regrpo train data` first")
    started = time.perf_counter()
    place = ranks()  # data-parallel: this rank's shard of the points, its share of the budget
    mine = place.shard(point_order(points, config))
    budget = place.share(config.max_rollouts) if config.max_rollouts is not None else None
    environment = BranchEnvironment(Toolbox(list(tools) if tools is not None else default_tools()))
    stats = RoundTally()
    version = (sampler.active_adapter or sampler.model_name) if sampler is not None else None
    with (
        LoraTrainer.for_config(policy, config, init_from, temperature=config.temperature) as trainer,
        StepLog(out_dir, enabled=place.main) as step_log,
    ):
        if place.rank:  # the LoRA start is the same on every rank; the samples are not
            reseed(config.seed + place.rank)
        pending: list[Group] = []  # groups with advantages, waiting for an optimizer step
        anchors: list[Group] = []  # skipped groups sampled meanwhile (kl_on_skipped)
        left = iter(mine)
        exhausted = False
        with training_bar("ReGRPO", len(mine), progress and place.main) as advance:
            while True:
                while not exhausted and len(pending) < config.groups_per_step:
                    point = next(left, None)
                    if point is None or (budget is not None and stats.rollouts + config.group_size > budget):
                        exhausted = True
                        break
                    if sampler is not None and trainer.steps >= config.max_staleness:
                        stats.stopped_for_staleness = exhausted = True
                        break
                    try:
                        group, dropped = sample_group(
                            policy, environment, point, config, sampler=sampler, version=version
                        )
                    except ReplayError as exc:  # its state cannot be rebuilt: nothing was sampled
                        log.warning("skipped branch point %s: %s", point.id, exc)
                        stats.unreplayable += 1
                        advance(stats.status())
                        continue
                    stats.stale_dropped += dropped
                    stats.add_group(group)
                    if group.advantages is not None:
                        pending.append(group)
                    elif group.completions:
                        anchors.append(group)
                    advance(stats.status())
                # every rank steps together; one with nothing to train on adds zero gradients
                if not any_rank(bool(pending)):
                    break
                step = trainer.steps + 1
                update = _update(trainer, policy, pending, anchors, config, remote=sampler is not None)
                stats.close_step(step_log, step, update)
                pending, anchors = [], []
        if place.main:
            trainer.save(out_dir)
        steps = trainer.steps
    return stats.report("regrpo", steps, time.perf_counter() - started, msgspec.to_builtins(config))


def step_rollouts(groups: Sequence[Group], anchors: Sequence[Group], config: ReGRPOConfig) -> list[Rollout]:
    """The ``(prompt, completion, advantage)`` rollouts of one optimizer step.

    ``groups`` (with advantages) as they are; the skipped ``anchors`` at advantage 0 when
    ``config.kl_on_skipped`` and ``β > 0`` (module docstring, step 4), else not at all.
    """
    rollouts: list[Rollout] = []
    for group in groups:
        if group.advantages is None:
            raise InputError(f"group at point {group.point.id} was skipped; pass it as an anchor")
        rollouts += [
            (group.messages, completion, advantage)
            for completion, advantage in zip(group.completions, group.advantages, strict=True)
        ]
    if config.kl_on_skipped and config.beta > 0:
        rollouts += [(a.messages, completion, 0.0) for a in anchors for completion in a.completions]
    return rollouts


def _update(
    trainer: LoraTrainer,
    policy: TrainablePolicy,
    groups: Sequence[Group],
    anchors: Sequence[Group],
    config: ReGRPOConfig,
    *,
    remote: bool = False,
) -> dict[str, float]:
    """``updates_per_group`` optimizer steps on the accumulated loss of ``groups`` (and ``anchors``);
    the last one's metrics, with how many anchor completions the step held."""
    rollouts = step_rollouts(groups, anchors, config)
    metrics = policy_gradient_steps(
        trainer,
        policy,
        rollouts,
        clip_eps=config.clip_eps,
        beta=config.beta,
        updates=config.updates_per_group,
        remote=remote,
    )
    trained = sum(len(group.completions) for group in groups)
    return metrics | {"anchor_completions": float(len(rollouts) - trained)}
