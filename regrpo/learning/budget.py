"""What a training target may hold: the generation budget and the stop strings, checked at build time.

A target turn is imitated token by token and then *generated* by the runtime under two hard limits:

* **the token budget** — the runtime stops a turn after ``max_new_tokens``: 112 in the demo
  (``regrpo demo``), 128 in the evaluation (``EvalOptions``) and in ReGRPO (``ReGRPOConfig``). A
  target longer than the smallest of them teaches a turn the runtime cuts off before its action;
* **the stop strings** — generation ends at the first ``</tool_call>`` or ``</answer>``
  (:data:`~regrpo.agent.actions.ACTION_STOP_STRINGS`). A reflection that quotes one ends the turn
  mid-reflection, before its action.

So every target must end with its action's closing tag, hold no stop string before it, hold no
action or reflection tag inside the reflection body (:data:`TAGS`), and fit the budget in the policy
tokenizer's tokens. :func:`check_target` raises :class:`~regrpo.errors.InputError` naming the
example when one does not: it is the data engine's bug, caught before a model learns it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from regrpo.agent.actions import ACTION_STOP_STRINGS, split_reflection
from regrpo.errors import InputError

__all__ = [
    "DEFAULT_TARGET_TOKENS",
    "TAGS",
    "TokenCounter",
    "check_target",
    "policy_token_counter",
    "tag_free",
    "token_percentiles",
]

DEFAULT_TARGET_TOKENS = 112
"""The smallest ``max_new_tokens`` the runtime uses (the demo's; evaluation and ReGRPO use 128)."""

TAGS = ("tool_call", "answer", "reflection", "tool_response")
"""Tag names no reflection body may write, open or closed (``<tool_call>``, ``</answer>``, ...)."""

_TAG = re.compile(r"</?\s*(" + "|".join(TAGS) + r")\s*>", re.IGNORECASE)

TokenCounter = Callable[[str], int]
"""Number of policy tokens a text takes (no special tokens)."""


def tag_free(text: str, *, keep_names: bool = True) -> str:
    """``text`` with every action/reflection/response tag written as its bare name, whitespace collapsed.

    ``"the <tool_call> does not hold"`` becomes ``"the tool_call does not hold"``: still a quote of the
    message (the grounding gate reads ``tool_call`` in both), but no longer a tag or a stop string.
    ``keep_names=False`` drops the tags altogether (for a wrapper such as ``<tool_response>``).
    """
    return " ".join(_TAG.sub(lambda match: f" {match.group(1)} " if keep_names else " ", text).split())


@functools.cache
def policy_token_counter(model: str = "SmolLM2-135M-Instruct", cache_dir: Path | None = None) -> TokenCounter:
    """The policy tokenizer's counter (loads the offline model's cached folder, building it once)."""
    from transformers import AutoTokenizer

    from regrpo.agent.model_files import resolve_model_dir

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(model, cache_dir))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def check_target(text: str, name: str, count_tokens: TokenCounter, budget: int) -> int:
    """The target's length in tokens; raises ``InputError`` naming ``name`` if the runtime would cut it.

    Cut means: longer than ``budget`` tokens, a stop string before the end (generation would stop
    there), no stop string at the end (nothing would stop it), or a tag inside the reflection body.
    """
    stops = [(text.find(s), s) for s in ACTION_STOP_STRINGS if s in text]
    first_at, first = min(stops) if stops else (-1, "")
    if first_at < 0 or first_at + len(first) != len(text.rstrip()):
        where = f"{first!r} at character {first_at}" if stops else "no stop string"
        raise InputError(
            f"{name}: generation would not stop at the end of its target ({where}, "
            f"{len(text)} characters): {text[:200]!r}"
        )
    body, _ = split_reflection(text)
    if body is not None and _TAG.search(body):
        raise InputError(f"{name}: its reflection quotes a tag ({_TAG.search(body)}): {body[:200]!r}")
    tokens = count_tokens(text)
    if tokens > budget:
        raise InputError(
            f"{name}: its target is {tokens} tokens, over the budget of {budget} "
            f"(the runtime would cut it before its action): {text[:200]!r}"
        )
    return tokens


def token_percentiles(lengths: Sequence[int]) -> dict[str, int]:
    """``{"p50", "p90", "p99", "max"}`` of ``lengths`` (nearest-rank percentiles; zeros if empty)."""
    ordered = sorted(lengths)
    if not ordered:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}

    def rank(q: float) -> int:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ordered[-1]}
