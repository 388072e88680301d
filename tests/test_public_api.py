"""The public API is a contract: every name in ``__all__`` exists and the documented imports work."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "regrpo",
    "regrpo.agent",
    "regrpo.tools",
    "regrpo.traces",
    "regrpo.errors",
    "regrpo.tasks",
    "regrpo.evaluation",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_exported_name_exists(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_documented_names():
    from regrpo import Agent, Result, VisionPolicy  # noqa: F401
    from regrpo.agent import LocalPolicy  # noqa: F401
    from regrpo.tools import tool  # noqa: F401
    from regrpo.traces import TraceStore

    for method in ("get", "episodes", "export_jsonl"):
        assert callable(getattr(TraceStore, method))
    assert {"answer", "status", "steps", "reflections", "usage", "trace_id"} <= set(
        Result.__dataclass_fields__
    )


def test_every_regrpo_error_is_a_regrpo_error():
    from regrpo import errors

    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, errors.RegrpoError)
