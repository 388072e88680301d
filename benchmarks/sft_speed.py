"""How much cheaper an SFT step got: packed turns + logits only where they score a target token.

Both sides run the same loss (token-mean NLL of the target tokens) on the same reference examples
(the built-in suite's reference solutions, run with the real tools: multi-turn chats), with the same
adapter weights and the system prompt's keys and values reused without gradient, and each backward
pass accumulates into the same LoRA parameters:

* before: one forward+backward per trained turn (each turn with its own prompt prefix), the LM head
  over every position of the sequence, then sliced (the trainer before issue 11);
* after:  ``LoraTrainer.backward`` on :func:`~regrpo.learning.sequences.pack_turns` samples: one
  forward+backward per example, ``logits_to_keep`` = the target span.

Both sides' gradients are compared (they must agree: the speed-up changes no number). Prints a table;
writes nothing.

    .venv/bin/python benchmarks/sft_speed.py                # about 3 minutes on a 2-core CPU
    .venv/bin/python benchmarks/sft_speed.py --examples 4 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from regrpo.agent.local import LocalPolicy
from regrpo.agent.prompts import render_system_prompt
from regrpo.learning.data_engine import reference_example
from regrpo.learning.lora_trainer import LoraTrainer
from regrpo.learning.sequences import TokenSample, example_samples, pack_turns
from regrpo.tasks.suite import builtin_suite
from regrpo.tools import Toolbox, default_tools


def unpacked_full_logits(trainer: LoraTrainer, samples: list[TokenSample], tokens: int) -> None:
    """The old step: one pass per turn, the LM head over every position, then sliced."""
    model, device = trainer.policy.model, trainer.policy.device
    for sample in samples:
        ids = sample.prompt_ids + sample.completion_ids
        split = min(sample.system_tokens, len(sample.prompt_ids) - 1)
        past = trainer._prefix_cache(ids[:split], reference=False)
        logits = model(input_ids=torch.tensor([ids[split:]], device=device), past_key_values=past).logits[0]
        first = len(sample.prompt_ids) - split - 1
        scores = logits[first : first + len(sample.completion_ids)].float().log_softmax(-1)
        chosen = torch.tensor(sample.completion_ids, device=device)
        (-scores.gather(-1, chosen[:, None]).sum() / tokens).backward()


def packed(trainer: LoraTrainer, samples: list[TokenSample], tokens: int) -> None:
    masks = [torch.tensor(s.mask()) for s in samples]
    trainer.backward(samples, lambda i, logprobs: -logprobs[masks[i]].sum() / tokens)


def grads(trainer: LoraTrainer) -> list[torch.Tensor]:
    taken = [p.grad.detach().clone() for p in trainer.parameters if p.grad is not None]
    trainer.optimizer.zero_grad(set_to_none=True)
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=8, help="reference examples in the batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    toolbox = Toolbox(default_tools())
    system = render_system_prompt(toolbox.tools)
    examples = []
    for task in builtin_suite(4 * args.examples):
        example = reference_example(task, toolbox, system)
        if example is not None and len(example.train_turns) > 1:
            examples.append(example)
        if len(examples) == args.examples:
            break
    policy = LocalPolicy()
    turns = [s for e in examples for s in example_samples(policy, e)]
    packs = [p for e in examples for p in pack_turns(example_samples(policy, e))]
    tokens = sum(len(s.completion_ids) for s in turns)
    assert tokens == sum(p.loss_tokens for p in packs)

    with LoraTrainer(policy, seed=0) as trainer:
        # a non-zero adapter, so the gradients compared below are not trivially equal
        packed(trainer, packs, tokens)
        trainer.step()
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for name, step in (("before", unpacked_full_logits), ("after", packed)):
                started = time.perf_counter()
                step(trainer, turns if name == "before" else packs, tokens)
                times[name].append(time.perf_counter() - started)
                if name == "before":
                    before_grads = grads(trainer)
                else:
                    after_grads = grads(trainer)
        worst = max(float((a - b).abs().max()) for a, b in zip(before_grads, after_grads, strict=True))

    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"{len(examples)} reference examples, {len(turns)} trained turns, {tokens} target tokens")
    print(f"{'step':<34}{'forward passes':>16}{'median s':>10}")
    print(f"{'before: per turn, full logits':<34}{len(turns):>16}{before:>10.2f}")
    print(f"{'after: packed, logits_to_keep':<34}{len(packs):>16}{after:>10.2f}")
    print(f"speed-up {before / after:.2f}x; largest gradient difference {worst:.1e}")


if __name__ == "__main__":
    main()
