"""Training sequences: a prompt's token ids and the completion tokens that carry loss.

One tokenisation path (issue 5): every prompt is ``LocalPolicy.encode_chat(messages)``, exactly the
ids ``generate`` fed the model when the turn was sampled. A completion is either

* the token ids the policy *generated* (RL: :func:`rollout_sample`; the text is never re-tokenised),
* or, for a target turn written by the data engine (SFT: :func:`example_samples`), the tokenizer's
  ids of that text, ended the way a rollout ends: a turn that ends in a stop string
  (``</tool_call>``, ``</answer>``) has no end-of-turn token, because generation stops there and the
  runtime never shows the model one; any other turn ends with the end-of-turn token.

Only completion tokens carry loss; the prompt (system prompt, task, earlier turns, tool output) is
context. A multi-turn example becomes one sample per trained assistant turn, each with its own
prompt prefix, which is what the model saw at that turn; :func:`pack_turns` then folds the turns of
one example into a single sequence (one forward pass) wherever each turn's prompt is exactly the
previous turn's prompt + target + the tokens in between, with a mask saying which tokens carry loss.
The check is on token ids, so a packed sample scores every target token exactly as its own sample
would (``tests/learning/test_lora_trainer.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from regrpo.agent.actions import ACTION_STOP_STRINGS
from regrpo.agent.local import LocalPolicy
from regrpo.agent.policy import ChatMessage
from regrpo.errors import InputError
from regrpo.learning.records import SFTExample
from regrpo.traces.schema import Completion

__all__ = ["TokenSample", "example_samples", "pack_turns", "rollout_sample", "target_ids"]


@dataclass(frozen=True)
class TokenSample:
    """One prompt and the completion tokens that carry loss."""

    prompt_ids: list[int]
    completion_ids: list[int]
    system_tokens: int = 0
    """Leading prompt tokens that are the system message (the same in every sample; see ``LoraTrainer``)."""
    trained: tuple[bool, ...] | None = None
    """Per completion token: does it carry loss? ``None``: all do (a packed sample has context between
    its turns, see :func:`pack_turns`)."""

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.completion_ids:
            raise InputError("a training sample needs at least one prompt token and one completion token")
        if self.trained is not None and len(self.trained) != len(self.completion_ids):
            raise InputError("a sample's trained mask must have one entry per completion token")

    @property
    def loss_tokens(self) -> int:
        """How many completion tokens carry loss."""
        return len(self.completion_ids) if self.trained is None else sum(self.trained)

    def mask(self) -> tuple[bool, ...]:
        """Per completion token: does it carry loss (all ``True`` when unpacked)."""
        return self.trained if self.trained is not None else (True,) * len(self.completion_ids)


def pack_turns(samples: Sequence[TokenSample]) -> list[TokenSample]:
    """Fold consecutive turn samples of one conversation into one sample wherever the ids allow.

    Turn ``k+1`` joins the packed sample when its prompt starts with everything the packed sample
    holds (prompt + completion); the tokens in between (the end-of-turn, the tool's observation, the
    next header) become context and carry no loss. Otherwise it starts a new sample.
    """
    packed: list[TokenSample] = []
    for sample in samples:
        last = packed[-1] if packed else None
        if last is not None and sample.system_tokens == last.system_tokens:
            held = last.prompt_ids + last.completion_ids
            if len(sample.prompt_ids) >= len(held) and sample.prompt_ids[: len(held)] == held:
                between = sample.prompt_ids[len(held) :]
                packed[-1] = TokenSample(
                    last.prompt_ids,
                    last.completion_ids + between + sample.completion_ids,
                    last.system_tokens,
                    last.mask() + (False,) * len(between) + sample.mask(),
                )
                continue
        packed.append(sample)
    return packed


def target_ids(policy: LocalPolicy, text: str) -> list[int]:
    """Token ids of a target assistant turn, ended as a rollout of it would end (module docstring)."""
    ids = list(policy.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not any(text.rstrip().endswith(stop) for stop in ACTION_STOP_STRINGS):
        ids.append(int(policy.tokenizer.eos_token_id))
    return ids


def example_samples(policy: LocalPolicy, example: SFTExample) -> list[TokenSample]:
    """One sample per trained assistant turn of ``example``."""
    samples = []
    for turn in example.train_turns:
        if not 0 < turn < len(example.messages) or example.messages[turn].role != "assistant":
            raise InputError(
                f"train turn {turn} of an SFT example for {example.task_id!r} is not an assistant turn"
            )
        context = example.messages[:turn]
        prompt = policy.encode_chat(context)
        target = target_ids(policy, example.messages[turn].content)
        samples.append(TokenSample(prompt, target, len(policy.system_prefix_ids(context, prompt))))
    return samples


def rollout_sample(
    policy: LocalPolicy, messages: Sequence[ChatMessage], completion: Completion
) -> TokenSample:
    """The sample of a sampled completion: its prompt and the token ids the policy generated."""
    if not completion.token_ids:
        raise InputError("the completion has no token ids; RL needs an engine that returns them")
    prompt = policy.encode_chat(messages)
    system = len(policy.system_prefix_ids(messages, prompt))
    return TokenSample(prompt, list(completion.token_ids), system)
