"""Learning from traces: data engine, SFT warm start, ReGRPO (and a GRPO baseline), registry, gate, hot-swap.

Read in this order: ``records`` (the data on disk) → ``data_engine`` (tasks and traces → RoT examples
and branch points; ``near_miss``, ``replay``, ``classify``) → ``sequences`` and ``lora_trainer`` (one
tokenisation path, one model copy) → ``sft`` → ``rewards`` and ``regrpo`` (the method) → ``grpo``
(the baseline) → ``registry``, ``gate``, ``hotswap`` → ``online`` and ``daemon`` (the loop).

Names are imported on first use, so importing ``regrpo.learning.registry`` (the server does) does
not load torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "AdapterMeta": "registry",
    "AdapterRegistry": "registry",
    "BranchEnvironment": "replay",
    "BranchPoint": "records",
    "DataEngineConfig": "data_engine",
    "Dataset": "records",
    "GRPOConfig": "grpo",
    "GateConfig": "gate",
    "GateDecision": "gate",
    "LoraSettings": "lora_trainer",
    "LoraTrainer": "lora_trainer",
    "ReGRPOConfig": "regrpo",
    "ReGRPORound": "online",
    "RLReport": "round_report",
    "SFTConfig": "sft",
    "SFTExample": "records",
    "StepLog": "telemetry",
    "TrainerDaemon": "daemon",
    "build_dataset": "data_engine",
    "classify_failure": "classify",
    "read_metrics": "telemetry",
    "evaluate_and_gate": "gate",
    "swap_in": "hotswap",
    "swap_to_base": "hotswap",
    "train_grpo": "grpo",
    "train_regrpo": "regrpo",
    "train_sft": "sft",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(f"regrpo.learning.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'regrpo.learning' has no attribute {name!r}")
