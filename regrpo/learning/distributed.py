"""Data-parallel training with ``torch.distributed``: which rank this is, its share, summed gradients.

``regrpo train sft`` runs under ``torchrun --nproc-per-node N -m regrpo.cli train sft ...`` (or
``accelerate launch``): every rank loads the same data and shuffles it with the same seed, so each
optimizer step's global batch (``batch_size`` sequences per rank) is the same everywhere; a rank
trains on its slice (:meth:`Ranks.shard`), the loss is normalised by the *global* batch's target
weight, and :func:`all_reduce_gradients` sums the gradients before the step. One step on N ranks of
``b`` sequences is then the same update as one step on one process of ``N·b`` (a test checks it
with gloo on the CPU). Only rank 0 writes the adapter and the metrics. The backend is ``nccl`` on
GPUs and ``gloo`` on the CPU; a rank that dies makes the others' next all-reduce fail, so the job
ends with an error instead of hanging (``timeout_s`` bounds any wait).

RL (``regrpo train regrpo`` / ``grpo``) runs the same way: every rank visits its shard of the same
shuffled points (or tasks) with its share of the rollout budget and samples with its own seed; the
ranks step together (:func:`any_rank` decides whether anyone has something to train on, so a rank
whose groups were all skipped, or that ran out of points, joins the step with zero gradients instead
of leaving the others waiting in the all-reduce), the loss is normalised by the *global* number of
completion tokens, and the report and telemetry are summed over ranks
(:mod:`regrpo.learning.regrpo`, :mod:`regrpo.learning.grpo`).

A plain process (no ``WORLD_SIZE`` above 1 in the environment) is rank 0 of 1 and nothing changes.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from regrpo.errors import InputError

__all__ = [
    "Ranks",
    "all_reduce_gradients",
    "any_rank",
    "init_from_environment",
    "ranks",
    "reseed",
    "summed",
    "summed_each",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world``-th one, starting at ``rank``."""
        return list(items[self.rank :: self.world])

    def share(self, total: int) -> int:
        """This rank's part of a budget of ``total`` (the first ``total % world`` ranks take one more)."""
        return total // self.world + (self.rank < total % self.world)


def ranks() -> Ranks:
    """The current process group's ranks, or rank 0 of 1 outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def init_from_environment(timeout_s: float = 600.0) -> Ranks:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``).

    Without ``WORLD_SIZE`` > 1 this does nothing and returns rank 0 of 1.
    """
    import torch.distributed as dist

    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise InputError(f"WORLD_SIZE must be a positive integer, got {world!r}")
    if int(world) == 1 or dist.is_initialized():
        return ranks()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise InputError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return ranks()


def reseed(seed: int) -> None:
    """Seed torch's and Python's global generators (a rank's own sampling stream)."""
    torch.manual_seed(seed)
    random.seed(seed)


def all_reduce_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over all ranks (a rank with no share this step adds zeros)."""
    import torch.distributed as dist

    if ranks().world == 1:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)


def summed(value: float) -> float:
    """``value`` summed over all ranks (itself on one process)."""
    return summed_each([value])[0]


def summed_each(values: Sequence[float]) -> list[float]:
    """Each of ``values`` summed over all ranks, in one all-reduce (themselves on one process).

    Every rank must call it at the same point with as many values.
    """
    import torch.distributed as dist

    if ranks().world == 1:
        return [float(v) for v in values]
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [float(v) for v in total.tolist()]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on at least one rank (``flag`` itself on one process)."""
    return summed(float(flag)) > 0
