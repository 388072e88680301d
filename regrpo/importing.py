"""Objects named by import path (``"package.module:attribute"``), for the command line and task files.

A task file names its verifier this way and ``regrpo serve`` / ``trainer`` / ``eval`` name a user's
tools (``--tool``), so a process the user did not write can run the user's code. Every way the
name can be wrong is an error of the caller's chosen type that says which part was wrong.
"""

from __future__ import annotations

import importlib
from typing import Any

from regrpo.errors import InputError

__all__ = ["import_named"]


def import_named(name: str, what: str, error: type[InputError] = InputError) -> Any:
    """The object ``"package.module:attribute"`` names, or ``error`` saying why not.

    Args:
        name: The import path; the attribute may be dotted (``module:Class.method``).
        what: What the object is for, in the message (``"verifier"``, ``"tool"``).
        error: The :class:`~regrpo.errors.InputError` subclass to raise.
    """
    module_name, sep, attribute = name.partition(":")
    if not sep or not module_name or not attribute:
        raise error(f"{what} {name!r} must be 'package.module:name'")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"cannot import {what} module {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise error(f"{what} {name!r}: module {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    return found
