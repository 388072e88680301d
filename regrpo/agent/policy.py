"""The ``Policy`` protocol: what the agent loop needs from a model engine.

A policy turns a chat (a list of ``{"role", "content"}`` messages) into ``n`` completions, each with
its generated token ids and per-token log-probs when the engine can give them (RL needs them), and
manages LoRA adapters by name. ``LocalPolicy`` (transformers, in-process) is the default; any object
with these methods works. An engine that is natively async may also define
``async agenerate(...)`` with the same signature; the loop prefers it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from regrpo.errors import InputError
from regrpo.traces.schema import Completion, Message

__all__ = ["ChatMessage", "Policy", "as_chat", "check_sampling"]

ChatMessage = Message | Mapping[str, str]
"""A chat message: a :class:`~regrpo.traces.Message` or a ``{"role": ..., "content": ...}`` mapping."""


def as_chat(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Messages as plain dicts, the form chat templates and HTTP APIs take."""
    return [
        m.to_dict() if isinstance(m, Message) else {"role": m["role"], "content": m["content"]}
        for m in messages
    ]


def check_sampling(n: int, temperature: float, max_new_tokens: int) -> None:
    """Refuse sampling arguments no engine can honour (every ``generate`` calls this first)."""
    if n < 1 or max_new_tokens < 1 or temperature < 0:
        raise InputError(
            f"need n >= 1, max_new_tokens >= 1 and temperature >= 0; got n={n}, "
            f"max_new_tokens={max_new_tokens}, temperature={temperature}"
        )


@runtime_checkable
class Policy(Protocol):
    """A model engine the agent can sample actions from."""

    model_name: str
    """Name recorded in traces (a model id or path)."""
    active_adapter: str | None
    """Name of the LoRA adapter in use, ``None`` for the base model."""

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Completion]:
        """Sample ``n`` completions of the chat (greedy when ``temperature == 0``).

        Generation stops at the end-of-turn token, at ``max_new_tokens``, or just after any string
        in ``stop`` (the stop string is kept in the text). Each completion names the adapter that
        generated it (``Completion.adapter``), so a swap while an episode runs labels its steps right.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes in this model's tokenizer."""
        ...

    def load_adapter(self, name: str, path: str) -> None:
        """Load a PEFT LoRA adapter from ``path`` under ``name`` (not activated)."""
        ...

    def activate_adapter(self, name: str | None) -> None:
        """Use the adapter called ``name`` for later generations; ``None`` goes back to the base model."""
        ...

    def unload_adapter(self, name: str) -> None:
        """Drop a loaded adapter and free its memory."""
        ...
