"""``Toolbox``: the tools one agent may call, and the one safe way to call them.

A call goes: look the tool up → validate the arguments against its schema → run it in its own
daemon thread under a deadline, retrying only :class:`TransientToolError` (tenacity, exponential back-off)
→ check the result is JSON → report a :class:`ToolOutcome`. Every failure on the way becomes an
outcome with an :class:`~regrpo.errors.ErrorType`, never an exception: a bad call is the model's
mistake, and the loop shows it to the model. A tool thread that overruns its deadline is abandoned,
not killed (Python cannot kill threads); the outcome says ``Timeout``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenacity

from regrpo.errors import ErrorType, ToolDefinitionError
from regrpo.tools.base import FunctionTool, Tool, ToolContext
from regrpo.tools.errors import ToolError, TransientToolError

__all__ = ["ToolOutcome", "Toolbox"]


@dataclass(frozen=True)
class ToolOutcome:
    """What one tool call did."""

    ok: bool
    output: Any = None
    """The tool's JSON-serialisable result (``None`` when the call failed)."""
    error_type: ErrorType | None = None
    message: str = ""
    """The failure message shown to the model; empty on success."""
    new_images: tuple[str, ...] = ()
    """Ids of images the call added to the episode's store."""
    attempts: int = 0
    seconds: float = 0.0


def _to_json_value(value: Any) -> Any:
    """Round-trip through JSON so what we log is exactly what the model saw; numpy becomes Python."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.loads(json.dumps(value, default=default, allow_nan=False))


async def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Await ``function(*args)`` run on a new daemon thread, which a deadline can abandon.

    Not ``asyncio.to_thread``: the loop's default executor is joined when ``asyncio.run`` ends and at
    interpreter exit, so one tool stuck past its deadline would hang the whole episode and the process.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    run = contextvars.copy_context().run

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # abandoned: the deadline passed or the call was cancelled
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        result, error = None, None
        try:
            result = run(function, *args)
        except BaseException as exc:  # handed to the awaiting coroutine, as to_thread does
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed; nobody waits for this result any more
            pass

    threading.Thread(target=target, name="regrpo-tool", daemon=True).start()
    return await future


@dataclass
class Toolbox:
    """A name → tool table with a safe ``call``.

    Args:
        tools: ``Tool`` objects or plain typed functions (wrapped with ``@tool``).
        default_timeout_s: Deadline for tools that set none of their own.
        max_attempts: Tries for a call that keeps raising ``TransientToolError`` (1 = no retry).
    """

    tools: Iterable[Tool | Callable[..., Any]]
    default_timeout_s: float = 30.0
    max_attempts: int = 3
    _by_name: dict[str, Tool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.default_timeout_s <= 0:
            raise ToolDefinitionError(f"default_timeout_s must be positive, got {self.default_timeout_s}")
        if self.max_attempts < 1:
            raise ToolDefinitionError(f"max_attempts must be at least 1, got {self.max_attempts}")
        self._by_name = {}
        for item in self.tools:
            resolved: Tool = item if isinstance(item, Tool) else FunctionTool(item)
            if resolved.name in self._by_name:
                raise ToolDefinitionError(f"two tools are named {resolved.name!r}; tool names must be unique")
            self._by_name[resolved.name] = resolved

    @property
    def members(self) -> list[Tool]:
        """The tools, resolved and in registration order."""
        return list(self._by_name.values())

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> Tool | None:
        return self._by_name.get(name)

    async def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolOutcome:
        """Validate and run one call; every failure comes back as an outcome, not an exception."""
        started = time.perf_counter()
        tool = self._by_name.get(name)
        if tool is None:
            message = f"unknown tool {name!r}; available tools: {', '.join(self._by_name)}"
            return ToolOutcome(False, error_type=ErrorType.UNKNOWN_TOOL, message=message)
        try:
            valid = tool.validate(arguments)
        except ToolError as exc:
            return ToolOutcome(
                False, error_type=exc.kind, message=exc.message, seconds=time.perf_counter() - started
            )
        images_before = len(context.images)
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            return await _in_daemon_thread(tool.invoke, valid, context)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(TransientToolError),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        )
        timeout_s = tool.timeout_s or self.default_timeout_s
        error_type, message, output = None, "", None
        raw: Any = None
        try:
            raw = await asyncio.wait_for(retrying(attempt), timeout_s)
        except TimeoutError:
            error_type, message = ErrorType.TIMEOUT, f"{name} did not finish within {timeout_s:g} s"
        except ToolError as exc:
            error_type, message = exc.kind, exc.message
        except Exception as exc:  # a tool's own bug: the model sees it, the loop goes on
            error_type, message = ErrorType.TOOL_CRASH, f"{name} failed: {type(exc).__name__}: {exc}"
        else:
            try:
                output = _to_json_value(raw)
            except (TypeError, ValueError) as exc:
                error_type, message = ErrorType.TOOL_CRASH, f"{name} returned a non-JSON value: {exc}"
        new_images = tuple(info.image_id for info in context.images.infos()[images_before:])
        return ToolOutcome(
            ok=error_type is None,
            output=output,
            error_type=error_type,
            message=message,
            new_images=new_images,
            attempts=attempts,
            seconds=time.perf_counter() - started,
        )
