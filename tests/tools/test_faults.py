"""Fault injection: configured rates, reproducible from the seed, faults that look like real failures."""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from regrpo.errors import ErrorType, InputError
from regrpo.tools import ImageStore, Toolbox, ToolContext, tool
from regrpo.tools.calculator import calculator
from regrpo.tools.faults import FAULT_KINDS, FaultConfig, FaultCounts, FaultyTool, inject_faults
from regrpo.tools.image_ops import Box, crop


@tool
def describe(word: str, box: Box) -> dict[str, Any]:
    """Say a word and the box it was asked about.

    Args:
        word: Any word.
        box: Any box.
    """
    return {"word": word * 3, "box": box, "area": (box[2] - box[0]) * (box[3] - box[1]), "tags": ["x", "y"]}


def _context() -> ToolContext:
    return ToolContext(images=ImageStore())


def _outcome_kind(wrapped: FaultyTool, arguments: dict[str, Any], context: ToolContext) -> str:
    """Run one call directly and classify what came back."""
    real = wrapped.inner.invoke(arguments, context)
    try:
        output = wrapped.invoke(arguments, context)
    except Exception as exc:  # the Toolbox turns these into Timeout / ToolCrash observations
        return "timeout" if getattr(exc, "kind", None) == ErrorType.TIMEOUT else "crash"
    if output == real:
        return "none"
    if output["word"] == "":
        return "empty"
    if output["word"] != real["word"]:
        return "garbled"
    return "wrong_region"  # the right word about another box


def test_each_kind_happens_at_its_configured_rate():
    counts = FaultCounts()
    (wrapped,) = inject_faults([describe], FaultConfig(rate=0.5, seed=11), counts)
    assert isinstance(wrapped, FaultyTool)
    n = 4000
    context = _context()
    seen = [
        _outcome_kind(wrapped, {"word": f"word{i}", "box": [0, 0, 10 + i % 7, 10]}, context) for i in range(n)
    ]
    p = 0.5 / len(FAULT_KINDS)
    tolerance = 4.5 * (n * p * (1 - p)) ** 0.5  # a 4.5-sigma binomial band: a real bias fails it
    for kind in FAULT_KINDS:
        assert abs(seen.count(kind) - n * p) < tolerance, (kind, seen.count(kind))
        assert counts[kind] == seen.count(kind)  # the tally agrees with what the calls did
    assert counts.calls == n and counts.total == n - seen.count("none")


def test_per_kind_rates_and_wrong_region_passing_through_tools_without_a_box():
    counts = FaultCounts()
    (wrapped,) = inject_faults([calculator], FaultConfig(wrong_region=0.6, garbled=0.2, seed=3), counts)
    context = _context()
    outputs = [wrapped.invoke({"expression": f"{i} + 1"}, context) for i in range(1000)]
    assert counts["wrong_region"] == 0  # calculator takes no box: those calls run as they are
    assert counts["timeout"] == counts["crash"] == counts["empty"] == 0
    garbled = sum(out != i + 1 for i, out in enumerate(outputs))
    assert garbled == counts["garbled"] and abs(garbled - 200) < 4.5 * (1000 * 0.2 * 0.8) ** 0.5


def test_same_seed_same_faults_other_seed_other_faults_whatever_the_thread_order():
    calls = [{"word": f"word{i % 40}", "box": [0, 0, 5, 5]} for i in range(400)]  # each repeated 10 times

    def run(seed: int, workers: int, shuffle: int | None) -> list[tuple[str, int, str]]:
        (wrapped,) = inject_faults([describe], FaultConfig(rate=0.6, seed=seed))
        assert isinstance(wrapped, FaultyTool)
        context = _context()
        order = list(range(len(calls)))
        if shuffle is not None:
            random.Random(shuffle).shuffle(order)
        lock, results = threading.Lock(), []

        def one(i: int) -> None:
            kind = _outcome_kind(wrapped, calls[i], context)
            with lock:
                results.append((calls[i]["word"], kind))

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, order))
        # Faults per word in occurrence order do not depend on which thread ran which call.
        per_word: dict[str, list[str]] = {}
        for word, kind in results:
            per_word.setdefault(word, []).append(kind)
        return sorted((w, len(k), ",".join(sorted(k))) for w, k in per_word.items())

    first = run(seed=5, workers=1, shuffle=None)
    assert run(seed=5, workers=8, shuffle=1) == first
    assert run(seed=6, workers=1, shuffle=None) != first


def test_a_repeated_call_gets_fresh_draws_and_a_new_episode_starts_over():
    (wrapped,) = inject_faults([describe], FaultConfig(rate=0.5, seed=2))
    assert isinstance(wrapped, FaultyTool)
    arguments = {"word": "the same word", "box": [0, 0, 4, 4]}
    episode_a, episode_b = _context(), _context()
    run_a = [_outcome_kind(wrapped, arguments, episode_a) for _ in range(30)]
    run_b = [_outcome_kind(wrapped, arguments, episode_b) for _ in range(30)]
    assert run_a == run_b
    assert len(set(run_a)) > 2  # the same call does not get the same fate every time


