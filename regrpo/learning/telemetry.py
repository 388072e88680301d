"""Training telemetry: one record per optimizer step, as JSONL beside the adapter and in TensorBoard.

Every trainer (SFT, ReGRPO, GRPO) writes ``<out_dir>/metrics.jsonl`` while it runs: one JSON object
per optimizer step, flushed as it is written, so a crashed run keeps every step it finished. When
the optional ``tensorboard`` package is installed (``pip install regrpo[tensorboard]``) the same
scalars also go to ``<out_dir>/tensorboard/`` (``tensorboard --logdir <out_dir>``).

The metrics (absent where a trainer has no such quantity):

============================  ==================================================================
``loss``                      the step's total loss (token-mean)
``policy_loss`` / ``kl``      RL: the clipped policy-gradient term and the mean per-token k3 KL
``entropy``                   mean per-token entropy of the trained distribution (nats)
``clip_fraction``             RL: fraction of tokens whose ratio left ``1 ± clip_eps``
``grad_norm``                 global gradient norm before clipping
``learning_rate``             the optimizer's learning rate at the step
``reward_mean`` / ``reward_spread``  RL: over the step's groups (spread: mean of ``max R − min R``)
``skipped_groups``            RL: groups skipped so far (too little reward spread)
``anchor_completions``        ReGRPO: skipped groups' completions in the step's loss at advantage 0
``truncation_rate``           RL: fraction of the step's completions that hit ``max_new_tokens``
``tokens_per_s``              generated (RL) or trained (SFT) tokens per wall-clock second
============================  ==================================================================
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["StepLog", "read_metrics"]


class StepLog:
    """Append-only per-step metrics for one training run (module docstring).

    Args:
        out_dir: The run's output folder (the adapter's folder); created if missing.
        tensorboard: Also write TensorBoard event files when the package is installed.
    """

    def __init__(
        self, out_dir: str | os.PathLike[str], *, tensorboard: bool = True, enabled: bool = True
    ) -> None:
        self.folder = Path(out_dir)
        self.path = self.folder / "metrics.jsonl"
        self.steps = 0
        self._file: Any = None
        self._writer: Any = None
        if not enabled:  # a data-parallel run's other ranks: rank 0 writes
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._writer = _tensorboard_writer(self.folder / "tensorboard") if tensorboard else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` of optimizer step ``step`` (1-based); non-finite values are kept as null."""
        self.steps += 1
        if self._file is None:
            return
        record = {"step": step, **{k: _finite(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                if math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> StepLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_metrics(folder: str | os.PathLike[str]) -> list[dict[str, float | None]]:
    """The records of ``<folder>/metrics.jsonl``, in step order."""
    path = Path(folder) / "metrics.jsonl"
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _tensorboard_writer(folder: Path) -> Any:
    """A ``SummaryWriter`` when ``tensorboard`` is installed, else ``None`` (it is an optional extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))
