"""regrpo: a runtime and SDK for tool-using (vision-)language agents that learn from their own failures.

Quick start::

    from regrpo import Agent
    result = Agent().run("What is 17*23?")
    print(result.answer, result.trace_id)
"""

from regrpo.agent import Agent, OpenAIPolicy, Policy, Result, ScriptedPolicy
from regrpo.errors import ErrorType, RegrpoError
from regrpo.tools import Tool, ToolContext, ToolError, tool
from regrpo.traces import Reflection, Step, TraceStore, Usage

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "ErrorType",
    "LocalPolicy",
    "OpenAIPolicy",
    "Policy",
    "Reflection",
    "RegrpoError",
    "Result",
    "ScriptedPolicy",
    "Step",
    "Tool",
    "ToolContext",
    "ToolError",
    "TraceStore",
    "Usage",
    "VisionPolicy",
    "__version__",
    "tool",
]


def __getattr__(name: str) -> object:
    # the in-process engines import torch and transformers (seconds): load them only when asked for
    if name == "LocalPolicy":
        from regrpo.agent.local import LocalPolicy

        return LocalPolicy
    if name == "VisionPolicy":
        from regrpo.agent.vision import VisionPolicy

        return VisionPolicy
    raise AttributeError(f"module 'regrpo' has no attribute {name!r}")