def test_the_same_first_call_in_many_episodes_fails_at_the_configured_rate():
    """Every task's first call is often the same (``ocr`` of ``img_0``): episodes must not share its draw."""
    (wrapped,) = inject_faults([describe], FaultConfig(rate=0.2, seed=3))
    assert isinstance(wrapped, FaultyTool)
    arguments = {"word": "img_0", "box": [0, 0, 4, 4]}
    n = 2000
    fates = [
        _outcome_kind(wrapped, arguments, ToolContext(images=ImageStore(), episode_key=f"task-{i}"))
        for i in range(n)
    ]
    faulted = sum(fate != "none" for fate in fates) / n
    # wrong_region always changes this call (it has a box), so all five kinds count: 0.2 ± 4.5 sd
    assert 0.16 < faulted < 0.24
    again = [
        _outcome_kind(wrapped, arguments, ToolContext(images=ImageStore(), episode_key=f"task-{i}"))
        for i in range(50)
    ]
    assert again == fates[:50]  # another method meets exactly the same faults on the same tasks


def _toolbox_call(toolbox: Toolbox, name: str, arguments: dict[str, Any], context: ToolContext):
    return asyncio.run(toolbox.call(name, arguments, context))


def test_an_injected_timeout_reads_exactly_like_a_real_deadline():
    release = threading.Event()

    @tool(timeout_s=0.2)
    def slow(x: int) -> int:
        """Wait for a release that never comes in time.

        Args:
            x: Anything.
        """
        release.wait(5)
        return x

    real = _toolbox_call(Toolbox([slow]), "slow", {"x": 1}, _context())
    release.set()
    (faulty,) = inject_faults([slow], FaultConfig(timeout=1.0, seed=0))
    injected = _toolbox_call(Toolbox([faulty]), "slow", {"x": 1}, _context())
    assert real.error_type == injected.error_type == ErrorType.TIMEOUT
    assert injected.message == real.message
    assert injected.seconds < 0.2  # no waiting

    (calc,) = inject_faults([calculator], FaultConfig(timeout=1.0, timeout_s=30))
    outcome = _toolbox_call(Toolbox([calc]), "calculator", {"expression": "1+1"}, _context())
    assert outcome.message == "calculator did not finish within 30 s"


def test_crash_empty_garbled_and_wrong_region_through_the_toolbox():
    images = ImageStore()
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, 100:] = 255
    images.add(image)
    context = ToolContext(images=images)
    arguments = {"image": "img_0", "box": [10, 10, 60, 60]}

    def call(config: FaultConfig, tool_: Any = crop, args: dict[str, Any] = arguments):
        (faulty,) = inject_faults([tool_], config)
        return _toolbox_call(Toolbox([faulty]), faulty.name, args, context)

    crashed = call(FaultConfig(crash=1.0))
    assert not crashed.ok and crashed.error_type == ErrorType.TOOL_CRASH
    assert crashed.message.startswith("crop failed: ")

    emptied = call(FaultConfig(empty=1.0), describe, {"word": "abc", "box": [1, 2, 3, 4]})
    assert emptied.ok and emptied.output == {"word": "", "box": [], "area": 0, "tags": []}
    bare = call(FaultConfig(empty=1.0), calculator, {"expression": "2*3"})
    assert bare.ok and bare.output is None

    garbled = call(FaultConfig(garbled=1.0, seed=4), describe, {"word": "abcdefghij", "box": [1, 2, 30, 40]})
    assert garbled.ok and set(garbled.output) == {"word", "box", "area", "tags"}
    assert len(garbled.output["word"]) == 30 and garbled.output["word"] != "abcdefghij" * 3
    assert all(isinstance(v, int) for v in garbled.output["box"])

    moved = call(FaultConfig(wrong_region=1.0, seed=1))
    assert moved.ok and moved.output["box"] != [10, 10, 60, 60]  # crop ran, on the wrong place
    assert moved.new_images  # a real crop was made


def test_wrapping_keeps_names_schemas_and_validation():
    wrapped = inject_faults([calculator, crop, describe], FaultConfig(rate=0.1))
    assert [t.name for t in wrapped] == ["calculator", "crop", "describe"]
    assert [t.parameters_schema() for t in wrapped] == [
        t.parameters_schema() for t in (calculator, crop, describe)
    ]
    assert wrapped[0].description == calculator.description
    outcome = _toolbox_call(Toolbox(wrapped), "crop", {"image": "img_0", "box": [1, 2]}, _context())
    assert outcome.error_type == ErrorType.ARG_INVALID
    assert all(t.counts is wrapped[0].counts for t in wrapped if isinstance(t, FaultyTool))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.2, "crash": 0.1},
        {"rate": 1.5},
        {"timeout": -0.1},
        {"crash": 0.6, "empty": 0.6},
        {"timeout_s": 0},
    ],
)
def test_bad_configs_are_input_errors(kwargs):
    with pytest.raises(InputError):
        FaultConfig(**kwargs)
