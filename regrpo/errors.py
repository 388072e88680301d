"""Errors: the model's mistakes (a taxonomy) and our users' mistakes (exceptions).

Two different things live here on purpose, because both are "errors" to a reader:

* :class:`ErrorType` classifies what went wrong with an *action the model took*. It is data: it lands
  in observations, reflections and traces, and the agent loop never raises it.
* :class:`RegrpoError` and its subclasses are raised to *the caller* for bad input or a broken set-up.
  Each dependency's exceptions are translated once, at the boundary that calls it
  (``raise ImageError(...) from exc``), so a user never reads a traceback from inside OpenCV or torch.

The exception tree::

    RegrpoError                       base of everything this package raises
    ├── InputError (ValueError)       the caller handed us something unusable
    │   ├── TaskError                 empty or non-string task
    │   ├── ImageError                image missing, unreadable or of an unsupported type
    │   │   └── ImageURLError         an image URL refused by the server (server/image_urls.py)
    │   ├── ToolDefinitionError       a user's @tool function cannot be turned into a tool
    │   ├── SuiteError                a task suite cannot be generated or loaded (tasks/suite.py)
    │   ├── GtaFormatError            a GTA dataset.json is missing or malformed (tasks/gta.py)
    │   └── ReplayError               a branch point's state cannot be rebuilt (learning/replay.py)
    ├── ModelError                    a policy could not be built or could not generate
    │   └── ModelNotFoundError        unknown model name or path, missing weight package
    ├── AdapterError                  a LoRA adapter could not be loaded, found or activated
    └── TraceStoreError               the trace store cannot be opened or read
        └── TraceNotFoundError        no episode with that trace id

The subclasses defined next to the code that raises them are drawn here so the tree is
complete in one place. Every exception carries a message that says what was wrong and what to do about it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "TRANSIENT_ERROR_TYPES",
    "AdapterError",
    "ErrorType",
    "ImageError",
    "InputError",
    "ModelError",
    "ModelNotFoundError",
    "ModelUnreachableError",
    "NothingToLearn",
    "RegrpoError",
    "TaskError",
    "ToolDefinitionError",
    "TraceNotFoundError",
    "TraceStoreError",
]


class ErrorType(StrEnum):
    """What went wrong with a model's action.

    The first four are ReGRPO's taxonomy (``regrpo/data/perturb.py`` in the public code, see
    ``shared/REFERENCES.md`` §2.2); the last four are operational failures a runtime meets that the
    paper's offline data never shows.
    """

    GROUNDING_DRIFT = "GroundingDrift"
    """The action referred to the wrong region, object or image (a crop off target, an empty region)."""
    TOOL_MISMATCH = "ToolMismatch"
    """A real tool, but not one that can do what the step needs."""
    ARG_INVALID = "ArgInvalid"
    """An argument is missing, mistyped or out of range (failed schema validation or a tool's check)."""
    INFO_INSUFFICIENT = "InfoInsufficient"
    """The call ran but returned nothing useful (an empty observation) or lacked needed context."""
    UNPARSEABLE_ACTION = "UnparseableAction"
    """The model's turn held neither exactly one well-formed tool call nor an answer."""
    UNKNOWN_TOOL = "UnknownTool"
    """The named tool does not exist in this agent's toolbox."""
    TOOL_CRASH = "ToolCrash"
    """The tool raised an unexpected exception (its bug, or a transient error that outlived retries)."""
    TIMEOUT = "Timeout"
    """The tool did not finish within its time limit."""


TRANSIENT_ERROR_TYPES = (ErrorType.TIMEOUT, ErrorType.TOOL_CRASH)
"""Failures that running the same call again can fix (the transient faults the data engine teaches)."""


class RegrpoError(Exception):
    """Base class of every exception regrpo raises."""


class InputError(RegrpoError, ValueError):
    """The caller handed us something we cannot use; the message says what and how to fix it."""


class TaskError(InputError):
    """The task is empty or not a string."""


class ImageError(InputError):
    """An image is missing, unreadable, or of a type we do not accept."""


class ToolDefinitionError(InputError):
    """A function cannot be made into a tool (missing type hints, unsupported parameter kinds)."""


class ModelError(RegrpoError):
    """A policy could not be built or failed to generate."""


class ModelUnreachableError(ModelError):
    """A model server could not be reached at all (connection refused or timed out, after retries)."""


class ModelNotFoundError(ModelError):
    """The model name or path does not resolve to weights on this machine."""


class NothingToLearn(RegrpoError):
    """A training round's episodes gave no training data (no failure there can be replayed and scored)."""


class AdapterError(RegrpoError):
    """A LoRA adapter could not be loaded, found or activated."""


class TraceStoreError(RegrpoError):
    """The trace store could not be opened, written or read."""


class TraceNotFoundError(TraceStoreError, KeyError):
    """No episode with the given trace id exists in the store."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""
