"""Wire models only the agent server has: the ``regrpo`` extension object, feedback, adapter admin.

The OpenAI shapes themselves live in :mod:`regrpo.openai_wire` (shared with the model server);
this module adds what an agent returns on top of them. A chat completion from ``regrpo serve`` is an
ordinary OpenAI response (clients that do not know the extension ignore it) with one extra
top-level field, ``regrpo``: an :class:`AgentExtension` (trace id, status, per-step summaries,
reflections and usage). Stream chunks carry ``regrpo`` too, with the one step that chunk reports.

Steps are *summaries* (action, observation text, reflection, timings), not the raw trace record:
the completion's token ids and log-probs stay in the trace store, where ``trace_id`` finds them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from regrpo.agent.loop import Result
from regrpo.learning.registry import AdapterMeta
from regrpo.traces import Answer, Reflection, Step, ToolCall, Usage

__all__ = [
    "AdapterInfo",
    "AdapterList",
    "AdapterState",
    "AgentExtension",
    "FeedbackRequest",
    "FeedbackResponse",
    "PromoteRequest",
    "StepSummary",
    "usage_dict",
]


class StepSummary(BaseModel):
    """One agent step as the client sees it."""

    index: int
    kind: str
    """``tool_call``, ``answer`` or ``unparseable``."""
    action: dict[str, Any]
    """The parsed action: ``{"type": "tool_call", "name", "arguments"}``, ``{"type": "answer", "text"}``,
    or ``{"type": "unparseable", "reason"}``."""
    observation: str | None = None
    """The text the model was shown after the action (``None`` for an answer)."""
    ok: bool | None = None
    error_type: str | None = None
    reflection: dict[str, Any] | None = None
    reflection_requested: str | None = None
    reflection_problem: str | None = None
    confidence: float | None = None
    adapter: str | None = None
    seconds: float = 0.0

    @classmethod
    def from_step(cls, step: Step) -> StepSummary:
        action = step.action
        kind = (
            "tool_call"
            if isinstance(action, ToolCall)
            else "answer"
            if isinstance(action, Answer)
            else "unparseable"
        )
        obs = step.observation
        return cls(
            index=step.index,
            kind=kind,
            action={"type": kind, **msgspec.to_builtins(action)},
            observation=obs.content if obs is not None else None,
            ok=obs.ok if obs is not None else None,
            error_type=str(obs.error_type) if obs is not None and obs.error_type is not None else None,
            reflection=_reflection(step.reflection),
            reflection_requested=step.reflection_requested,
            reflection_problem=step.reflection_problem,
            confidence=step.confidence,
            adapter=step.adapter,
            seconds=step.timings.total_s,
        )

    def describe(self) -> str:
        """One line for a human (the ``reasoning`` delta of a stream chunk)."""
        if self.kind == "tool_call":
            line = f"step {self.index}: {self.action['name']}({_compact(self.action['arguments'])})"
            line += f" -> {self.observation}" if self.observation is not None else ""
        elif self.kind == "answer":
            line = f"step {self.index}: answer {self.action['text']!r}"
        else:
            line = f"step {self.index}: unparseable action ({self.action['reason']})"
        if self.reflection is not None:
            line = f"reflection ({self.reflection['error_type']}): {self.reflection['fix_plan']}\n{line}"
        return line + "\n"


def _reflection(reflection: Reflection | None) -> dict[str, Any] | None:
    return msgspec.to_builtins(reflection) if reflection is not None else None


def _compact(arguments: dict[str, Any]) -> str:
    text = msgspec.json.encode(arguments).decode()
    return text if len(text) <= 200 else text[:197] + "..."


class AgentExtension(BaseModel):
    """The ``regrpo`` object of a chat completion (or, with ``step`` set, of one stream chunk)."""

    trace_id: str
    status: str | None = None
    """``answered``, ``max_steps`` or ``error`` once the episode has ended; ``None`` in step chunks."""
    steps: list[StepSummary] = Field(default_factory=list)
    reflections: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
    """The episode's counters (:class:`regrpo.traces.Usage`): steps, tool calls, reflections, seconds."""
    step: StepSummary | None = None
    """In a stream chunk: the step this chunk reports."""

    @classmethod
    def from_result(cls, result: Result, *, include_steps: bool = True) -> AgentExtension:
        return cls(
            trace_id=result.trace_id,
            status=result.status,
            steps=[StepSummary.from_step(s) for s in result.steps] if include_steps else [],
            reflections=[msgspec.to_builtins(r) for r in result.reflections],
            usage=usage_dict(result.usage),
        )


def usage_dict(usage: Usage) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(usage)
    return data


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a reward and/or the reference answer for an episode."""

    model_config = ConfigDict(extra="forbid")

    trace_id: str = Field(min_length=1, max_length=128)
    reward: float | None = Field(default=None, allow_inf_nan=False)
    answer: str | None = Field(default=None, max_length=100_000)


class FeedbackResponse(BaseModel):
    trace_id: str
    reward: float | None
    answer: str | None
    created_at: float
    episode_answer: str | None = None
    """What the agent answered (so a caller sending only ``answer`` sees what it was compared with)."""


class PromoteRequest(BaseModel):
    """``POST /v1/adapters/promote``."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^v\d{4,}$", description="A published version, e.g. 'v0003'.")


class AdapterInfo(BaseModel):
    version: str
    base_model: str
    created_at: float
    parent: str | None
    data_since: float | None
    data_until: float | None
    config: dict[str, Any]
    metrics: dict[str, float]
    notes: str
    live: bool

    @classmethod
    def from_meta(cls, meta: AdapterMeta, live: str | None) -> AdapterInfo:
        return cls(**msgspec.to_builtins(meta), live=meta.version == live)


class AdapterList(BaseModel):
    """``GET /v1/adapters``."""

    object: str = "list"
    live: str | None
    """The live version (``None`` = the base model)."""
    active: str | None
    """The adapter the agent's policy is using right now (equal to ``live`` unless a swap failed)."""
    data: list[AdapterInfo]


class AdapterState(BaseModel):
    """The answer to promote and rollback."""

    live: str | None
    active: str | None
    previous: list[str]
