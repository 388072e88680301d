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

On an engine that takes images (:class:`~regrpo.agent.vision.VisionPolicy`) the prompt is
``VisionPolicy.encode(chat)``, the chat with its image parts (an SFT example's images rebuilt by
:func:`regrpo.learning.replay.example_images`): the ids (image tokens included) and the
processor's other inputs (pixel values, image grid sizes, attention mask) in
``TokenSample.model_inputs``, so training feeds the model exactly what sampling fed it. Such samples
are not packed (each turn shows other images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from regrpo.agent.actions import ACTION_STOP_STRINGS, reflection_block
from regrpo.agent.image_parts import chat_for
from regrpo.agent.local import LocalPolicy
from regrpo.agent.vision import VisionMessage, VisionPolicy
from regrpo.errors import InputError
from regrpo.learning.records import SFTExample
from regrpo.tools import ImageStore
from regrpo.traces.schema import Completion, Message

__all__ = ["TokenSample", "balanced_weights", "example_samples", "pack_turns", "rollout_sample", "target_ids"]


@dataclass(frozen=True)
class TokenSample:
    """One prompt and the completion tokens that carry loss."""

    prompt_ids: list[int]
    completion_ids: list[int]
    system_tokens: int = 0
    """Leading prompt tokens that are the system message (the same in every sample; see ``LoraTrainer``)."""
    weights: tuple[float, ...] | None = None
    """Per completion token: its weight in the loss, 0 for context (a packed sample holds context
    between its turns, see :func:`pack_turns`). ``None``: every token weighs 1."""
    model_inputs: Mapping[str, torch.Tensor] | None = None
    """The prompt's other model inputs on an engine that takes images (module docstring); ``None``
    for a text engine's sample."""

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.completion_ids:
            raise InputError("a training sample needs at least one prompt token and one completion token")
        if self.weights is not None and len(self.weights) != len(self.completion_ids):
            raise InputError("a sample's loss weights must have one entry per completion token")
        if self.model_inputs is not None and self.system_tokens:
            raise InputError("a sample with model inputs (images) is scored whole: system_tokens must be 0")

    @property
    def loss_tokens(self) -> int:
        """How many completion tokens carry loss."""
        return len(self.completion_ids) if self.weights is None else sum(w > 0 for w in self.weights)

    def token_weights(self) -> tuple[float, ...]:
        """Per completion token: its loss weight (all 1 when no weights were set)."""
        return self.weights if self.weights is not None else (1.0,) * len(self.completion_ids)

    def mask(self) -> tuple[bool, ...]:
        """Per completion token: does it carry loss."""
        return tuple(w > 0 for w in self.token_weights())


def pack_turns(samples: Sequence[TokenSample]) -> list[TokenSample]:
    """Fold consecutive turn samples of one conversation into one sample wherever the ids allow.

    Turn ``k+1`` joins the packed sample when its prompt starts with everything the packed sample
    holds (prompt + completion); the tokens in between (the end-of-turn, the tool's observation, the
    next header) become context and carry no loss. Otherwise it starts a new sample.
    """
    packed: list[TokenSample] = []
    for sample in samples:
        last = packed[-1] if packed else None
        text_only = sample.model_inputs is None and (last is None or last.model_inputs is None)
        if last is not None and text_only and sample.system_tokens == last.system_tokens:
            held = last.prompt_ids + last.completion_ids
            if len(sample.prompt_ids) >= len(held) and sample.prompt_ids[: len(held)] == held:
                between = sample.prompt_ids[len(held) :]
                packed[-1] = TokenSample(
                    last.prompt_ids,
                    last.completion_ids + between + sample.completion_ids,
                    last.system_tokens,
                    last.token_weights() + (0.0,) * len(between) + sample.token_weights(),
                )
                continue
        packed.append(sample)
    return packed


def balanced_weights(
    policy: LocalPolicy | VisionPolicy, text: str, ids: Sequence[int]
) -> tuple[float, ...] | None:
    """Loss weights giving a target's reflection block and its action equal shares of the turn.

    A RoT target is mostly reflection JSON (86 % of the tokens of the first warm start's data), so a
    token mean starves the action, the tokens that solve the task. With ``R`` reflection and ``A``
    action tokens, each reflection token weighs ``(R + A) / 2R`` and each action token
    ``(R + A) / 2A``: the turn's total weight stays ``R + A``. ``None`` for a turn without both parts.
    ``ids`` are :func:`target_ids` of ``text`` (an appended end-of-turn token counts as action).
    """
    block = reflection_block(text)
    if not block:
        return None
    block_end = text.index(block) + len(block)
    offsets = policy.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    in_block = [start < block_end for start, _ in offsets] + [False] * (len(ids) - len(offsets))
    reflection, action = sum(in_block), len(in_block) - sum(in_block)
    if reflection == 0 or action == 0:
        return None
    total = reflection + action
    return tuple(total / (2 * reflection) if inside else total / (2 * action) for inside in in_block)


def target_ids(policy: LocalPolicy | VisionPolicy, text: str) -> list[int]:
    """Token ids of a target assistant turn, ended as a rollout of it would end (module docstring)."""
    ids = list(policy.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not any(text.rstrip().endswith(stop) for stop in ACTION_STOP_STRINGS):
        ids.append(int(policy.tokenizer.eos_token_id))
    return ids


def example_samples(
    policy: LocalPolicy | VisionPolicy,
    example: SFTExample,
    *,
    balance_reflection: bool = False,
    images: ImageStore | None = None,
) -> list[TokenSample]:
    """One sample per trained assistant turn of ``example`` (weights: :func:`balanced_weights`).

    On a :class:`VisionPolicy`, each turn's prompt shows the images its messages name, from
    ``images`` (:func:`regrpo.learning.replay.example_images`; needed when any message names one).
    """
    if isinstance(policy, VisionPolicy) and images is None and any(m.images for m in example.messages):
        raise InputError(
            f"the example for {example.task_id!r} shows images; pass them as images= "
            "(regrpo.learning.replay.example_images rebuilds them)"
        )
    samples = []
    for turn in example.train_turns:
        if not 0 < turn < len(example.messages) or example.messages[turn].role != "assistant":
            raise InputError(
                f"train turn {turn} of an SFT example for {example.task_id!r} is not an assistant turn"
            )
        context = example.messages[:turn]
        text = example.messages[turn].content
        target = target_ids(policy, text)
        weights = balanced_weights(policy, text, target) if balance_reflection else None
        if isinstance(policy, VisionPolicy):
            inputs = policy.encode(chat_for(policy, context, images))
            prompt = [int(i) for i in inputs.pop("input_ids")[0].tolist()]
            samples.append(TokenSample(prompt, target, 0, weights, model_inputs=inputs))
            continue
        prompt = policy.encode_chat(context)
        samples.append(TokenSample(prompt, target, len(policy.system_prefix_ids(context, prompt)), weights))
    return samples


def rollout_sample(
    policy: LocalPolicy | VisionPolicy, messages: Sequence[VisionMessage], completion: Completion
) -> TokenSample:
    """The sample of a sampled completion: its prompt and the token ids the policy generated.

    ``messages``: the chat as the engine was given it (for a :class:`VisionPolicy`, with its image
    parts: :func:`regrpo.agent.image_parts.chat_for`)."""
    if not completion.token_ids:
        raise InputError("the completion has no token ids; RL needs an engine that returns them")
    if isinstance(policy, VisionPolicy):
        if any(isinstance(m, Message) and m.images for m in messages):
            raise InputError(
                "the chat names images its messages showed but holds no image parts, so training would "
                "not see what sampling saw; pass regrpo.agent.image_parts.chat_for(policy, messages, images)"
            )
        inputs = policy.encode(messages)
        prompt_ids = [int(i) for i in inputs.pop("input_ids")[0].tolist()]
        return TokenSample(prompt_ids, list(completion.token_ids), model_inputs=inputs)
    prompt = policy.encode_chat(messages)
    system = len(policy.system_prefix_ids(messages, prompt))
    return TokenSample(prompt, list(completion.token_ids), system)
