"""``Toolbox.call``: every way a call can go wrong comes back as a typed outcome, never an exception."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from regrpo.errors import ErrorType, ToolDefinitionError
from regrpo.tools import (
    FunctionTool,
    ImageStore,
    Toolbox,
    ToolContext,
    ToolError,
    ToolOutcome,
    TransientToolError,
    tool,
)


def _call(toolbox: Toolbox, name: str, arguments: Any, images: ImageStore | None = None) -> ToolOutcome:
    context = ToolContext(images=images if images is not None else ImageStore())
    return asyncio.run(toolbox.call(name, arguments, context))


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


def test_a_valid_call_returns_the_output() -> None:
    outcome = _call(Toolbox([add]), "add", {"a": 2, "b": "3"})
    assert outcome == ToolOutcome(ok=True, output=5, attempts=1, seconds=outcome.seconds)
    assert outcome.seconds > 0


def test_an_unknown_tool_lists_the_tools_there_are() -> None:
    @tool
    def subtract(a: int, b: int) -> int:
        """Subtract."""
        return a - b

    outcome = _call(Toolbox([add, subtract]), "multiply", {"a": 1, "b": 2})
    assert not outcome.ok
    assert outcome.error_type is ErrorType.UNKNOWN_TOOL
    assert outcome.message == "unknown tool 'multiply'; available tools: add, subtract"
    assert outcome.attempts == 0


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"a": 1}, "b: Field required"),
        ({"a": 1, "b": 2, "c": 3}, "c: Extra inputs are not permitted"),
        ({"a": "one", "b": 2}, "a: Input should be a valid integer"),
        ("a=1, b=2", "arguments must be a JSON object"),
    ],
)
def test_invalid_arguments_are_arg_invalid_and_the_tool_never_runs(arguments: Any, says: str) -> None:
    ran: list[tuple[int, int]] = []

    @tool
    def record(a: int, b: int) -> int:
        """Record a call."""
        ran.append((a, b))
        return 0

    outcome = _call(Toolbox([record]), "record", arguments)
    assert not outcome.ok
    assert outcome.error_type is ErrorType.ARG_INVALID
    assert says in outcome.message
    assert outcome.attempts == 0
    assert ran == []


def _flaky(failures: int) -> tuple[FunctionTool, list[int]]:
    """A tool that raises TransientToolError on its first ``failures`` calls; the list counts calls."""
    calls: list[int] = []

    @tool
    def fetch() -> str:
        """Fetch something over a flaky network."""
        calls.append(len(calls))
        if len(calls) <= failures:
            raise TransientToolError(f"connection reset (call {len(calls)})")
        return "payload"

    return fetch, calls


def test_a_transient_error_is_retried_until_the_call_succeeds() -> None:
    fetch, calls = _flaky(failures=2)
    outcome = _call(Toolbox([fetch], max_attempts=3), "fetch", {})
    assert outcome.ok, outcome.message
    assert outcome.output == "payload"
    assert outcome.attempts == 3
    assert len(calls) == 3


def test_a_transient_error_that_persists_fails_after_max_attempts() -> None:
    fetch, calls = _flaky(failures=100)
    outcome = _call(Toolbox([fetch], max_attempts=2), "fetch", {})
    assert not outcome.ok
    assert outcome.error_type is ErrorType.TOOL_CRASH
    assert outcome.message == "connection reset (call 2)"  # the last attempt's error
    assert outcome.attempts == 2
    assert len(calls) == 2


def test_max_attempts_one_means_no_retry() -> None:
    fetch, calls = _flaky(failures=1)
    outcome = _call(Toolbox([fetch], max_attempts=1), "fetch", {})
    assert not outcome.ok and outcome.attempts == 1 and len(calls) == 1


def test_a_plain_exception_is_a_crash_and_is_not_retried() -> None:
    calls: list[int] = []

    @tool
    def divide(a: float, b: float) -> float:
        """Divide, badly."""
        calls.append(1)
        if b == 0:
            raise ValueError("b must not be zero")
        return a / b

    outcome = _call(Toolbox([divide], max_attempts=3), "divide", {"a": 1, "b": 0})
    assert not outcome.ok
    assert outcome.error_type is ErrorType.TOOL_CRASH
    assert outcome.message == "divide failed: ValueError: b must not be zero"
    assert outcome.attempts == 1
    assert calls == [1]


def test_a_tool_error_keeps_its_kind_and_message() -> None:
    @tool
    def locate(label: str) -> list[int]:
        """Find an object."""
        raise ToolError(f"no {label} in the image; the crop shows only sky", ErrorType.GROUNDING_DRIFT)

    outcome = _call(Toolbox([locate]), "locate", {"label": "dog"})
    assert not outcome.ok
    assert outcome.error_type is ErrorType.GROUNDING_DRIFT
    assert outcome.message == "no dog in the image; the crop shows only sky"
    assert outcome.attempts == 1  # a ToolError is the model's problem: retrying would not change it


async def _call_then_release(toolbox: Toolbox, name: str, release: threading.Event) -> ToolOutcome:
    """Call, then free the tool's abandoned thread (before ``asyncio.run`` shuts the loop down)."""
    try:
        return await toolbox.call(name, {}, ToolContext(images=ImageStore()))
    finally:
        release.set()


