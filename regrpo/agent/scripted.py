"""``ScriptedPolicy``: a policy that replies from a script — a test double, not a model.

It exists so tests, examples and benchmarks can drive the agent loop deterministically (a failure,
then a reflection, then a corrected action) and measure the runtime without a model's cost. It
follows the :class:`~regrpo.agent.Policy` protocol exactly; it has no log-probs unless the script
gives them, so the confidence trigger stays silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from regrpo.agent.policy import ChatMessage, as_chat, check_sampling
from regrpo.errors import AdapterError, ModelError
from regrpo.traces.schema import Completion

__all__ = ["ScriptedPolicy"]

Reply = str | Callable[[list[dict[str, str]]], str]
"""A scripted turn: fixed text, or a function of the chat so far."""


class ScriptedPolicy:
    """Replies with the next item of ``script`` on each call; ``cycle=True`` starts over at the end."""

    def __init__(self, script: Iterable[Reply], *, cycle: bool = False, model_name: str = "scripted") -> None:
        self.script = list(script)
        if not self.script:
            raise ModelError("ScriptedPolicy needs at least one scripted reply")
        self.cycle = cycle
        self.model_name = model_name
        self.active_adapter: str | None = None
        self.calls = 0
        self._adapters: set[str] = set()

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Completion]:
        check_sampling(n, temperature, max_new_tokens)
        if self.calls >= len(self.script) and not self.cycle:
            raise ModelError(f"ScriptedPolicy ran out of replies after {self.calls} calls")
        reply = self.script[self.calls % len(self.script)]
        self.calls += 1
        chat = as_chat(messages)
        text = reply(chat) if callable(reply) else reply
        prompt_tokens = sum(self.count_tokens(m["content"]) for m in chat)
        return [
            Completion(text=text, prompt_tokens=prompt_tokens, adapter=self.active_adapter) for _ in range(n)
        ]

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words: a stand-in for a tokenizer."""
        return len(text.split())

    def load_adapter(self, name: str, path: str) -> None:
        self._adapters.add(name)

    def activate_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._adapters:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        self.active_adapter = name

    def unload_adapter(self, name: str) -> None:
        self._adapters.discard(name)
        if self.active_adapter == name:
            self.active_adapter = None
