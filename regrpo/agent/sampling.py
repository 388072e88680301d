"""What every in-process engine does with ``generate``'s output: sampling arguments, the log-prob of each
sampled token under the distribution it was drawn from, and where a row's sampled tokens end.

Shared by :class:`~regrpo.agent.local.LocalPolicy` (text) and :class:`~regrpo.agent.vision.VisionPolicy`
(images), so both record exactly the tokens the model sampled, with the same log-prob rule (the
``LocalPolicy`` module docstring says why each rule is what it is).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

from regrpo.traces.schema import Completion

__all__ = ["SampledRows", "end_of_turn_ids", "sampled_length", "sampled_logprobs", "sampling_arguments"]


def sampling_arguments(temperature: float) -> dict[str, Any]:
    """``generate`` arguments for plain sampling at ``temperature`` (no top-p, no top-k), or greedy at 0."""
    return (
        {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )


def sampled_logprobs(
    logits: Sequence[torch.Tensor], generated: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Each generated token's log-prob under the distribution it was sampled from: (rows, new_tokens).

    ``logits`` is ``generate``'s tuple of new_tokens tensors of (rows, vocab), raw (before the logits
    processors), so they are scaled by T here; greedy (T = 0) keeps the raw ones.
    """
    stacked = torch.stack(tuple(logits), dim=1).float()  # (rows, new_tokens, vocab)
    logprobs = (stacked / temperature if temperature > 0 else stacked).log_softmax(-1)
    return logprobs.gather(-1, generated.unsqueeze(-1)).squeeze(-1)


def sampled_length(
    tokens: list[int], stop: Sequence[str], end_ids: Collection[int], decode: Callable[[list[int]], str]
) -> int | None:
    """How many leading tokens the model sampled before it stopped, or ``None`` (hit the length limit).

    The first end-of-turn token (one of ``end_ids``) ends the turn and is kept (the model chose it: the
    RL loss needs it). A stop string ends the turn at the token that completes it, which may run past
    it; everything after is ``generate``'s padding, never a sampled token.
    """
    end = next((p + 1 for p, token in enumerate(tokens) if token in end_ids), None)
    searched = tokens[: end - 1] if end is not None else tokens
    if stop and any(s in decode(searched) for s in stop):
        # the shortest prefix whose text holds a stop string (text grows with the prefix)
        low, high = 1, len(searched)
        while low < high:
            middle = (low + high) // 2
            if any(s in decode(searched[:middle]) for s in stop):
                high = middle
            else:
                low = middle + 1
        return low
    return end


def end_of_turn_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """The token ids that end a model's turn: its generation config's ``eos_token_id`` (one or a list)
    and its tokenizer's end-of-sequence id."""
    ids = generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


class SampledRows:
    """What an in-process engine's ``generate`` calls share: their arguments (raw logits returned, the
    sampling rule of :func:`sampling_arguments`) and the cut of each returned row into a
    :class:`Completion`. A mixin over the engine's ``tokenizer``, ``_pad_id`` and ``_end_ids``."""

    tokenizer: Any
    _pad_id: int
    _end_ids: set[int]

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes in this model's tokenizer."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def _generate_arguments(self, temperature: float, stop: Sequence[str] = ()) -> dict[str, Any]:
        """``generate`` keyword arguments: stop strings (if any), padding, raw logits, sampling rule."""
        return {
            "stop_strings": list(stop) or None,
            "tokenizer": self.tokenizer if stop else None,
            "pad_token_id": self._pad_id,
            "return_dict_in_generate": True,
            "output_logits": True,
            **sampling_arguments(temperature),
        }

    def _completion(
        self,
        tokens: list[int],
        logprobs: list[float],
        stop: Sequence[str],
        prompt_tokens: int,
        adapter: str | None,
    ) -> Completion:
        """Cut one row after its last sampled token: the one completing a stop string, or end-of-turn."""
        keep = sampled_length(tokens, stop, self._end_ids, self._decode)
        if keep is not None:
            tokens, logprobs = tokens[:keep], logprobs[:keep]
        return Completion(
            text=self._decode(tokens),
            token_ids=tokens,
            logprobs=logprobs,
            finish_reason="stop" if keep is not None else "length",
            prompt_tokens=prompt_tokens,
            adapter=adapter,
        )
