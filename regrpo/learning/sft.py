"""Warm start: supervised fine-tuning of a LoRA adapter on reference and RoT examples.

ENVIRONMENT.md and ``docs/results.md`` found the base SmolLM2-135M rarely follows the tool format (92 of
93 turns unparseable), so RL from the base model has almost no reward to work with. The warm start
teaches the format, the tools and the reflection triplet first:

* reference examples (a task's reference solution, run with the real tools) train every assistant turn;
* RoT examples (context → near-miss → its real failure + the runtime's reflection request) train only
  the target turn ``<reflection>{...}</reflection>`` + corrected action, as the reference release's
  ``mask_policy`` does; the near-miss turn itself is context and never imitated.

Loss: weighted mean negative log-likelihood over the target tokens of a batch, prompts masked (they
are never in the completion; see :mod:`regrpo.learning.sequences`). Every token weighs 1, except in a
RoT target, whose reflection block and action share the turn's weight equally
(``balance_reflection``), so the action tokens that solve the task are not drowned by the JSON.
Samples are shuffled with the config's seed; each optimizer step takes ``batch_size`` sequences:
an example's trained turns are packed into one sequence where the token ids allow
(:func:`regrpo.learning.sequences.pack_turns`), so a reference solution of three turns costs one
forward pass, not three.

Data-parallel (``torchrun``, :mod:`regrpo.learning.distributed`): ``batch_size`` is per rank; every
rank builds the same global batches and trains its share, the loss is normalised by the global
batch's weight and the gradients are summed, so N ranks take exactly the step one process would take
on N times the batch; rank 0 alone writes the adapter and the metrics.

The learning rate warms up linearly over ``warmup_fraction`` of the steps, then decays (cosine) to
``final_lr_fraction`` of its peak; every step's loss, entropy, gradient norm, learning rate and
tokens/s go to ``metrics.jsonl`` (and TensorBoard) beside the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import torch

from regrpo.agent.image_parts import takes_images
from regrpo.errors import InputError
from regrpo.learning.distributed import ranks, summed
from regrpo.learning.lora_trainer import LoraSettings, LoraTrainer, TrainablePolicy, warmup_cosine
from regrpo.learning.progress import training_bar
from regrpo.learning.records import SFTExample
from regrpo.learning.replay import ReplayError, example_images
from regrpo.learning.sequences import example_samples, pack_turns
from regrpo.learning.telemetry import StepLog
from regrpo.tools import ImageStore, Tool, Toolbox, default_tools

__all__ = ["SFTConfig", "SFTReport", "stratified_rot", "train_sft"]

log = logging.getLogger(__name__)


class SFTConfig(msgspec.Struct, frozen=True):
    """Warm-start settings. Defaults are what ``regrpo train sft`` ran on the 2-core CPU (docs/results.md)."""

    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-4
    """Above the reference's 2e-5 over 2,000 steps: a CPU run affords ~100 steps; LoRA tolerates it."""
    lora: LoraSettings = LoraSettings()
    kinds: tuple[str, ...] = ("reference", "rot")
    """Which example kinds to train on (``("reference",)`` = SFT on successes only, the baseline)."""
    max_rot_examples: int | None = None
    """Train on at most this many RoT examples (``None``: all), drawn round-robin over error types
    with the config's seed, so a CPU budget keeps every failure kind the data engine made."""
    max_target_tokens: int = 192
    """Target turns longer than this are skipped (counted): long answers teach nothing but cost time."""
    detach_system_prompt: bool = True
    balance_reflection: bool = True
    """A RoT target's reflection block and its action carry equal shares of the turn's loss
    (:func:`regrpo.learning.sequences.balanced_weights`); False: a plain token mean."""
    warmup_fraction: float = 0.1
    """Share of the steps over which the learning rate warms up linearly (then cosine decay)."""
    final_lr_fraction: float = 0.1
    """The cosine decay ends at ``learning_rate × final_lr_fraction`` on the last step."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise InputError(f"SFT needs epochs >= 1, batch_size >= 1, learning_rate > 0; got {self}")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.final_lr_fraction <= 1:
            raise InputError(
                "SFT needs 0 <= warmup_fraction < 1 and 0 <= final_lr_fraction <= 1; got "
                f"{self.warmup_fraction} and {self.final_lr_fraction}"
            )
        if self.max_rot_examples is not None and self.max_rot_examples < 0:
            raise InputError(f"max_rot_examples must be >= 0 or None; got {self.max_rot_examples}")
        unknown = set(self.kinds) - {"reference", "rot"}
        if unknown or not self.kinds:
            raise InputError(f"kinds must be chosen from 'reference', 'rot'; got {list(self.kinds)}")


class SFTReport(msgspec.Struct, frozen=True):
    """What a warm-start run did."""

    examples: int
    samples: int
    """Trained assistant turns."""
    sequences: int
    """Forward passes per epoch: the turns after packing (:func:`regrpo.learning.sequences.pack_turns`)."""
    skipped_long: int
    steps: int
    losses: list[float]
    """Token-mean NLL of each optimizer step."""
    target_tokens: int
    seconds: float
    config: SFTConfig
    unreplayable: int = 0
    """Examples left out because their images could not be rebuilt (an engine that takes images:
    :func:`~regrpo.learning.replay.example_images` raised :class:`~regrpo.learning.replay.ReplayError`)."""


def stratified_rot(examples: Sequence[SFTExample], limit: int | None, seed: int) -> list[SFTExample]:
    """At most ``limit`` of the RoT ``examples``, taken round-robin over their error types.

    Each error type's examples are shuffled with ``seed``; rounds take one of each type that has any
    left, in a fixed type order, until ``limit`` are taken. ``None`` keeps every example.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    by_type: dict[str, list[SFTExample]] = {}
    for example in examples:
        by_type.setdefault(example.error_type.value if example.error_type else "", []).append(example)
    queues = [by_type[name] for name in sorted(by_type)]
    for queue in queues:
        rng.shuffle(queue)
    taken: list[SFTExample] = []
    while len(taken) < limit:
        for queue in queues:
            if queue and len(taken) < limit:
                taken.append(queue.pop())
    return taken


