"""Fixtures of the agent-server tests."""

from __future__ import annotations

import pytest
from server_helpers import crop_then_report

from regrpo import Agent, ScriptedPolicy
from regrpo.tools.calculator import calculator
from regrpo.tools.image_ops import crop


@pytest.fixture
def scripted_agent(store):
    """An agent whose scripted policy crops img_0 and reports the crop's size (any number of requests)."""
    return Agent(ScriptedPolicy([crop_then_report], cycle=True), tools=[calculator, crop], store=store)
