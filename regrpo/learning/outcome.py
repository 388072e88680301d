"""ReGRPO's outcome term: carry a sampled continuation on to an answer and let the task's verifier score it.

The local reward (:mod:`regrpo.learning.rewards`) judges one action against the reference step, so
it cannot tell an action that looks right from one that leads to a right answer: a round rewarded
"repeat the call" after injected faults and the policy then repeated an *empty* OCR until its turns
ran out (docs/results.md). The outcome term closes that gap. After a continuation's action has run
on its private copy of the branch point's state, the same policy (greedy, as the agent runs by
default) takes the episode's remaining turns exactly as the runtime would: the observation and any
reflection request come from :mod:`regrpo.agent.turn`, the tools from the same toolbox, the turn
budget from the episode's ``max_steps``. The answer is scored by the point's
:class:`~regrpo.tasks.schema.AnswerSpec` (the task's answer) or, at a traffic point with no reference
answer, by the user's verifier that scored its episode (:mod:`regrpo.learning.judging`); a point
with neither gets no outcome term.

The roll-out's own turns are not trained: only the continuation at the branch point is, as in
ReGRPO, and the outcome is one more term of its reward (``outcome_weight · solved``).
"""

from __future__ import annotations

from dataclasses import dataclass

from regrpo.agent.actions import parse_action
from regrpo.agent.policy import Policy
from regrpo.agent.trigger import ReflectionTrigger
from regrpo.agent.turn import execute_action, generate_turn, user_turn
from regrpo.errors import InputError
from regrpo.learning.judging import answer_score, judges_answers
from regrpo.learning.records import BranchPoint
from regrpo.tools import Toolbox, ToolContext
from regrpo.traces.schema import Action, Answer, Message, Observation

__all__ = ["RollOut", "remaining_turns", "roll_out"]


@dataclass(frozen=True)
class RollOut:
    """Where a continuation led: the answer it reached (``None``: the turns ran out) and its score."""

    answer: str | None
    score: float
    """0 (wrong, or no answer) to 1 (right): :func:`~regrpo.learning.judging.answer_score`."""
    turns: int
    """Model turns the roll-out took after the continuation (0: the continuation itself answered)."""

    @property
    def solved(self) -> bool:
        """Full marks: the answer is right."""
        return self.score >= 1.0


def remaining_turns(point: BranchPoint, max_steps: int) -> int:
    """Turns left after the continuation at ``point``, in an episode of ``max_steps`` model turns."""
    if max_steps < 1:
        raise InputError(f"max_steps must be at least 1, got {max_steps}")
    used = sum(message.role == "assistant" for message in point.messages)
    return max(0, max_steps - used - 1)


async def roll_out(
    policy: Policy,
    toolbox: Toolbox,
    point: BranchPoint,
    continuation: str,
    action: Action,
    observation: Observation | None,
    context: ToolContext,
    *,
    max_steps: int,
    max_new_tokens: int,
) -> RollOut:
    """Run the episode on from ``continuation`` (its ``action`` already executed into ``observation``
    on ``context``, a private copy of the point's state) and score the answer it reaches.

    Raises :class:`InputError` for a point that cannot score an answer (no answer spec, no verifier).
    """
    if not judges_answers(point):
        raise InputError(
            f"branch point {point.id} has no answer spec and no verifier; an outcome needs one to score it"
        )
    if isinstance(action, Answer):
        return RollOut(action.text, answer_score(point, action.text), 0)
    if observation is None:
        raise InputError("a continuation that did not answer needs its observation to roll out from")
    messages = [*point.messages, Message("assistant", continuation)]
    trigger = ReflectionTrigger()
    turns = remaining_turns(point, max_steps)
    for turn in range(turns):
        text, _ = user_turn(observation, action, trigger, context.images.infos())
        messages.append(Message("user", text, images=tuple(observation.new_images)))
        completion = await generate_turn(
            policy, messages, temperature=0.0, max_new_tokens=max_new_tokens, images=context.images
        )
        messages.append(Message("assistant", completion.text))
        action = parse_action(completion.text)
        if isinstance(action, Answer):
            return RollOut(action.text, answer_score(point, action.text), turn + 1)
        executed, _ = await execute_action(toolbox, action, context)
        assert executed is not None  # only an answer has no observation
        observation = executed
    return RollOut(None, 0.0, turns)
