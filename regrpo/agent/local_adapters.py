"""LoRA adapters of a local engine (:class:`~regrpo.agent.local.LocalPolicy`,
:class:`~regrpo.agent.vision.VisionPolicy`): load, create, switch, rename, unload.

A mixin, so the adapter bookkeeping has a module of its own while the policy stays one object: it
works on the policy's ``model`` (peft wraps it on the first adapter), ``_lock`` (every change to the
model takes it, so changes fall between generation batches), ``_adapters`` (loaded names),
``active_adapter`` and ``_prefix_cache`` (cleared on every change: LoRA changes the keys and values).
"""

from __future__ import annotations

import copy
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from regrpo.errors import AdapterError

__all__ = ["ACTIVE_ADAPTER", "ActiveAdapter", "LoraAdapters"]


class ActiveAdapter:
    """The type of :data:`ACTIVE_ADAPTER`."""

    def __repr__(self) -> str:
        return "ACTIVE_ADAPTER"


ACTIVE_ADAPTER = ActiveAdapter()
"""``generate(adapter=ACTIVE_ADAPTER)``: whichever adapter is active when the call's batch runs."""


class LoraAdapters:
    """Adapter management for a local engine (see the module docstring for the state it shares)."""

    model: Any
    active_adapter: str | None
    _lock: threading.Lock
    _adapters: set[str]
    _prefix_cache: OrderedDict[tuple[int, ...], Any]

    @property
    def dtype(self) -> torch.dtype:
        """The base weights' dtype (LoRA adapters peft adds train in float32 whatever it is)."""
        return next(self.model.parameters()).dtype

    def weights_changed(self) -> None:
        """Drop cached keys and values: call after changing the model's weights in place (training)."""
        with self._lock:
            self._prefix_cache.clear()

    def load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        if name in self._adapters:
            raise AdapterError(f"an adapter named {name!r} is already loaded; unload it or use a new name")
        if not (Path(path) / "adapter_config.json").is_file():
            raise AdapterError(f"{path!r} is not a PEFT adapter folder (no adapter_config.json)")
        with self._lock:
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(path, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
                    self.model.base_model.disable_adapter_layers()  # loaded, not yet active
            except Exception as exc:  # untrusted files: any reader error (struct.error, UnpicklingError...)
                raise AdapterError(f"cannot load adapter {name!r} from {path!r}: {exc}") from exc
            self.model.eval()
            self._adapters.add(name)
            self._prefix_cache.clear()

    def add_trainable_adapter(self, name: str, config: Any) -> None:
        """Create a freshly initialised LoRA adapter ``name`` (a ``peft.LoraConfig``), active and trainable.

        LoRA's B matrices start at zero, so the model's outputs are unchanged until it is trained
        (``regrpo.learning`` trains it in place; rollouts, training and the KL reference share one copy).
        """
        from peft import PeftModel, get_peft_model

        if name in self._adapters:
            raise AdapterError(f"an adapter named {name!r} is already loaded; unload it or use a new name")
        with self._lock:
            if isinstance(self.model, PeftModel):
                self.model.add_adapter(name, config)
            else:
                self.model = get_peft_model(self.model, config, adapter_name=name)
            model: Any = self.model
            model.set_adapter(name)
            model.base_model.enable_adapter_layers()
            for parameter_name, parameter in model.named_parameters():
                parameter.requires_grad_(f".{name}." in parameter_name)
            model.eval()  # no dropout: rollouts and the loss see the same function
            self._adapters.add(name)
            self.active_adapter = name
            self._prefix_cache.clear()

    def _check_loaded(self, name: str) -> None:
        if name not in self._adapters:
            known = ", ".join(sorted(self._adapters)) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {known})")

    def activate_adapter(self, name: str | None) -> None:
        with self._lock:
            self._switch_adapter(name)

    def _switch_adapter(self, name: str | None) -> None:
        """Make ``name`` (``None``: the base model) the active adapter (hold the lock)."""
        if name is not None:
            self._check_loaded(name)
        if name is None:
            if self._adapters:
                self.model.base_model.disable_adapter_layers()
        else:
            self.model.set_adapter(name)
            self.model.base_model.enable_adapter_layers()
        self.active_adapter = name
        self._prefix_cache.clear()

    def _use_adapter(self, adapter: str | None | ActiveAdapter) -> None:
        """Switch to ``adapter`` unless it is :data:`ACTIVE_ADAPTER` or already active (hold the lock)."""
        if not isinstance(adapter, ActiveAdapter) and adapter != self.active_adapter:
            self._switch_adapter(adapter)

    def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        if name == self.active_adapter:
            self.activate_adapter(None)
        with self._lock:
            remaining = sorted(self._adapters - {name})
            if not remaining:
                # the last adapter: take the LoRA layers out (no merge), back to the plain base model
                self.model = self.model.unload()
            else:
                if self.model.active_adapter == name:
                    # peft still points at a deactivated adapter; deleting it would leave a dangling
                    # name that fails the next forward pass, so point it at another, still disabled
                    self.model.set_adapter(remaining[0])
                    self.model.base_model.disable_adapter_layers()
                self.model.delete_adapter(name)
            self.model.eval()
            self._adapters.discard(name)
            self._prefix_cache.clear()

    def load_adapter_weights(self, name: str, config: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a LoRA adapter from tensors already in memory under ``name`` (not activated).

        The in-memory twin of :meth:`load_adapter` (no files: e.g. a trainer's adapter in this process).

        Args:
            name: A new adapter name.
            config: A ``peft.LoraConfig`` (or the dict of an ``adapter_config.json``).
            state_dict: The adapter's tensors as ``peft.get_peft_model_state_dict`` returns them (the keys
                of ``adapter_model.safetensors``). They are copied, so the caller may go on training them.
        """
        from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict

        if name in self._adapters:
            raise AdapterError(f"an adapter named {name!r} is already loaded; unload it or use a new name")
        try:
            peft_config = (
                copy.deepcopy(config)
                if isinstance(config, PeftConfig)
                else PeftConfig.from_peft_type(**config)
            )
        except (TypeError, ValueError) as exc:
            raise AdapterError(f"adapter {name!r}: not a usable peft config ({exc})") from exc
        peft_config.inference_mode = True
        if not any("lora_" in key for key in state_dict):
            raise AdapterError(
                f"adapter {name!r}: the state dict holds no LoRA tensors (keys like '...lora_A.weight')"
            )
        with self._lock:
            try:
                if isinstance(self.model, PeftModel):
                    self.model.add_adapter(name, peft_config)
                else:
                    self.model = get_peft_model(self.model, peft_config, adapter_name=name)
                    self.model.base_model.disable_adapter_layers()  # loaded, not yet active
                # load_state_dict copies into the new adapter's own parameters (no aliasing)
                result: Any = set_peft_model_state_dict(self.model, dict(state_dict), adapter_name=name)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                self._drop_partial_adapter(name)
                raise AdapterError(f"cannot load adapter {name!r} from tensors: {exc}") from exc
            # a missing LoRA tensor would silently keep its random initialisation: refuse instead
            missing = [key for key in result.missing_keys if f".{name}." in key and "lora_" in key]
            unexpected = [key for key in result.unexpected_keys if "lora_" in key]
            if missing or unexpected:
                self._drop_partial_adapter(name)
                raise AdapterError(
                    f"adapter {name!r}: the state dict does not fit the config "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]}); pass the tensors of "
                    "peft.get_peft_model_state_dict(model) with the config the adapter was trained with"
                )
            self.model.eval()
            self._adapters.add(name)
            self._prefix_cache.clear()

    def replace_adapter_weights(
        self, name: str, new_name: str, state_dict: Mapping[str, torch.Tensor]
    ) -> None:
        """Overwrite loaded adapter ``name`` in place with same-shaped tensors, renaming it ``new_name``.

        The fast hot-swap: one lock hold copies the tensors into the existing LoRA parameters and renames
        the adapter (kept active if it was), so no peft layers are built (building them is ~250 ms of
        Python on SmolLM2 for r=16 on 7 projections; this is ~25 ms). The old adapter is gone after.

        Raises:
            AdapterError: ``name`` is not loaded, ``new_name`` is taken, or the tensors' names or shapes
                differ from ``name``'s (a different rank or target modules): load it instead.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        if name not in self._adapters:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        if new_name in self._adapters:
            raise AdapterError(
                f"an adapter named {new_name!r} is already loaded; unload it or use a new name"
            )
        with self._lock:
            # saved key -> live parameter; the saved key is the parameter's name without the adapter's
            # (what peft.get_peft_model_state_dict returns, at a tenth of its cost: it copies the state dict)
            in_name = re.compile(rf"(\.lora_\w+)\.{re.escape(name)}(?=\.|$)")
            slots = {
                in_name.sub(r"\1", key, count=1): parameter
                for key, parameter in self.model.named_parameters()
                if in_name.search(key)
            }
            mismatch = sorted(set(slots) ^ set(state_dict)) + [
                key
                for key in slots
                if key in state_dict and tuple(slots[key].shape) != tuple(state_dict[key].shape)
            ]
            layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
            if any(name in getattr(m, "frozen_peft_weight_names", {}) for m in layers):
                mismatch.append("(frozen peft weights)")
            if mismatch:
                raise AdapterError(
                    f"cannot overwrite adapter {name!r} in place: tensors differ in names or shapes "
                    f"({mismatch[:3]}); load it as a new adapter instead"
                )
            with torch.no_grad():
                for key, target in slots.items():
                    target.copy_(state_dict[key])
            # rename: the same containers peft's own delete_adapter walks, plus the active names
            for layer in layers:
                for attr in layer.adapter_layer_names + layer.other_param_names:
                    container = getattr(layer, attr, None)
                    if (
                        isinstance(container, (dict, torch.nn.ModuleDict, torch.nn.ParameterDict))
                        and name in container
                    ):
                        container[new_name] = container.pop(name)
                layer._active_adapter = _renamed(layer._active_adapter, name, new_name)
            tuner = self.model.base_model
            tuner.peft_config[new_name] = tuner.peft_config.pop(name)
            tuner.active_adapter = _renamed(tuner.active_adapter, name, new_name)
            self.model.active_adapter = _renamed(self.model.active_adapter, name, new_name)
            self._adapters = (self._adapters - {name}) | {new_name}
            if self.active_adapter == name:
                self.active_adapter = new_name
            self._prefix_cache.clear()

    def _drop_partial_adapter(self, name: str) -> None:
        """Undo a half-done :meth:`load_adapter_weights` (hold the lock)."""
        model: Any = self.model
        if name not in getattr(model, "peft_config", {}):  # not wrapped by peft, or the name never added
            return
        if not self._adapters:
            self.model = model.unload()  # it was the only one: back to the plain base model
        else:
            model.delete_adapter(name)
            if self.active_adapter is None:
                model.base_model.disable_adapter_layers()
            else:
                model.set_adapter(self.active_adapter)

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters."""
        return sorted(self._adapters)


def _renamed(active: Any, old: str, new: str) -> Any:
    """An adapter-name field of peft (a name or a list of names) with ``old`` renamed ``new``."""
    if isinstance(active, str):
        return new if active == old else active
    return [new if a == old else a for a in active]
