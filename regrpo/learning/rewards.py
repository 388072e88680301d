"""Rewards: what a continuation at a branch point earns, and what a whole episode earns.

Local (ReGRPO, one continuation = an optional reflection + one action, executed for real):

    R = λ_exec · fixed + w_out · solved + w_diag · diagnosed − η · (reflection tokens / 100) − ρ · needless

* ``fixed`` — the action is what the reference step needed and it really worked: the same tool, the
  call succeeded with a non-empty output, and the output holds every string the reference step's
  output holds (``expects``); for steps with no ``expects`` (crop, rotate) the arguments must agree
  (numbers within 1e-6, boxes with IoU ≥ 0.5). For an ``<answer>`` target: the task's verifier.
  At a traffic point (no reference, :mod:`regrpo.learning.traffic`): a call that now works with a
  non-empty output and is not the failed call repeated (a retry is the fix only after a timeout
  or a crash), or an answer matching a reference answer given as feedback, or given full marks by the
  user's verifier that scored the episode (:mod:`regrpo.learning.judging`; such an answer is the only
  fix at the answer turn of an episode whose answer the feedback rejected). Weaker than a reference
  (any working call counts), which is why traffic points carry their own ``source``.
* ``solved`` — the outcome term, when the round rolls continuations out (:mod:`regrpo.learning.outcome`):
  the score (0 to 1) of the answer that the episode, carried on from this continuation by the same
  policy, reaches: 1 or 0 by the task's answer, or the user's verifier's score at a traffic point it
  judges. Off by default (0 when not rolled out).
* ``diagnosed`` — at a failure, the reflection parsed and its ``error_type`` equals the classifier's
  verdict on the observation (:func:`regrpo.learning.classify.classify_failure`).
* reflection cost — the reference release's ``C = reflection tokens / 100`` with η = 0.1.
* ``needless`` — a reflection written at a clean point (the last call worked), where none was asked.

The reference release's verifier-free default is ``λ_exec = 1, η = 0.1, λ_val = 0``; the diagnosis
term is ours (the issue asks for it): it is the "grounded diagnosis" part of the release's optional
verifier ``V``, at weight 0.25, and can be set to 0 to recover the release's reward exactly.

Episode (trajectory GRPO baseline): ``1{correct}``, optionally multiplied by OTC-GRPO's tool-call
reward (``shared/REFERENCES.md`` §3.1), which is 1 at the fewest calls any correct rollout of the
group used and falls off with more (or fewer) calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from regrpo.agent.loop import answers_match
from regrpo.agent.trigger import is_empty_output
from regrpo.errors import TRANSIENT_ERROR_TYPES
from regrpo.learning.judging import answer_score, judges_answers
from regrpo.learning.records import BranchPoint
from regrpo.tasks.reference import output_text
from regrpo.tasks.verifiers import contains_normalized
from regrpo.tools import ToolOutcome
from regrpo.traces.schema import Action, Answer, Reflection, ToolCall

__all__ = [
    "LocalReward",
    "RewardWeights",
    "episode_reward",
    "local_fix",
    "otc_tool_reward",
    "score_continuation",
]


@dataclass(frozen=True)
class RewardWeights:
    """The coefficients of the local reward (see the module docstring)."""

    lambda_exec: float = 1.0
    outcome: float = 1.0
    diagnosis: float = 0.25
    eta: float = 0.1
    reflection_cost_scale: float = 100.0
    needless_reflection: float = 0.1


@dataclass(frozen=True)
class LocalReward:
    """One continuation's reward and the parts it is made of."""

    reward: float
    fixed: bool
    diagnosed: bool
    reflected: bool
    reflection_tokens: int
    needless: bool
    solved: float | None = None
    """The outcome term's score, 0 to 1 (``None``: not rolled out)."""


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)


def _arguments_agree(given: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        if key not in given:
            return False
        if _is_box(value) and _is_box(given[key]):
            if _iou(given[key], value) < 0.5:
                return False
        elif not _close(given[key], value):
            return False
    return True


def _usable_without_reference(point: BranchPoint, action: Action, outcome: ToolOutcome | None) -> bool:
    """A traffic point's fix (no reference): a usable answer, or a call that now works and is not the
    failed one repeated (unless the failure was transient, where retrying it is the fix). Where the
    user rejected an answer, only the right answer is a fix (a call is judged by where it leads)."""
    if isinstance(action, Answer):
        return judges_answers(point) and answer_score(point, action.text) >= 1.0
    if isinstance(point.failed_action, Answer):
        return False
    if not isinstance(action, ToolCall) or outcome is None or not _worked(outcome):
        return False
    return action != point.failed_action or point.error_type in TRANSIENT_ERROR_TYPES


def _worked(outcome: ToolOutcome) -> bool:
    """The call succeeded and returned something (an empty output fixes nothing)."""
    return outcome.ok and not is_empty_output(outcome.output)


def local_fix(point: BranchPoint, action: Action, outcome: ToolOutcome | None) -> bool:
    """Whether ``action`` (run at ``point``, with ``outcome``) does what the reference step needed."""
    target = point.target
    if target is None:
        return _usable_without_reference(point, action, outcome)
    if isinstance(target, Answer):
        if not isinstance(action, Answer):
            return False
        return (
            point.answer.check(action.text)
            if point.answer is not None
            else answers_match(action.text, target.text)
        )
    if not isinstance(action, ToolCall) or action.name != target.name or outcome is None:
        return False
    if not _worked(outcome):
        return False
    if point.expects:
        text = output_text(outcome.output)
        return all(contains_normalized(text, want) for want in point.expects)
    return _arguments_agree(action.arguments, target.arguments)


def score_continuation(
    point: BranchPoint,
    action: Action,
    outcome: ToolOutcome | None,
    reflection: Reflection | None,
    reflection_tokens: int,
    weights: RewardWeights,
    *,
    solved: float | None = None,
) -> LocalReward:
    """The reward of one continuation at ``point`` (module docstring); ``solved``: its roll-out's score."""
    fixed = local_fix(point, action, outcome)
    reflected = reflection_tokens > 0
    diagnosed = point.failed and reflection is not None and reflection.error_type == point.error_type
    needless = reflected and not point.failed
    reward = (
        weights.lambda_exec * fixed
        + weights.outcome * (solved or 0.0)
        + weights.diagnosis * diagnosed
        - weights.eta * reflection_tokens / weights.reflection_cost_scale
        - weights.needless_reflection * needless
    )
    return LocalReward(reward, fixed, diagnosed, reflected, reflection_tokens, needless, solved)


def otc_tool_reward(calls: int, fewest_correct: int | None, smoothing: float = 1.0) -> float:
    """OTC-GRPO's ``r_tool``: 1 at the group's fewest calls among correct rollouts, less away from it.

    ``fewest_correct`` is ``None`` when no rollout of the group was correct (then ``r_tool`` is
    neutral, 1, as in the OTC code for incorrect rollouts).
    """
    if fewest_correct is None:
        return 1.0
    m, n = calls, fewest_correct
    if m == 0 and n == 0:
        return 1.0
    if n == 0:
        return math.cos(m * math.pi / (2 * m + smoothing))
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


def episode_reward(correct: bool, calls: int, fewest_correct: int | None, *, tool_cost: bool) -> float:
    """Trajectory reward: ``1{correct}``, times OTC's tool-call reward when ``tool_cost`` is on."""
    base = 1.0 if correct else 0.0
    return base * otc_tool_reward(calls, fewest_correct) if tool_cost and correct else base
