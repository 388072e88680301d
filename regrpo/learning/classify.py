"""The failure classifier: which :class:`~regrpo.errors.ErrorType` an executed action's observation shows.

Its verdict is the label of every RoT example (the ``error_type`` a reflection must name) and the
target of ReGRPO's diagnosis reward, so it looks only at what really happened — the action and the
real observation — never at how a near-miss was made. The rules, first match wins:

1. the turn was :class:`~regrpo.traces.schema.Unparseable` → ``UnparseableAction``;
2. no observation (an ``<answer>``: nothing ran) → ``None``;
3. the observation failed → its own ``error_type`` (the tool or the toolbox chose it where it knew
   best: ``UnknownTool``, ``ArgInvalid``, ``GroundingDrift`` for a box off the image, ``ToolMismatch``
   for a detector label it lacks, ``Timeout``, ``ToolCrash``); ``ToolCrash`` if it names none;
4. the call ran but its output is empty (:func:`~regrpo.agent.trigger.is_empty_output`, the same
   test the runtime's trigger uses) → ``GroundingDrift`` when the call was aimed at a region
   (a non-null ``box`` or ``region`` argument: it looked in the wrong place), else ``InfoInsufficient``;
5. otherwise the action succeeded → ``None``.
"""

from __future__ import annotations

from regrpo.agent.trigger import is_empty_output
from regrpo.errors import ErrorType
from regrpo.traces.schema import Action, Observation, ToolCall, Unparseable

__all__ = ["REGION_ARGUMENTS", "classify_failure"]

REGION_ARGUMENTS = ("box", "region")
"""Arguments that aim a call at part of an image; an empty result from such a call is GroundingDrift."""


def classify_failure(action: Action, observation: Observation | None) -> ErrorType | None:
    """The error type the observation of ``action`` shows, or ``None`` when the action succeeded."""
    if isinstance(action, Unparseable):
        return ErrorType.UNPARSEABLE_ACTION
    if observation is None:
        return None
    if not observation.ok:
        return observation.error_type or ErrorType.TOOL_CRASH
    if is_empty_output(observation.output):
        aimed = isinstance(action, ToolCall) and any(
            action.arguments.get(name) is not None for name in REGION_ARGUMENTS
        )
        return ErrorType.GROUNDING_DRIFT if aimed else ErrorType.INFO_INSUFFICIENT
    return None
