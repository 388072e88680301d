"""Writing the target reflection after a failure: a short grounded quote, one short fix, then the action.

A RoT target turn is ``<reflection>{"error_type", "evidence", "fix_plan"}</reflection>`` followed by
the good action. The runtime generates it under a small token budget and stops at the first
``</tool_call>`` (:mod:`regrpo.learning.budget`), and the grounded evidence is already in the prompt
(the runtime's reflection request lists the error, the action and the images), so the reflection is
kept short:

* ``error_type`` — :func:`~regrpo.learning.classify.classify_failure` of the real observation;
* ``evidence`` — a few words (at most :data:`QUOTE_WORDS`) quoted from the tool's *message*, with
  tags written as bare names (``tool_call``, never ``<tool_call>``), so the quote never holds a stop
  string and never depends on how the observation text names the error type;
* ``fix_plan`` — one short sentence, in words, with no tags: the change from the failed action to
  the good one (``call ocr, not count``; ``add the image argument``), or, when the good action *is*
  the failed one (a transient fault), that the call was right and is retried unchanged.

Each part has a few phrasings, picked by ``variant`` (the data engine derives it from the example's
identity), so a model does not learn one template. ``brevity`` 1 and 2 drop to the quote alone (5,
then 2 words, the latter from a word without digits) and the shortest fix phrasing (at 2 a box fix
names the image's size, not the coordinates), for a turn whose action leaves little of the budget
(SmolLM2's tokenizer spends a token per digit: a crop call on a large image is 55 tokens by itself).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from regrpo.agent.actions import is_grounded, parse_action, parse_reflection
from regrpo.errors import ErrorType, InputError
from regrpo.learning.budget import tag_free
from regrpo.learning.classify import classify_failure
from regrpo.learning.near_miss import call_text
from regrpo.tools import ImageInfo
from regrpo.traces.schema import Action, Answer, Observation, ToolCall, Unparseable

__all__ = ["MAX_BREVITY", "QUOTE_WORDS", "action_text", "evidence", "fix_plan", "reflection_turn"]

QUOTE_WORDS = (10, 5, 2)
"""Most words of the tool's message an evidence quotes, per ``brevity`` (0, 1, 2); the two-word quote
starts at a word without digits where one grounds it (a box's coordinates cost a token per digit)."""
MAX_BREVITY = len(QUOTE_WORDS) - 1

# A quote is set off by a colon and ends the sentence, with no quote marks or full stop around it:
# the grounding gate's words include ' and . (``null.`` is not ``null``), and a double quote would
# cost a JSON escape.
_FAILED = ("The tool said: {q}", "It reported: {q}", "The response was: {q}", "Tool reply: {q}")
_EMPTY = ("{name} returned only {q}", "{name} gave back {q}", "Only {q} came back")
_UNPARSEABLE = ("My reply could not be used: {q}", "The parser said: {q}", "Rejected: {q}")
_TERSE = "{q}"
"""The terse evidence: the quote alone."""
_RETRY = {
    ErrorType.TIMEOUT: (
        "the call was right but timed out; retry it unchanged",
        "a timeout is transient: run the same call again",
        "retry the identical call",
    ),
    ErrorType.TOOL_CRASH: (
        "the tool crashed, not my call; retry it unchanged",
        "a crash is transient: run the same call again",
        "retry the identical call",
    ),
}
_RETRY_OTHER = (
    "the call was right but came back empty; retry it as is",
    "run the same call once more",
    "retry the identical call",
)
_UNPARSEABLE_FIX = (
    "write one {name} call as valid JSON with name and arguments",
    "send exactly one well-formed {name} call",
    "fix the format: one {name} call in valid JSON",
)
_ANSWER_FIX = ("stop calling tools and answer", "I have what I need: answer now", "give the final answer")
_OTHER_TOOL = (
    "call {good}, not {bad}",
    "use {good} instead of {bad}",
    "{bad} is the wrong tool; call {good}",
)


def _pick(options: Sequence[str], variant: int, brevity: int) -> str:
    """The ``variant``-th phrasing, or the shortest one when ``brevity`` is above 0."""
    return min(options, key=len) if brevity else options[variant % len(options)]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _quote(text: str, words: int, *, keep_tag_names: bool = True) -> str:
    """``words`` words of ``text``, from the first one the grounding gate accepts (a short quote of
    ``"ocr failed: OSError: ..."`` starts at ``OSError:``), tags as bare names, double quotes dropped."""
    parts = tag_free(text, keep_names=keep_tag_names).replace('"', "").split()
    grounded = [i for i, part in enumerate(parts) if is_grounded(part, text)]
    wordy = [i for i in grounded if not any(ch.isdigit() for ch in parts[i])]
    start = (wordy or grounded or [0])[0] if words <= 2 else (grounded or [0])[0]
    start = min(start, max(0, len(parts) - words))  # a full window where the text allows
    window = parts[start : start + words]
    return ("... " if start else "") + " ".join(window) + (" ..." if start + words < len(parts) else "")


def _empty_output(output: Any) -> str:
    """An empty output in words the observation holds: ``empty text and lines``, ``null``, ``[]``."""
    if isinstance(output, dict) and output:
        return "empty " + " and ".join(str(key) for key in output)
    return _compact(output)


def action_text(action: ToolCall | Answer) -> str:
    """The assistant turn that takes ``action`` (``<tool_call>...</tool_call>`` or ``<answer>``)."""
    return call_text(action) if isinstance(action, ToolCall) else f"<answer>{action.text}</answer>"


def evidence(action: Action, observation: Observation, variant: int = 0, brevity: int = 0) -> str:
    """A short sentence quoting the observation (what ``is_grounded`` checks), with no tags.

    The tool's message is quoted where it grounds the evidence; an empty or generic one falls back to
    quoting the observation text itself. Raises ``InputError`` when nothing in the observation can
    ground a quote (a bare ``Error:``): no reflection could pass the grounding gate there.
    """
    words = QUOTE_WORDS[brevity]
    name = action.name if isinstance(action, ToolCall) else "the call"
    options: Sequence[str]
    if isinstance(action, Unparseable):
        options, quoted = _UNPARSEABLE, _quote(observation.error_message, words)
    elif not observation.ok:
        options, quoted = _FAILED, _quote(observation.error_message, words)
    else:
        options, quoted = _EMPTY, _quote(_empty_output(observation.output), words)
    text = (
        _TERSE.format(q=quoted) if brevity else _pick(options, variant, brevity).format(name=name, q=quoted)
    )
    if is_grounded(text, observation.content):
        return text
    fallback = f"The observation was: {_quote(observation.content, words, keep_tag_names=False)}"
    if not is_grounded(fallback, observation.content):
        raise InputError(
            f"the observation {observation.content[:120]!r} holds nothing a reflection can quote "
            "(no word the grounding gate accepts)"
        )
    return fallback


def _size_of(images: Sequence[ImageInfo], image_id: Any) -> str:
    info = next((i for i in images if i.image_id == image_id), None)
    return f"the {info.width}x{info.height} {image_id}" if info else f"{image_id}"


def _argument_change(
    key: str,
    bad: Any,
    good: Any,
    good_args: Mapping[str, Any],
    images: Sequence[ImageInfo],
    brevity: int = 0,
) -> str:
    if bad is None:
        return f"add the {key} argument"
    if good is None:
        return f"drop the {key} argument"
    if key in ("box", "region"):
        # at the tersest, the coordinates are left to the call itself (SmolLM2 spends a token a digit)
        where = _size_of(images, good_args.get("image"))
        return (
            f"use a {key} inside {where}"
            if brevity >= MAX_BREVITY
            else f"use {key} {_compact(good)} inside {where}"
        )
    if key == "image":
        return f"use image {good}, which exists"
    if type(bad) is not type(good):
        kind = {list: "list", str: "string", int: "number", float: "number"}.get(
            type(good), type(good).__name__
        )
        return f"pass {key} as a {kind}"
    # at the tersest the value is left to the call itself (a long expression would not fit twice)
    return f"correct the {key} argument" if brevity >= MAX_BREVITY else f"use {key} {_compact(good)}"


def fix_plan(
    bad: Action,
    good: ToolCall | Answer,
    images: Sequence[ImageInfo] = (),
    *,
    error_type: ErrorType | None = None,
    variant: int = 0,
    brevity: int = 0,
) -> str:
    """The change from the failed action to the good one, in one short sentence with no tags.

    ``error_type`` only shapes the wording of a retry (the good action equal to the failed one).
    """
    if not isinstance(good, ToolCall):
        return _pick(_ANSWER_FIX, variant, brevity)
    if isinstance(bad, Unparseable) or not isinstance(bad, ToolCall):
        return _pick(_UNPARSEABLE_FIX, variant, brevity).format(name=good.name)
    if bad.name != good.name:
        return _pick(_OTHER_TOOL, variant, brevity).format(good=good.name, bad=bad.name)
    keys = list(dict.fromkeys([*good.arguments, *bad.arguments]))
    changes = [
        _argument_change(k, bad.arguments.get(k), good.arguments.get(k), good.arguments, images, brevity)
        for k in keys
        if bad.arguments.get(k) != good.arguments.get(k)
    ]
    if not changes:
        return _pick(_RETRY.get(error_type, _RETRY_OTHER) if error_type else _RETRY_OTHER, variant, brevity)
    return "; ".join(changes[:1] if brevity else changes)


def reflection_turn(
    action: Action,
    observation: Observation,
    good: ToolCall | Answer,
    images: Sequence[ImageInfo] = (),
    *,
    variant: int = 0,
    brevity: int = 0,
) -> tuple[str, ErrorType]:
    """The target assistant turn after a failure: ``<reflection>{...}</reflection>`` + the good action.

    ``brevity`` (0 to ``MAX_BREVITY``) shortens the evidence and the fix plan (see the module docstring).

    Raises ``InputError`` if the observation shows no failure or holds nothing to quote,
    ``AssertionError`` if the turn would
    not parse as a grounded reflection and the good action (a bug in this module, never bad data).
    """
    error_type = classify_failure(action, observation)
    if error_type is None:
        raise InputError(
            f"the observation {observation.content[:120]!r} shows no failure; nothing to reflect on"
        )
    body = {
        "error_type": error_type.value,
        "evidence": evidence(action, observation, variant, brevity),
        "fix_plan": fix_plan(action, good, images, error_type=error_type, variant=variant, brevity=brevity),
    }
    text = f"<reflection>{json.dumps(body, ensure_ascii=False)}</reflection>\n{action_text(good)}"
    reflection, problem = parse_reflection(text, observation.content)
    if problem is not None or reflection is None or reflection.error_type is not error_type:
        raise AssertionError(f"built an invalid reflection ({problem}): {text}")
    if parse_action(text) != good:
        raise AssertionError(f"the reflection turn does not parse back to the good action: {text}")
    return text, error_type
