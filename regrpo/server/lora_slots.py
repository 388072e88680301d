"""``regrpo serve-model``'s adapters: the registrations, which are resident, where they may come from.

vLLM's LoRA bookkeeping (contract §2, §7.3): a registration per public name with vLLM's int id (kept
by an in-place reload), at most ``max_loras`` adapters resident in the model (the least recently used
is dropped and read back from its folder when next asked for), and vLLM's checks of an adapter folder
in vLLM's order and wording. One lock guards residency (loads, evictions, LRU order); loads of one
name are serialised by a per-name lock the route takes.

``roots`` (``--lora-root``) confines ``lora_path`` to folders under those roots, checked on the
resolved path before anything is read, with one message whether or not the path exists: without
roots (vLLM's behaviour) any local folder loads, and the 404-vs-500 answer tells a client which
folders hold an ``adapter_config.json``.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from regrpo.errors import AdapterError
from regrpo.server.responses import RequestError

if TYPE_CHECKING:
    from regrpo.agent.local import LocalPolicy
    from regrpo.agent.vision import VisionPolicy

__all__ = ["Lora", "LoraSlots", "VALID_MAX_LORA_RANKS"]

VALID_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class Lora:
    """A registered adapter: its public name, the path as given, vLLM's int id, and its peft name."""

    name: str
    path: str
    int_id: int
    peft_name: str
    trusted: bool = False
    """Served from start-up by the operator (``--lora-modules``): not confined to ``roots``."""


class LoraSlots:
    """The adapters of one model server (module docstring).

    Args:
        policy: The engine the adapters are loaded into.
        max_loras: Adapters resident at once.
        max_lora_rank: Largest rank accepted, one of :data:`VALID_MAX_LORA_RANKS`.
        roots: Folders ``lora_path`` must lie under (empty: any local folder, as vLLM).
    """

    def __init__(
        self,
        policy: LocalPolicy | VisionPolicy,
        max_loras: int,
        max_lora_rank: int,
        roots: Sequence[str | Path] = (),
    ) -> None:
        if max_lora_rank not in VALID_MAX_LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {VALID_MAX_LORA_RANKS}, got {max_lora_rank}")
        if max_loras < 1:
            raise ValueError(f"max_loras must be at least 1, got {max_loras}")
        self.policy, self.max_loras, self.max_lora_rank = policy, max_loras, max_lora_rank
        self.roots = tuple(Path(os.path.realpath(Path(root).expanduser())) for root in roots)
        for root in self.roots:
            if not root.is_dir():
                raise ValueError(f"lora root {str(root)!r} is not a folder")
        self.registered: dict[str, Lora] = {}
        """Public name -> registration."""
        self.name_locks: dict[str, anyio.Lock] = {}
        self._resident: OrderedDict[str, None] = OrderedDict()  # peft names in memory, LRU order
        self._next_id = 0
        self._loads = 0
        self._uid = uuid.uuid4().hex[:8]  # peft names stay unique if a policy outlives its app
        self._engine = threading.Lock()

    def new(self, name: str, path: str, old: Lora | None, *, trusted: bool = False) -> Lora:
        """A registration for ``name``: an in-place reload keeps ``old``'s int id (contract §2.2)."""
        if old is None:
            self._next_id += 1
        int_id = old.int_id if old is not None else self._next_id
        self._loads += 1  # peft names must be plain identifiers: no dots, no user text
        return Lora(name, path, int_id, f"lora_{self._uid}_{int_id}_{self._loads}", trusted)

    def keep_resident(self, lora: Lora | None) -> None:
        """Read ``lora`` back into the model if it was evicted, and mark it most recently used."""
        if lora is None:
            return
        with self._engine:
            if lora.peft_name not in self._resident:
                self._make_resident(lora)
            self._resident.move_to_end(lora.peft_name)

    def _make_resident(self, lora: Lora) -> None:
        """Load ``lora``, dropping least recently used adapters past ``max_loras`` (hold the lock)."""
        while len(self._resident) >= self.max_loras:
            peft_name, _ = self._resident.popitem(last=False)
            self._drop(peft_name)
        self.policy.load_adapter(lora.peft_name, str(self.adapter_dir(lora.path, lora.trusted)))
        self._resident[lora.peft_name] = None

    def _drop(self, peft_name: str) -> None:
        """Remove an adapter from the model (hold the lock); an active one is switched off first."""
        self.policy.unload_adapter(peft_name)

    def load(self, lora: Lora, old: Lora | None) -> None:
        """Check the adapter folder as vLLM does (contract §7.3, in order), then load it into the model."""
        folder = self.adapter_dir(lora.path, lora.trusted)
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
        except (OSError, ValueError):
            raise RequestError(
                404, f"Loading lora {lora.name} failed: No adapter found for {lora.path}", "NotFoundError"
            ) from None
        missing = [key for key in ("r", "lora_alpha", "target_modules") if key not in config]
        if missing:
            raise RequestError(
                500, f"Missing required configuration fields: {missing}", "InternalServerError"
            )
        try:
            rank = max([int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())])
        except (TypeError, ValueError, AttributeError):
            raise RequestError(
                400,
                f"Invalid adapter config for {lora.name}: 'r' and 'rank_pattern' must be integers",
                "BadRequestError",
            ) from None
        if rank > self.max_lora_rank:
            raise RequestError(
                500,
                f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.",
                "InternalServerError",
            )
        if config.get("bias", "none") != "none":
            raise RequestError(500, "Adapter bias is not supported.", "InternalServerError")
        if config.get("use_dora"):
            raise RequestError(500, "vLLM does not yet support DoRA.", "InternalServerError")
        if not any((folder / f"adapter_model.{ext}").is_file() for ext in ("safetensors", "bin", "pt")):
            raise RequestError(500, f"{lora.path} doesn't contain tensors", "InternalServerError")
        with self._engine:
            try:
                self._make_resident(lora)  # next to the old weights: a failure leaves them in place
            except AdapterError as exc:  # weights that do not read or do not fit this model: the client's
                raise RequestError(400, str(exc), "BadRequestError") from exc
        if old is not None:
            self.evict(old.peft_name)

    def evict(self, peft_name: str) -> None:
        with self._engine:
            if peft_name in self._resident:
                del self._resident[peft_name]
                self._drop(peft_name)

    def adapter_dir(self, path: str, trusted: bool = False) -> Path:
        """The adapter folder of a ``lora_path``: relative paths are local (serve-model never downloads).

        Under ``roots`` only (resolved first: neither ``..`` nor a symlink leads out), refused with one
        message whether or not the folder exists.
        """
        try:
            folder = Path(os.path.realpath(Path(path).expanduser()))
        except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop, ...
            raise RequestError(400, f"Invalid lora_path: {exc}", "BadRequestError", "lora_path") from None
        inside = any(folder == root or folder.is_relative_to(root) for root in self.roots)
        if self.roots and not trusted and not inside:
            raise RequestError(
                400,
                "lora_path is outside the folders this server loads adapters from (--lora-root)",
                "BadRequestError",
                "lora_path",
            )
        return folder