def train_sft(
    policy: TrainablePolicy,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    out_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    progress: bool = True,
    tools: Sequence[Tool] | None = None,
) -> SFTReport:
    """Train a LoRA adapter on ``examples`` and save it to ``out_dir`` (a PEFT folder).

    The adapter is taken out of ``policy`` afterwards; load ``out_dir`` to use it. On an engine that
    takes images (a ``VisionPolicy``) every turn is shown the images its messages name, rebuilt with
    ``tools`` (default: the built-in tools; the ones the examples were built with); an example whose
    images cannot be rebuilt is left out and counted (``SFTReport.unreplayable``).
    """
    chosen = [e for e in examples if e.kind in config.kinds and e.kind != "rot"]
    if "rot" in config.kinds:
        chosen += stratified_rot(
            [e for e in examples if e.kind == "rot"], config.max_rot_examples, config.seed
        )
    if not chosen:
        raise InputError(f"no SFT examples of kinds {list(config.kinds)} among {len(examples)} given")
    started = time.perf_counter()
    images, unreplayable = _example_images(policy, chosen, tools)
    turns = [
        example_samples(policy, e, balance_reflection=config.balance_reflection, images=images.get(i))
        for i, e in enumerate(chosen)
        if i not in unreplayable
    ]
    samples = [s for example in turns for s in example]
    # a long target is skipped (it stays context of a packed sample, where it carries no loss)
    kept_turns = [
        [s for s in example if len(s.completion_ids) <= config.max_target_tokens] for example in turns
    ]
    kept = [packed for example in kept_turns for packed in pack_turns(example)]
    trained_turns = sum(len(example) for example in kept_turns)
    if not kept:
        raise InputError(
            f"every one of the {len(samples)} target turns is longer than max_target_tokens="
            f"{config.max_target_tokens}; raise it or rebuild the data with shorter targets"
        )
    rng = random.Random(config.seed)
    losses: list[float] = []
    batches = []
    place = ranks()  # data-parallel: every rank builds the same global batches and trains its share
    size = config.batch_size * place.world
    for _ in range(config.epochs):
        order = kept[:]
        rng.shuffle(order)
        batches += [order[i : i + size] for i in range(0, len(order), size)]
    schedule = warmup_cosine(
        len(batches), int(config.warmup_fraction * len(batches)), config.final_lr_fraction
    )
    with (
        LoraTrainer.for_config(policy, config, init_from, lr_scale=schedule) as trainer,
        StepLog(out_dir, enabled=place.main) as step_log,
    ):
        with training_bar("SFT", len(batches), progress and place.main) as advance:
            for global_batch in batches:
                step_started = time.perf_counter()
                tokens = sum(s.loss_tokens for s in global_batch)
                # normalised by the whole global batch's weight, so the ranks' summed gradients are
                # exactly one process's gradient over all of it
                total_weight = float(sum(sum(s.token_weights()) for s in global_batch))
                batch = place.shard(global_batch)
                weights = [torch.tensor(s.token_weights(), device=policy.device) for s in batch]

                def token_mean_nll(
                    i: int, logprobs: torch.Tensor, weights: list = weights, total: float = total_weight
                ) -> torch.Tensor:
                    return -(weights[i] * logprobs).sum() / total

                learning_rate = trainer.learning_rate
                result = trainer.backward(batch, token_mean_nll)
                grad_norm = trainer.step()
                loss = summed(result.loss)
                losses.append(loss)
                step_log.log(
                    trainer.steps,
                    {
                        "loss": loss,
                        "entropy": result.entropy,
                        "grad_norm": grad_norm,
                        "learning_rate": learning_rate,
                        "tokens_per_s": tokens / max(1e-9, time.perf_counter() - step_started),
                    },
                )
                advance(f"loss {loss:.3f}  grad {grad_norm:.2f}  lr {learning_rate:.1e}")
        if place.main:
            trainer.save(out_dir)
    return SFTReport(
        examples=len(chosen),
        samples=trained_turns,
        sequences=len(kept),
        skipped_long=len(samples) - trained_turns,
        steps=len(losses),
        losses=losses,
        target_tokens=sum(s.loss_tokens for s in kept) * config.epochs,
        seconds=time.perf_counter() - started,
        config=config,
        unreplayable=len(unreplayable),
    )


def _example_images(
    policy: TrainablePolicy, examples: Sequence[SFTExample], tools: Sequence[Tool] | None
) -> tuple[dict[int, ImageStore], set[int]]:
    """For an engine that takes images: each example's rebuilt images by index, and the indices of
    those that could not be rebuilt (logged); nothing for a text engine."""
    if not takes_images(policy):
        return {}, set()
    toolbox = Toolbox(list(tools) if tools is not None else default_tools())
    images: dict[int, ImageStore] = {}
    failed: set[int] = set()
    for index, example in enumerate(examples):
        if not any(m.images for m in example.messages):
            continue
        try:
            images[index] = asyncio.run(example_images(example, toolbox))
        except ReplayError as exc:
            log.warning("left out an SFT example for %s: %s", example.task_id, exc)
            failed.add(index)
    return images, failed
