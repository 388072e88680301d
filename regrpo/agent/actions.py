"""Parsing a model's turn into an action, and a reflection block into a ``Reflection``.

The action format is the Qwen/Hermes convention::

    <tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>
    <answer>391</answer>

Parsing is lenient about *form* — text around the tags, a missing closing tag at the end of the
turn, single-quoted Python-style dicts, ``arguments`` given as a JSON string or under
``parameters`` — because a 135M model is sloppy. It never guesses *content*: no tags, two actions,
a missing tool name or arguments that are not an object make the turn :class:`Unparseable`, with a
reason the model is shown.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from regrpo.errors import ErrorType
from regrpo.traces.schema import Action, Answer, Reflection, ToolCall, Unparseable

__all__ = ["ACTION_STOP_STRINGS", "parse_action", "parse_reflection", "reflection_block", "split_reflection"]

ACTION_STOP_STRINGS = ("</tool_call>", "</answer>")
"""Generation stops after either closing tag: one action per turn."""

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
_REFLECTION = re.compile(r"<reflection>(.*?)</reflection>", re.DOTALL)
_UNCLOSED_REFLECTION = re.compile(r"<reflection>(.*?)(?=<tool_call>|<answer>|$)", re.DOTALL)


def _load_object(text: str) -> Any:
    """The first ``{...}`` value in ``text``: strict JSON first, then a Python literal (single quotes)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
        return value
    except json.JSONDecodeError as json_error:
        end = text.rfind("}")
        try:
            return ast.literal_eval(text[start : end + 1])  # literals only: never executes code
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(str(json_error)) from None


def _tool_call(body: str) -> Action:
    try:
        call = _load_object(body)
    except ValueError as exc:
        return Unparseable(f"the <tool_call> does not hold a JSON object ({exc})")
    if not isinstance(call, dict):
        return Unparseable('the <tool_call> must hold a JSON object with "name" and "arguments"')
    name = call.get("name")
    if not isinstance(name, str) or not name.strip():
        return Unparseable('the <tool_call> object has no "name" string')
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # the OpenAI wire format sends arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return Unparseable(f"the arguments of {name!r} are a string that is not a JSON object")
    if not isinstance(arguments, dict):
        return Unparseable(f"the arguments of {name!r} must be a JSON object, got {type(arguments).__name__}")
    return ToolCall(name=name.strip(), arguments=arguments)


def parse_action(text: str) -> Action:
    """The one action in a model turn (reflection blocks are ignored), or :class:`Unparseable` saying why."""
    _, text = split_reflection(text)
    calls = _TOOL_CALL.findall(text)
    answers = _ANSWER.findall(text)
    if len(calls) + len(answers) > 1:
        return Unparseable(
            f"found {len(calls)} <tool_call> and {len(answers)} <answer> blocks; "
            "send exactly one action per turn"
        )
    if calls:
        return _tool_call(calls[0])
    if answers:
        answer = answers[0].strip()
        return Answer(answer) if answer else Unparseable("the <answer> is empty")
    return Unparseable("no <tool_call>...</tool_call> or <answer>...</answer> found in the reply")


def split_reflection(text: str) -> tuple[str | None, str]:
    """``(reflection block body or None, the text outside it)``.

    The block ends after its JSON object (so tags quoted inside the evidence do not end it), else at
    ``</reflection>``, else before the action's tag.
    """
    start = text.find("<reflection>")
    if start < 0:
        return None, text
    opened = start + len("<reflection>")
    brace = text.find("{", opened)
    if brace >= 0 and not text[opened:brace].strip():
        try:
            _, length = json.JSONDecoder().raw_decode(text[brace:])
        except json.JSONDecodeError:
            pass
        else:
            body_end = end = brace + length
            rest = text[end:].lstrip()
            if rest.startswith("</reflection>"):
                end = len(text) - len(rest) + len("</reflection>")
            return text[opened:body_end], text[:start] + text[end:]
    match = _REFLECTION.search(text, start) or _UNCLOSED_REFLECTION.search(text, start)
    assert match is not None  # _UNCLOSED_REFLECTION matches any text from the tag on
    return match.group(1), text[:start] + text[match.end() :]


def reflection_block(text: str) -> str:
    """The whole ``<reflection>...</reflection>`` block of a turn (tags included), or ``""``.

    What the reflection cost counts: every token the model spent reflecting, not just the JSON fields.
    """
    body, outside = split_reflection(text)
    if body is None:
        return ""
    start = text.find("<reflection>")
    # split_reflection returns text[:start] + text[end:], so the block is text[start:end]
    end = start + len(text) - len(outside)
    return text[start:end]


_ERROR_TYPES = {re.sub(r"[^a-z]", "", e.value.lower()): e for e in ErrorType}


def _error_type(value: Any) -> ErrorType | None:
    """Match an error type leniently in form: ``ArgInvalid``, ``arg_invalid`` and ``ARG-INVALID`` agree."""
    return _ERROR_TYPES.get(re.sub(r"[^a-z]", "", str(value).lower())) if value is not None else None


_WORD = re.compile(r"[A-Za-z0-9_.']+")


def is_grounded(evidence: str, observation: str) -> bool:
    """Whether ``evidence`` quotes ``observation``: ReGRPO's grounding gate (``schema.py`` in its code).

    Grounded when a token of at least 4 characters from the observation appears in the evidence, or
    at least two tokens are shared (case-insensitive). Generic words of the prompt do not count.
    """
    generic = {"error", "failed", "tool", "the", "observation", "action", "output"}
    obs_tokens = {t.lower() for t in _WORD.findall(observation)} - generic
    ev_tokens = {t.lower() for t in _WORD.findall(evidence)} - generic
    shared = obs_tokens & ev_tokens
    return any(len(t) >= 4 for t in shared) or len(shared) >= 2


def parse_reflection(text: str, observation: str) -> tuple[Reflection | None, str | None]:
    """Parse a turn's ``<reflection>{...}</reflection>``; returns ``(reflection, problem)``.

    ``problem`` is ``None`` for a valid, grounded reflection. A reflection whose evidence does not
    quote ``observation`` is still returned, with the problem recorded.
    """
    start = text.find("<reflection>")
    if start < 0:
        return None, "missing: no <reflection> block before the action"
    try:
        # decode from the tag on, not the regex body: a quoted observation may itself contain tags
        fields = _load_object(text[start + len("<reflection>") :])
    except ValueError as exc:
        return None, f"the <reflection> does not hold a JSON object ({exc})"
    if not isinstance(fields, dict):
        return None, "the <reflection> must hold a JSON object"
    error_type = _error_type(fields.get("error_type"))
    if error_type is None:
        return None, f"unknown error_type {fields.get('error_type')!r}"
    evidence, fix_plan = fields.get("evidence"), fields.get("fix_plan")
    if not isinstance(evidence, str) or not evidence.strip():
        return None, 'the reflection has no "evidence" string'
    if not isinstance(fix_plan, str) or not fix_plan.strip():
        return None, 'the reflection has no "fix_plan" string'
    reflection = Reflection(error_type=error_type, evidence=evidence.strip(), fix_plan=fix_plan.strip())
    if not is_grounded(reflection.evidence, observation):
        return reflection, "the evidence does not quote the failure observation"
    return reflection, None
