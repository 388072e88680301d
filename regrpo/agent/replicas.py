"""``ReplicaPolicy``: several OpenAI-compatible servers (vLLM data-parallel replicas) used as one policy.

vLLM's data-parallel replicas each hold their own LoRA adapters: a ``load_lora_adapter`` reaches only
the replica that answered it, so a router that pushes an adapter to one replica and then sends
requests to all serves a mix of versions under one name (or 404s). This class keeps that from
happening, over one :class:`~regrpo.agent.openai_policy.OpenAIPolicy` per replica:

- **Sampling** goes round-robin over the replicas *in rotation*. A replica that cannot be reached
  (``ModelUnreachableError``: connection refused or timed out after its own retries) is taken out of
  rotation and the request goes to the next; with none left, ``ModelError``. Any other error (the
  request was refused) is raised: another replica would refuse it too.
- **Adapters** are pushed to every replica in rotation before any of them serves it
  (:meth:`load_adapter` loads everywhere, :meth:`activate_adapter` then switches every replica's
  requests at once), and each push is verified: the replica must list the adapter's served name on
  ``GET /v1/models`` afterwards. A replica that refuses the push or does not list it is taken out of
  rotation, so it can never serve the old weights under the new name. If no replica took it, the
  adapter is not loaded anywhere (``AdapterError``) and rotation is left as it was.
- :attr:`out_of_rotation` says which replicas were dropped and why; a dropped replica stays out
  until a new ``ReplicaPolicy`` is made (after an operator fixed it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.agent.policy import ChatMessage
from regrpo.errors import AdapterError, InputError, ModelError, ModelUnreachableError, RegrpoError
from regrpo.traces.schema import Completion

__all__ = ["ReplicaPolicy"]


class ReplicaPolicy:
    """Replicas of one model behind several base URLs, as one :class:`~regrpo.agent.Policy`.

    Args:
        replicas: One :class:`OpenAIPolicy` per replica, all for the same served ``model``.
    """

    def __init__(self, replicas: Sequence[OpenAIPolicy]) -> None:
        if len(replicas) < 1:
            raise InputError("ReplicaPolicy needs at least one replica")
        names = {replica.model_name for replica in replicas}
        if len(names) != 1:
            raise InputError(f"every replica must serve the same model; got {sorted(names)}")
        urls = [replica.base_url for replica in replicas]
        if len(set(urls)) != len(urls):
            raise InputError(f"each replica needs its own base URL; got {urls}")
        self.replicas = list(replicas)
        self.model_name = replicas[0].model_name
        self.takes_images = all(replica.takes_images for replica in replicas)
        self.active_adapter: str | None = None
        self.out_of_rotation: dict[str, str] = {}
        """Base URL → why that replica was taken out of rotation."""
        self._lock = threading.Lock()
        self._next = 0

    # -- rotation -----------------------------------------------------------------------------------

    def in_rotation(self) -> list[OpenAIPolicy]:
        """The replicas requests are spread over, in order."""
        with self._lock:
            return [r for r in self.replicas if r.base_url not in self.out_of_rotation]

    def _drop(self, replica: OpenAIPolicy, reason: str) -> None:
        with self._lock:
            self.out_of_rotation.setdefault(replica.base_url, reason)

    def _pick(self) -> OpenAIPolicy:
        """The next replica in rotation after the last one picked (a cursor over all of them)."""
        with self._lock:
            count = len(self.replicas)
            for offset in range(count):
                replica = self.replicas[(self._next + offset) % count]
                if replica.base_url not in self.out_of_rotation:
                    self._next = (self._next + offset + 1) % count
                    return replica
            dropped = "; ".join(f"{url}: {why}" for url, why in self.out_of_rotation.items())
            raise ModelError(f"no replica left in rotation ({dropped})")

    # -- sampling -----------------------------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Completion]:
        """Sample on the next replica in rotation (see ``Policy.generate``); an unreachable one is dropped."""
        while True:
            replica = self._pick()
            try:
                return replica.generate(
                    messages, n=n, temperature=temperature, max_new_tokens=max_new_tokens, stop=stop
                )
            except ModelUnreachableError as exc:  # a refused request would be refused anywhere: raised
                self._drop(replica, f"unreachable: {exc}")

    async def agenerate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Completion]:
        """Async :meth:`generate` (in a worker thread: each replica's client runs its own requests)."""
        return await asyncio.to_thread(
            self.generate, messages, n=n, temperature=temperature, max_new_tokens=max_new_tokens, stop=stop
        )

    def count_tokens(self, text: str) -> int:
        live = self.in_rotation()
        return live[0].count_tokens(text) if live else len(text.split())

    # -- adapters -----------------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> None:
        """Load ``name`` on every replica in rotation and verify each lists it (not activated)."""
        took: list[OpenAIPolicy] = []
        refused: list[tuple[OpenAIPolicy, str]] = []
        for replica in self.in_rotation():
            try:
                replica.load_adapter(name, path)
                served = replica.served_name(name)
                if served not in replica.listed_models():
                    raise AdapterError(f"it does not list {served!r} after loading it")
            except RegrpoError as exc:
                refused.append((replica, f"refused adapter {name!r}: {exc}"))
            else:
                took.append(replica)
        if not took:
            reasons = "; ".join(f"{r.base_url}: {why}" for r, why in refused)
            raise AdapterError(f"no replica took adapter {name!r} ({reasons})")
        for replica, why in refused:
            self._drop(replica, why)

    def activate_adapter(self, name: str | None) -> None:
        """Switch every replica in rotation to ``name`` (``None``: the base model)."""
        live = self.in_rotation()
        missing = [r.base_url for r in live if name is not None and name not in r.adapters]
        if missing:
            raise AdapterError(f"adapter {name!r} is not loaded on {', '.join(missing)}; load it first")
        for replica in live:
            replica.activate_adapter(name)
        self.active_adapter = name

    def unload_adapter(self, name: str) -> None:
        """Unload ``name`` from every replica that has it."""
        holders = [r for r in self.replicas if name in r.adapters]
        if not holders:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        for replica in holders:
            replica.unload_adapter(name)
        if self.active_adapter == name:
            self.active_adapter = None

    @property
    def adapters(self) -> list[str]:
        """Adapters loaded on every replica in rotation."""
        live = self.in_rotation()
        return sorted(set.intersection(*(set(r.adapters) for r in live))) if live else []

    def __repr__(self) -> str:
        urls = [r.base_url for r in self.in_rotation()]
        return f"ReplicaPolicy({urls!r}, {self.model_name!r}, adapter={self.active_adapter!r})"
