"""One turn's runtime mechanics, shared by the agent loop and anything that must act exactly like it.

:class:`~regrpo.agent.Agent` runs these inside its traced loop; the learning loop's roll-outs
(:mod:`regrpo.learning.outcome`) run them on a private copy of a branch point's state, so a
continuation is carried to its answer with the observations, reflection requests and tool
semantics the runtime would show, not a second rendering of them.

* :func:`generate_turn`: one model turn (``agenerate`` where the engine has it, else ``generate``
  in a worker thread, so concurrent turns can share a batched engine's forward passes).
* :func:`execute_action`: run a tool call (or record an unparseable turn) into an :class:`Observation`.
* :func:`observation_of`: the observation the runtime records for a toolbox outcome.
* :func:`user_turn`: the next user message: the observation, plus the reflection request when the
  trigger asks for one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import msgspec

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.image_parts import chat_for
from regrpo.agent.policy import Policy
from regrpo.agent.prompts import observation_text, reflection_request
from regrpo.agent.trigger import ReflectionTrigger, is_empty_output
from regrpo.errors import ErrorType
from regrpo.tools import ImageInfo, ImageStore, Toolbox, ToolContext, ToolOutcome
from regrpo.traces.schema import Action, Completion, Message, Observation, ToolCall, Unparseable

__all__ = ["execute_action", "generate_turn", "observation_of", "user_turn"]


async def generate_turn(
    policy: Policy,
    messages: Sequence[Message],
    *,
    temperature: float,
    max_new_tokens: int,
    images: ImageStore | None = None,
) -> Completion:
    """One model turn: a single completion of the chat, stopped at the end of its action; an engine
    that takes images is shown each message's images from ``images`` (:func:`chat_for`)."""
    chat = chat_for(policy, messages, images)
    options: dict[str, Any] = {
        "n": 1,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "stop": ACTION_STOP_STRINGS,
    }
    agenerate = getattr(policy, "agenerate", None)
    if agenerate is not None:
        completions = await agenerate(chat, **options)
    else:
        completions = await asyncio.to_thread(functools.partial(policy.generate, chat, **options))
    return completions[0]


def observation_of(outcome: ToolOutcome) -> Observation:
    """The :class:`Observation` the runtime records for ``outcome`` (same fields, same shown text)."""
    return _observation(
        ok=outcome.ok,
        output=outcome.output,
        error_type=outcome.error_type,
        error_message=outcome.message,
        new_images=list(outcome.new_images),
        attempts=outcome.attempts,
    )


def _observation(**fields: Any) -> Observation:
    """An observation with the text the model will be shown filled in."""
    draft = Observation(content="", **fields)
    return msgspec.structs.replace(draft, content=observation_text(draft))


async def execute_action(
    toolbox: Toolbox, action: Action, context: ToolContext
) -> tuple[Observation | None, float]:
    """Run a tool call (or record an unparseable turn): ``(observation, tool seconds)``; ``(None, 0)``
    for an answer."""
    if isinstance(action, Unparseable):
        observation = _observation(
            ok=False, error_type=ErrorType.UNPARSEABLE_ACTION, error_message=action.reason
        )
        return observation, 0.0
    if isinstance(action, ToolCall):
        outcome = await toolbox.call(action.name, action.arguments, context)
        return observation_of(outcome), outcome.seconds
    return None, 0.0


def user_turn(
    observation: Observation,
    action: Action,
    trigger: ReflectionTrigger,
    images: Sequence[ImageInfo],
    *,
    reflect: bool = True,
    confidence: float | None = None,
) -> tuple[str, str | None]:
    """``(the next user message, why the next turn must reflect or None)`` after ``observation``.

    ``trigger`` decides (and records ``confidence``); with ``reflect`` off the reason is still
    returned but no request is shown (the plain retry loop).
    """
    reason = trigger.decide(
        failed=not observation.ok,
        empty=observation.ok and is_empty_output(observation.output),
        confidence=confidence,
    )
    text = observation.content
    if reason and reflect:
        text += "\n" + reflection_request(
            reason,
            action,
            observation,
            images,
            confidence=confidence,
            running_mean=trigger.last_running_mean,
        )
    return text, reason
