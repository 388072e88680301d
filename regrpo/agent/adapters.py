"""Which LoRA adapter an agent runs with: the shipped RoT warm start unless told otherwise.

regrpo ships one adapter, ``regrpo/data/adapters/warm-start`` (RoT SFT on the built-in suite's
training split, trained on the default model; ``PROVENANCE.md`` there). It is the best agent regrpo
ships, so it is what ``Agent()``, ``regrpo run``, ``regrpo eval`` and ``regrpo serve`` use by default.
An adapter choice (:data:`AdapterChoice`) is one of:

* :data:`WARM_START` — the shipped warm start (a marker, so a caller need not know where it is installed);
* a path — a PEFT adapter folder (``adapter_config.json`` + weights, as ``save_pretrained`` writes it);
* ``None`` — the base model, no adapter.

An adapter is loaded under its folder's name (``warm-start`` for the shipped one), which is the name
traces record on every episode and step.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING

from regrpo.agent.model_files import DEFAULT_MODEL
from regrpo.errors import AdapterError

if TYPE_CHECKING:
    from regrpo.agent.policy import Policy

__all__ = [
    "WARM_START",
    "WARM_START_DIR",
    "WARM_START_MODEL",
    "AdapterChoice",
    "ShippedAdapter",
    "activate",
    "adapter_folder",
    "adapter_name",
    "folder_for",
]


class ShippedAdapter(enum.Enum):
    """Adapters that come with regrpo, named by marker rather than by install path."""

    WARM_START = "warm-start"


WARM_START = ShippedAdapter.WARM_START
"""The shipped RoT SFT warm start (the default adapter of ``Agent()`` and the CLI)."""

WARM_START_DIR = Path(__file__).resolve().parent.parent / "data" / "adapters" / "warm-start"
"""Where the shipped warm start is installed (a PEFT folder inside the package)."""

WARM_START_MODEL = DEFAULT_MODEL
"""The base model the warm start was trained on; it fits no other model."""

AdapterChoice = str | os.PathLike[str] | ShippedAdapter | None
"""An adapter folder, :data:`WARM_START`, or ``None`` for the base model."""


def adapter_folder(choice: str | os.PathLike[str] | ShippedAdapter) -> Path:
    """The folder of an adapter choice, checked: an :class:`AdapterError` naming it if not a PEFT folder."""
    folder = WARM_START_DIR if isinstance(choice, ShippedAdapter) else Path(choice).expanduser()
    if (folder / "adapter_config.json").is_file():
        return folder
    if isinstance(choice, ShippedAdapter):
        raise AdapterError(
            f"the shipped warm start is missing from {str(folder)!r}: reinstall regrpo, "
            "or pass adapter=None (--no-adapter) for the base model"
        )
    problem = "is not a PEFT adapter folder (no adapter_config.json)" if folder.exists() else "does not exist"
    raise AdapterError(
        f"adapter {str(folder)!r} {problem}: pass the folder a trainer wrote (adapter_config.json and "
        "adapter_model.safetensors, e.g. regrpo train sft --out DIR), or adapter=None (--no-adapter) "
        "for the base model"
    )


def adapter_name(folder: Path) -> str:
    """The name an adapter folder is loaded under and traces record: the folder's own name."""
    return folder.resolve().name if folder.name in ("", ".", "..") else folder.name


def folder_for(policy: Policy, choice: str | os.PathLike[str] | ShippedAdapter) -> Path:
    """The folder ``policy`` should load: checked here, unless a remote server reads it from its own disk."""
    from regrpo.agent.openai_policy import OpenAIPolicy

    if isinstance(policy, OpenAIPolicy):
        return WARM_START_DIR if isinstance(choice, ShippedAdapter) else Path(choice)
    return adapter_folder(choice)


def activate(policy: Policy, choice: AdapterChoice) -> str | None:
    """Load ``choice`` into ``policy`` (once) and make it the active adapter; returns its name.

    ``None`` switches the policy to its base model. An adapter already loaded under the same name is
    reused, so two agents over one policy share it.
    """
    if choice is None:
        policy.activate_adapter(None)
        return None
    folder = folder_for(policy, choice)
    name = adapter_name(folder)
    if name not in getattr(policy, "adapters", ()):
        policy.load_adapter(name, str(folder))
    policy.activate_adapter(name)
    return name
