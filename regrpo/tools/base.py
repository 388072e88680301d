"""The ``Tool`` interface and the ``@tool`` decorator that turns a typed function into one.

A tool is a plain, typed, documented Python function. ``@tool`` reads its signature once and builds
a pydantic model of its arguments; that model gives the JSON Schema the model is prompted with and
validates the model's arguments before the function ever runs. A parameter annotated
:class:`ToolContext` is injected by the runtime (it carries the episode's image store) and hidden
from the schema.

Tools report an *expected* failure (an image id that does not exist, a box outside the image) by
raising :class:`ToolError` with the :class:`~regrpo.errors.ErrorType` that fits; the runtime shows it
to the model as an observation. :class:`TransientToolError` marks failures worth retrying (network,
5xx). Any other exception is recorded as ``ToolCrash``.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pydantic

from regrpo.errors import ToolDefinitionError
from regrpo.tools.errors import ToolError
from regrpo.tools.images import ImageStore

__all__ = ["FunctionTool", "Tool", "ToolContext", "tool"]


@dataclass(frozen=True)
class ToolContext:
    """What the runtime hands a tool besides its arguments."""

    images: ImageStore
    """The episode's images; tools read inputs with ``get`` and register outputs with ``add``."""
    episode_key: str = ""
    """Names the episode's inputs (the agent sets a digest of the task text and input images), so
    per-episode random choices such as injected faults differ between tasks yet repeat exactly when
    another method runs the same task. Empty where no episode is known."""


@runtime_checkable
class Tool(Protocol):
    """Anything with a name, a description, a JSON Schema and a way to validate and run arguments."""

    name: str
    description: str
    timeout_s: float | None
    """Seconds one call may take; ``None`` uses the agent's default."""

    def parameters_schema(self) -> dict[str, Any]:
        """JSON Schema (an ``object``) of the arguments."""
        ...

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Return the arguments coerced to their declared types, or raise ``ToolError(ArgInvalid)``."""
        ...

    def invoke(self, arguments: Mapping[str, Any], context: ToolContext) -> Any:
        """Run on already validated arguments and return a JSON-serialisable result."""
        ...


_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^\s{2,}(\w+)\s*(?:\([^)]*\))?:\s*(.+)$")


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary paragraph and per-argument descriptions."""
    doc = inspect.cleandoc(doc)
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    match = _ARGS_SECTION.search(doc)
    described: dict[str, str] = {}
    if match:
        arg_indent, last = 0, None
        for line in doc[match.end() :].splitlines():
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            if indent == 0:
                break  # the next section ("Returns:") ends the argument list
            arg = _ARG_LINE.match(line)
            if arg and (last is None or indent <= arg_indent):
                arg_indent, last = indent, arg.group(1)
                described[last] = arg.group(2).strip()
            elif last is not None and indent > arg_indent:
                described[last] += " " + line.strip()  # a Google-style continuation line
    return summary, described


class FunctionTool:
    """A :class:`Tool` made from a typed function; build it with :func:`tool`."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if not callable(function):
            raise ToolDefinitionError(f"@tool needs a function, got {type(function).__name__}")
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", ""))  # callables may have no name
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", self.name):
            raise ToolDefinitionError(
                f"tool name {self.name!r} is not an identifier; pass name='like_this' to @tool"
            )
        summary, described = _docstring_parts(function.__doc__ or "")
        self.description: str = description or summary
        if not self.description:
            raise ToolDefinitionError(
                f"tool {self.name!r} has no description: give the function a docstring "
                "or pass description=... to @tool"
            )
        if timeout_s is not None and timeout_s <= 0:
            raise ToolDefinitionError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._context_param, self._arguments_model = self._build_arguments_model(described)

    def _build_arguments_model(
        self, described: Mapping[str, str]
    ) -> tuple[str | None, type[pydantic.BaseModel]]:
        try:
            hints = typing.get_type_hints(self.function, include_extras=True)
        except Exception as exc:  # unresolvable forward references and the like
            raise ToolDefinitionError(f"cannot read the type hints of tool {self.name!r}: {exc}") from exc
        context_param: str | None = None
        fields: dict[str, Any] = {}
        for param in inspect.signature(self.function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: *args/**kwargs cannot be described to a model; name every parameter"
                )
            if param.name not in hints:
                raise ToolDefinitionError(f"tool {self.name!r}: parameter {param.name!r} needs a type hint")
            if hints[param.name] is ToolContext:
                context_param = param.name
                continue
            default = ... if param.default is param.empty else param.default
            field = pydantic.Field(default, description=described.get(param.name))
            fields[param.name] = (hints[param.name], field)
        config = pydantic.ConfigDict(extra="forbid")
        try:
            model = pydantic.create_model(f"{self.name}_arguments", __config__=config, **fields)
            model.model_json_schema()
        except Exception as exc:  # pydantic cannot describe some annotation
            raise ToolDefinitionError(f"tool {self.name!r} has an unsupported type hint: {exc}") from exc
        return context_param, model

    def parameters_schema(self) -> dict[str, Any]:
        schema = self._arguments_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(arguments, Mapping):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        try:
            parsed = self._arguments_model.model_validate(dict(arguments))
        except pydantic.ValidationError as exc:
            raise ToolError(_describe_validation_error(self.name, exc)) from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    def invoke(self, arguments: Mapping[str, Any], context: ToolContext) -> Any:
        kwargs = dict(arguments)
        if self._context_param:
            kwargs[self._context_param] = context
        return self.function(**kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in tests and notebooks)."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool(name={self.name!r})"


def _describe_validation_error(tool_name: str, exc: pydantic.ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        problems.append(f"{where}: {err['msg']}")
    return f"invalid arguments for {tool_name}: " + "; ".join(problems)


@typing.overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...
@typing.overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout_s: float | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a typed function into a :class:`Tool`; use as ``@tool`` or ``@tool(name=..., timeout_s=...)``.

    The docstring's first paragraph becomes the description and its ``Args:`` section the parameter
    descriptions; type hints (pydantic-compatible, ``Annotated[..., Field(...)]`` included) become the
    JSON Schema. Raises :class:`~regrpo.errors.ToolDefinitionError` if the function cannot be described.
    """

    def wrap(fn: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(fn, name=name, description=description, timeout_s=timeout_s)

    return wrap(function) if function is not None else wrap