def test_a_tool_past_its_deadline_times_out() -> None:
    release = threading.Event()
    entered = threading.Event()

    @tool(timeout_s=0.2)
    def stuck() -> str:
        """Wait for a signal that comes too late."""
        entered.set()
        release.wait()
        return "late"

    outcome = asyncio.run(_call_then_release(Toolbox([stuck]), "stuck", release))
    assert entered.is_set()
    assert not outcome.ok
    assert outcome.error_type is ErrorType.TIMEOUT
    assert outcome.message == "stuck did not finish within 0.2 s"
    assert outcome.output is None
    assert 0.2 <= outcome.seconds < 5


def test_the_toolbox_default_deadline_applies_to_tools_without_one() -> None:
    release = threading.Event()

    @tool
    def slow() -> int:
        """Slow."""
        release.wait()
        return 1

    outcome = asyncio.run(_call_then_release(Toolbox([slow], default_timeout_s=0.1), "slow", release))
    assert outcome.error_type is ErrorType.TIMEOUT
    assert outcome.message == "slow did not finish within 0.1 s"


def test_a_tool_stuck_for_good_does_not_hang_the_caller() -> None:
    """The abandoned thread must not be joined when ``asyncio.run`` shuts its loop down."""
    release = threading.Event()
    watchdog = threading.Timer(10, release.set)  # frees the thread should the runtime wait for it
    watchdog.start()

    @tool(timeout_s=0.1)
    def stuck_for_good() -> str:
        """Never returns while the test runs."""
        release.wait()
        return "never seen"

    try:
        outcome = _call(Toolbox([stuck_for_good]), "stuck_for_good", {})
        # Had asyncio.run joined the tool's thread, only the watchdog could have let it return.
        assert not release.is_set()
        assert outcome.error_type is ErrorType.TIMEOUT
    finally:
        release.set()
        watchdog.cancel()


@pytest.mark.parametrize(
    ("value", "says"),
    [(object(), "object is not JSON serialisable"), (float("nan"), "Out of range float")],
)
def test_a_result_that_is_not_json_is_a_crash(value: Any, says: str) -> None:
    @tool
    def weird() -> Any:
        """Return something a model cannot read."""
        return value

    outcome = _call(Toolbox([weird]), "weird", {})
    assert not outcome.ok
    assert outcome.error_type is ErrorType.TOOL_CRASH
    assert outcome.message.startswith("weird returned a non-JSON value: ")
    assert says in outcome.message
    assert outcome.output is None


