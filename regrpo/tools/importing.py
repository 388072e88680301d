"""A user's tools named by import path, for processes the user did not write (``--tool``).

``regrpo serve --tool myapp.tools:brightness`` runs the agent with the app's own tool, and
``regrpo trainer`` / ``regrpo eval`` must be given the same ones: a trainer replays a traffic
episode's calls and executes its continuations with the tools the agent ran with, and its gate
evaluates with them. A name may point at a :class:`~regrpo.tools.Tool`, a typed function (wrapped
with ``@tool``) or a list/tuple of either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from regrpo.errors import ToolDefinitionError
from regrpo.importing import import_named
from regrpo.tools.base import FunctionTool, Tool

__all__ = ["import_tools", "toolbox_from_names"]


def import_tools(name: str) -> list[Tool]:
    """The tools ``"package.module:name"`` names (module docstring), or a ``ToolDefinitionError``."""
    found = import_named(name, "tool", ToolDefinitionError)
    items: list[Any] = list(found) if isinstance(found, (list, tuple)) else [found]
    tools: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            tools.append(item)
        elif callable(item) and not isinstance(item, type):
            tools.append(FunctionTool(item))
        else:
            raise ToolDefinitionError(
                f"tool {name!r} names a {type(item).__name__}; "
                "name a Tool, a typed function or a list of them"
            )
    if not tools:
        raise ToolDefinitionError(f"tool {name!r} names an empty list; name at least one tool")
    return tools


def toolbox_from_names(names: Iterable[str], *, builtin: bool = True) -> list[Tool] | None:
    """The built-in tools (when ``builtin``) followed by every tool the import paths name.

    ``None`` when that is exactly the built-in toolbox (no names and ``builtin``): callers then keep
    their default, so reports and cache keys stay what they were.
    """
    named = [tool for name in names for tool in import_tools(name)]
    if not named and builtin:
        return None
    if not named:
        raise ToolDefinitionError("--no-builtin-tools needs at least one --tool: the agent would have none")
    if not builtin:
        return named
    from regrpo.tools import default_tools

    return [*default_tools(), *named]
