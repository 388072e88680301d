"""Fault injection: wrap any tools so they fail at configured rates, reproducibly from a seed.

Recovery can only be trained and measured if failures happen at known rates. :func:`inject_faults`
wraps tools (names, descriptions, schemas and validation unchanged) so each call may fail in one of
five ways, each made to look exactly like the real failure to the model and to the runtime:

=============  ==================================================================================
``timeout``    raises ``ToolError(kind=Timeout)`` with the Toolbox's own deadline message
               (``"<name> did not finish within <t> s"``), at once instead of after waiting.
``crash``      raises an ordinary exception, which the Toolbox reports as ``ToolCrash``
               (``"<name> failed: RuntimeError: ..."``), as for a tool's own bug.
``empty``      runs the tool and empties its output, keeping its shape (strings ``""``, lists
               ``[]``, numbers in a dict 0; a bare number becomes ``None``): ``{"text": "", "lines":
               []}`` for ocr, exactly what it returns when nothing is found.
``garbled``    runs the tool and corrupts about a third (at least one) of the characters of every
               string and the digits of every number in its output (keys kept), like a bad decode.
``wrong_region`` for calls with a ``box`` or ``region`` argument, runs the tool on that box moved by
               half to one box size in a random direction (GroundingDrift: the right tool looking
               in the wrong place); calls without one pass through untouched, so this kind's
               effective rate is lower than configured on tools that take no box.
=============  ==================================================================================

Determinism: whether and how a call fails is a pure function of ``(seed, episode key, tool name,
canonical JSON of the validated arguments, occurrence index)``, hashed with BLAKE2b. The episode key
(``ToolContext.episode_key``, a digest of the task text and input images) makes the draws of one task
independent of another's, so the first ``ocr`` of ``img_0`` in every task does not share one draw
(without it, a rate of 0.2 injected 7 % of calls in a 60-task evaluation), while two methods run on
the same task still meet the same faults. The occurrence index counts earlier identical calls in the
same episode (the same ``ToolContext.images`` store), so a retried identical call gets a fresh draw,
and results do not depend on thread scheduling or on calls made in other episodes.
:class:`FaultCounts` tallies what was injected, per kind.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from regrpo.errors import ErrorType, InputError
from regrpo.tools.base import FunctionTool, Tool, ToolContext
from regrpo.tools.errors import ToolError

__all__ = ["FAULT_KINDS", "FaultConfig", "FaultCounts", "FaultKind", "FaultyTool", "inject_faults"]

FaultKind = Literal["timeout", "crash", "empty", "garbled", "wrong_region"]
FAULT_KINDS: tuple[FaultKind, ...] = ("timeout", "crash", "empty", "garbled", "wrong_region")

_CRASHES: tuple[tuple[type[Exception], str], ...] = (
    (RuntimeError, "worker process exited unexpectedly"),
    (OSError, "[Errno 5] Input/output error"),
    (ValueError, "buffer size does not match the array shape"),
    (MemoryError, "cannot allocate memory for the result"),
)
_GARBLE_CHARS = "#@%&*?~^!$0123456789abcdefxyz"
_REGION_ARGUMENTS = ("box", "region")


@dataclass(frozen=True)
class FaultConfig:
    """How often each kind of fault happens (probabilities per call) and the seed that decides which calls.

    Give either ``rate`` (the total, split evenly over the five kinds) or per-kind rates, not both.

    Args:
        rate: Total fault probability per call, spread evenly over the five kinds.
        timeout: Probability of a ``Timeout``.
        crash: Probability of a ``ToolCrash``.
        empty: Probability of an emptied output.
        garbled: Probability of a garbled output.
        wrong_region: Probability of running on a moved box (calls with a box only).
        seed: Decides which calls fail; the same seed reproduces the same faults.
        timeout_s: Deadline quoted in timeout messages for tools with no ``timeout_s`` of their own;
            keep it equal to the Toolbox's ``default_timeout_s`` (30 s by default).
    """

    rate: float | None = None
    timeout: float = 0.0
    crash: float = 0.0
    empty: float = 0.0
    garbled: float = 0.0
    wrong_region: float = 0.0
    seed: int = 0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        per_kind = [getattr(self, kind) for kind in FAULT_KINDS]
        if self.rate is not None and any(per_kind):
            raise InputError("give FaultConfig either rate= or per-kind rates, not both")
        if any(not 0 <= p <= 1 for p in [*per_kind, self.rate or 0.0]):
            raise InputError(f"fault rates must be probabilities in [0, 1], got {self}")
        if sum(self.rates().values()) > 1 + 1e-9:
            raise InputError(f"fault rates add up to {sum(self.rates().values()):g}, more than 1")
        if self.timeout_s <= 0:
            raise InputError(f"timeout_s must be positive, got {self.timeout_s}")

    def rates(self) -> dict[FaultKind, float]:
        """The probability of each kind per call."""
        if self.rate is not None:
            return {kind: self.rate / len(FAULT_KINDS) for kind in FAULT_KINDS}
        return {kind: float(getattr(self, kind)) for kind in FAULT_KINDS}


class FaultCounts:
    """Thread-safe tally of calls seen and faults injected, per kind (shared by all wrapped tools)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: Counter[str] = Counter()
        self._calls = 0

    def record(self, kind: FaultKind | None) -> None:
        with self._lock:
            self._calls += 1
            if kind is not None:
                self._faults[kind] += 1

    @property
    def calls(self) -> int:
        """Calls that reached a wrapped tool."""
        return self._calls

    def __getitem__(self, kind: FaultKind) -> int:
        with self._lock:
            return self._faults[kind]

    def as_dict(self) -> dict[str, int]:
        """``{kind: faults injected}`` for every kind, zeros included."""
        with self._lock:
            return {kind: self._faults[kind] for kind in FAULT_KINDS}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._faults.values())


