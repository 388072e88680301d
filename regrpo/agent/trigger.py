"""When to ask for a reflection: ReGRPO's deterministic trigger (``inference/trigger.py`` in its code).

    g_i = 1{ToolError ∨ EmptyObs ∨ (i > 1 ∧ u_i < κ_i)},  u_i = exp(mean log π(action tokens of step i)),
    κ_i = mean(u_j, j < i)

:func:`trigger_reason` is the pure rule; :class:`ReflectionTrigger` is the thin stateful wrapper that
keeps the episode's running confidences and says *why* it fired. At most one reflection is asked per
step, and none after a successful step (its action ran and returned something).

Where we depart from the reference: the low-confidence term is **off unless asked for**
(``use_confidence=True``, ``Agent(confidence_trigger=True)``). It fires after steps that worked,
which is exactly where the training data never shows a reflection request and where ReGRPO's reward
penalises reflecting; the reviewed live episodes answered it with nonsense (docs/decisions.md).
By default a reflection follows only a failed step (the tool raised or timed out, the arguments were
invalid, the tool is unknown, the turn did not parse) or an empty observation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["ReflectionTrigger", "is_empty_output", "sequence_confidence", "trigger_reason"]


def is_empty_output(output: Any) -> bool:
    """EmptyObs in the reference: ``""``, ``[]``, ``{}``, ``None`` (or only whitespace).

    A dict counts as empty when every value is empty, recursively, because tools report "nothing
    found" in their usual shape: ``{"text": "", "lines": []}`` (ocr), ``{"objects": []}`` (detect),
    ``{"results": []}`` (search). Numbers and booleans are content: ``{"count": 0}`` is an answer.
    """
    if output is None:
        return True
    if isinstance(output, str):
        return not output.strip()
    if isinstance(output, dict):
        return all(is_empty_output(value) for value in output.values())
    if isinstance(output, (list, tuple)):
        return not output
    return False


def sequence_confidence(logprobs: Sequence[float]) -> float | None:
    """u = exp(mean log-prob) of a completion's tokens; ``None`` when the engine gave no log-probs."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


def trigger_reason(
    *, failed: bool, empty: bool, confidence: float | None, running_mean: float | None
) -> str | None:
    """Why step *i* needs a reflection, or ``None``. ``running_mean`` is κ_i (``None`` for the first step)."""
    if failed:
        return "tool_error"
    if empty:
        return "empty_observation"
    if confidence is not None and running_mean is not None and confidence < running_mean:
        return "low_confidence"
    return None


class ReflectionTrigger:
    """Per-episode trigger state: the confidences of the steps so far.

    ``use_confidence`` turns on the low-confidence term (off by default, see the module docstring).
    """

    def __init__(self, *, use_confidence: bool = False) -> None:
        self.use_confidence = use_confidence
        self.confidences: list[float] = []
        self.last_running_mean: float | None = None
        """κ at the last decision, for the message that explains a low-confidence reflection."""

    def decide(self, *, failed: bool, empty: bool, confidence: float | None) -> str | None:
        """Record this step's confidence and return the reason to reflect, if any."""
        running_mean = sum(self.confidences) / len(self.confidences) if self.confidences else None
        self.last_running_mean = running_mean
        reason = trigger_reason(
            failed=failed,
            empty=empty,
            confidence=confidence if self.use_confidence else None,
            running_mean=running_mean,
        )
        if confidence is not None:
            self.confidences.append(confidence)
        return reason
