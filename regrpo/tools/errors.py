"""Exceptions a tool raises to report a failure the model should see (not a bug of ours)."""

from __future__ import annotations

from regrpo.errors import ErrorType

__all__ = ["ToolError", "TransientToolError"]


class ToolError(Exception):
    """An expected tool failure that the model should see and can fix.

    Args:
        message: What went wrong, phrased for the model (it is quoted back in the observation).
        kind: The taxonomy entry that fits; ``ArgInvalid`` unless the tool knows better.
    """

    def __init__(self, message: str, kind: ErrorType = ErrorType.ARG_INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class TransientToolError(ToolError):
    """A failure that may pass if retried (connection reset, HTTP 429/5xx); the runner retries it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorType.TOOL_CRASH)