def _draw(
    seed: int, episode_key: str, name: str, arguments: Mapping[str, Any], occurrence: int
) -> tuple[float, int]:
    """A uniform number in [0, 1) and a 64-bit seed, both a pure function of the call's identity."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(
        f"{seed}\x1f{episode_key}\x1f{name}\x1f{canonical}\x1f{occurrence}".encode(), digest_size=16
    ).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big")


def _emptied(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _emptied(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return []
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return type(value)(0)
    return value


def _corrupt(chars: list[str], positions: list[int], alphabet: str, rng: np.random.Generator) -> str:
    """Replace about a third of ``positions`` (at least one) with a different character of ``alphabet``."""
    chosen = [i for i in positions if rng.random() < 1 / 3]
    if positions and not chosen:
        chosen = [positions[int(rng.integers(len(positions)))]]
    for i in chosen:
        options = alphabet.replace(chars[i], "")
        chars[i] = options[int(rng.integers(len(options)))]
    return "".join(chars)


def _garbled(value: Any, rng: np.random.Generator) -> Any:
    """``value`` with every string and number corrupted (keys, types and lengths kept)."""
    if isinstance(value, dict):
        return {key: _garbled(item, rng) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_garbled(item, rng) for item in value]
    if isinstance(value, str):
        chars = list(value)
        return _corrupt(chars, [i for i, c in enumerate(chars) if not c.isspace()], _GARBLE_CHARS, rng)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    chars = list(repr(value))
    return type(value)(_corrupt(chars, [i for i, c in enumerate(chars) if c.isdigit()], "0123456789", rng))


def _moved_box(box: list[int], rng: np.random.Generator) -> list[int]:
    """``box`` shifted by 0.5-1.0 of its own width and height, in a random direction on each axis."""
    x1, y1, x2, y2 = box
    dx = round((x2 - x1) * rng.uniform(0.5, 1.0)) * (1 if rng.random() < 0.5 else -1)
    dy = round((y2 - y1) * rng.uniform(0.5, 1.0)) * (1 if rng.random() < 0.5 else -1)
    return [x1 + dx, y1 + dy, x2 + dx, y2 + dy]


class FaultyTool:
    """A :class:`Tool` that behaves like ``inner`` except for the faults ``config`` injects."""

    def __init__(self, inner: Tool, config: FaultConfig, counts: FaultCounts) -> None:
        self.inner = inner
        self.config = config
        self.counts = counts
        self.name = inner.name
        self.description = inner.description
        self.timeout_s = inner.timeout_s
        self._rates = config.rates()
        self._lock = threading.Lock()
        self._seen: weakref.WeakKeyDictionary[Any, Counter[str]] = weakref.WeakKeyDictionary()

    def parameters_schema(self) -> dict[str, Any]:
        return self.inner.parameters_schema()

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return self.inner.validate(arguments)

    def _occurrence(self, context: ToolContext, key: str) -> int:
        with self._lock:
            seen = self._seen.setdefault(context.images, Counter())
            occurrence = seen[key]
            seen[key] += 1
            return occurrence

    def choose(
        self, arguments: Mapping[str, Any], occurrence: int, episode_key: str = ""
    ) -> tuple[FaultKind | None, int]:
        """The fault (or ``None``) for this call's identity, and the seed that shapes it."""
        # whether it fails depends on the episode; how (the crash's message, the garbling) only on the
        # call, so the data engine's fault examples (no episode) show exactly what the runtime shows
        u, _ = _draw(self.config.seed, episode_key, self.name, arguments, occurrence)
        _, shape_seed = _draw(self.config.seed, "", self.name, arguments, occurrence)
        cumulative = 0.0
        for kind in FAULT_KINDS:
            cumulative += self._rates[kind]
            if u < cumulative:
                return kind, shape_seed
        return None, shape_seed

    def invoke(self, arguments: Mapping[str, Any], context: ToolContext) -> Any:
        key = json.dumps(arguments, sort_keys=True, default=str)
        kind, shape_seed = self.choose(arguments, self._occurrence(context, key), context.episode_key)
        rng = np.random.default_rng(shape_seed)
        if kind == "wrong_region":
            region_arg = next((a for a in _REGION_ARGUMENTS if isinstance(arguments.get(a), list)), None)
            if region_arg is None:
                kind = None  # nothing to misplace: the call runs as it is
            else:
                arguments = {**arguments, region_arg: _moved_box(list(arguments[region_arg]), rng)}
        self.counts.record(kind)
        if kind == "timeout":
            timeout_s = self.timeout_s or self.config.timeout_s
            raise ToolError(f"{self.name} did not finish within {timeout_s:g} s", ErrorType.TIMEOUT)
        if kind == "crash":
            exc_type, message = _CRASHES[int(rng.integers(len(_CRASHES)))]
            raise exc_type(message)
        output = self.inner.invoke(arguments, context)
        if kind == "empty":  # a bare number or flag has no empty form of its own: nothing at all
            return _emptied(output) if isinstance(output, (dict, list, tuple, str)) else None
        if kind == "garbled":
            return _garbled(output, rng)
        return output

    def __repr__(self) -> str:
        return f"FaultyTool({self.inner!r}, {self.config!r})"


def inject_faults(
    tools: Iterable[Tool | Callable[..., Any]], config: FaultConfig, counts: FaultCounts | None = None
) -> list[Tool]:
    """Wrap ``tools`` so they fail as ``config`` says; all share ``counts`` (a new one if not given).

    The returned tools keep their names and schemas; read the tally from ``counts`` or from any
    wrapped tool's ``.counts``.
    """
    shared = counts if counts is not None else FaultCounts()
    wrapped: list[Tool] = []
    for item in tools:
        inner: Tool = item if isinstance(item, Tool) else FunctionTool(item)
        wrapped.append(FaultyTool(inner, config, shared))
    return wrapped
