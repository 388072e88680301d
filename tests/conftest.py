"""Shared fixtures. The real SmolLM2 model is loaded once per test session (``smollm``)."""

from __future__ import annotations

import pytest

from regrpo.traces import TraceStore


@pytest.fixture(scope="session")
def smollm():
    """The real default policy (SmolLM2-135M-Instruct from the offline GGUF, cached as safetensors)."""
    from regrpo.agent.local import LocalPolicy

    return LocalPolicy()


@pytest.fixture
def store(tmp_path):
    with TraceStore(tmp_path / "traces.sqlite") as trace_store:
        yield trace_store
