"""The agent runtime: the loop (``Agent``), policies (model engines: ``LocalPolicy`` in-process,
``VisionPolicy`` in-process for image-text-to-text models, ``OpenAIPolicy`` over HTTP,
``ReplicaPolicy`` over several replicas, ``ScriptedPolicy`` for tests), action parsing and reflection."""

from regrpo.agent.loop import Agent, Result, answers_match
from regrpo.agent.model_files import DEFAULT_MODEL, OFFLINE_MODELS
from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.agent.policy import ChatMessage, Policy
from regrpo.agent.replicas import ReplicaPolicy
from regrpo.agent.scripted import ScriptedPolicy

__all__ = [
    "DEFAULT_MODEL",
    "OFFLINE_MODELS",
    "Agent",
    "ChatMessage",
    "LocalPolicy",
    "OpenAIPolicy",
    "Policy",
    "ReplicaPolicy",
    "Result",
    "ScriptedPolicy",
    "VisionPolicy",
    "answers_match",
]


def __getattr__(name: str) -> object:
    # the in-process engines import torch and transformers (seconds): load them only when asked for
    if name == "LocalPolicy":
        from regrpo.agent.local import LocalPolicy

        return LocalPolicy
    if name == "VisionPolicy":
        from regrpo.agent.vision import VisionPolicy

        return VisionPolicy
    raise AttributeError(f"module 'regrpo.agent' has no attribute {name!r}")