def test_numpy_and_tuples_in_a_result_become_plain_json_values() -> None:
    @tool
    def stats() -> dict[str, Any]:
        """Numbers as numpy gives them."""
        values = np.array([[1, 2], [3, 4]], dtype=np.int64)
        return {"sum": values.sum(), "mean": np.float32(2.5), "rows": values, "shape": values.shape}

    outcome = _call(Toolbox([stats]), "stats", {})
    assert outcome.ok, outcome.message
    assert outcome.output == {"sum": 10, "mean": 2.5, "rows": [[1, 2], [3, 4]], "shape": [2, 2]}
    assert type(outcome.output["sum"]) is int
    assert type(outcome.output["mean"]) is float
    assert type(outcome.output["rows"][0][0]) is int


def test_new_images_lists_the_ids_the_call_added() -> None:
    @tool
    def tile(image: str, ctx: ToolContext) -> list[str]:
        """Split an image into its left and right halves."""
        source = ctx.images.get(image)
        half = source.shape[1] // 2
        left, right = source[:, :half], source[:, half:]
        return [ctx.images.add(left, source="tile"), ctx.images.add(right, source="tile")]

    images = ImageStore()
    images.add(np.zeros((4, 6, 3), np.uint8))
    outcome = _call(Toolbox([tile]), "tile", {"image": "img_0"}, images)
    assert outcome.ok, outcome.message
    assert outcome.new_images == ("img_1", "img_2")
    assert outcome.output == ["img_1", "img_2"]
    assert [(i.width, i.source) for i in images.infos()] == [(6, "user"), (3, "tile"), (3, "tile")]

    nothing_new = _call(Toolbox([tile]), "tile", {"image": "img_9"}, images)
    assert nothing_new.error_type is ErrorType.ARG_INVALID
    assert "available image ids: img_0, img_1, img_2" in nothing_new.message
    assert nothing_new.new_images == ()


def test_plain_functions_are_wrapped_as_tools() -> None:
    def greet(name: str, excited: bool = False) -> str:
        """Greet someone by name."""
        return f"hello {name}" + ("!" if excited else "")

    toolbox = Toolbox([greet, add])
    assert toolbox.names == ["greet", "add"]
    wrapped = toolbox.get("greet")
    assert isinstance(wrapped, FunctionTool)
    assert wrapped.description == "Greet someone by name."
    assert _call(toolbox, "greet", {"name": "Ada", "excited": "true"}).output == "hello Ada!"


def test_a_plain_function_that_cannot_be_a_tool_fails_when_the_toolbox_is_built() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        """No hints."""
        return x

    with pytest.raises(ToolDefinitionError, match="parameter 'x' needs a type hint"):
        Toolbox([untyped])


def test_two_tools_with_one_name_are_refused() -> None:
    @tool(name="add")
    def other_add(a: int, b: int) -> int:
        """Also add."""
        return a + b

    with pytest.raises(ToolDefinitionError, match="two tools are named 'add'"):
        Toolbox([add, other_add])


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: Toolbox([add], default_timeout_s=0), "default_timeout_s must be positive"),
        (lambda: Toolbox([add], max_attempts=0), "max_attempts must be at least 1"),
    ],
)
def test_a_bad_toolbox_setting_is_refused(make: Callable[[], Toolbox], says: str) -> None:
    with pytest.raises(ToolDefinitionError, match=says):
        make()


def test_concurrent_calls_run_in_parallel_threads() -> None:
    """Two calls that each wait for the other can only both finish if they run at the same time."""
    barrier = threading.Barrier(2, timeout=5)

    @tool
    def meet(who: str) -> str:
        """Wait for the other caller."""
        barrier.wait()
        return who

    toolbox = Toolbox([meet])

    async def both() -> list[ToolOutcome]:
        context = ToolContext(images=ImageStore())
        return list(
            await asyncio.gather(
                toolbox.call("meet", {"who": "a"}, context), toolbox.call("meet", {"who": "b"}, context)
            )
        )

    assert [o.output for o in asyncio.run(both())] == ["a", "b"]
