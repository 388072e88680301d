"""Near-misses and replay: every kept near-miss really fails with the real tools; states restore exactly."""

from __future__ import annotations

import asyncio
import random

import pytest
from data_helpers import dataset, task, toolbox

from regrpo.agent.actions import parse_action
from regrpo.agent.trigger import is_empty_output
from regrpo.errors import ErrorType
from regrpo.learning.classify import classify_failure
from regrpo.learning.near_miss import OPERATORS, StepState, make_near_misses, perturbations, reference_call
from regrpo.learning.replay import BranchEnvironment, ReplayError, execute_at, observation_of, restore
from regrpo.traces.schema import ToolCall, Unparseable


def test_every_kept_near_miss_fails_again_when_re_executed_and_shows_the_same_text():
    points = [p for p in dataset().branch_points if p.source == "near_miss"]
    assert len(points) >= 12  # 2 per reference step of 6 tasks, minus the few steps with too few candidates
    for point in points:
        assert point.failed and point.error_type is not None
        if isinstance(point.failed_action, Unparseable):
            text = point.messages[-2].content
            assert parse_action(text) == point.failed_action
            assert point.error_type is ErrorType.UNPARSEABLE_ACTION
            continue
        assert isinstance(point.failed_action, ToolCall)
        outcome = asyncio.run(execute_at(point, point.failed_action, toolbox()))
        observation = observation_of(outcome)
        assert not observation.ok or is_empty_output(observation.output)
        assert observation.content == point.observation  # the failure text is the tools' own, reproducibly
        assert classify_failure(point.failed_action, observation) is point.error_type


def test_the_target_of_every_branch_point_works_in_the_restored_state():
    """The reference step each point asks for succeeds there (so a fix reward is reachable)."""
    environment = BranchEnvironment(toolbox())
    for point in dataset().branch_points:
        if not isinstance(point.target, ToolCall) or point.target.name == "ocr":  # ocr: ~1 s each, skip
            continue
        execution = asyncio.run(environment.execute(point, point.target))
        assert execution.outcome.ok, (point.id, execution.outcome.message)


def _state(category: str, step: int):
    subject = task(category)
    replay = [
        reference_call(subject, i) for i in range(step) if subject.reference[i].tool in ("crop", "rotate")
    ]
    context = asyncio.run(restore((subject.images, replay), toolbox()))
    return subject, replay, StepState(context.images.infos(), toolbox(), subject.question)


@pytest.mark.parametrize(
    ("kind", "category", "step", "expected"),
    [
        ("misspelt_tool", "expression", 1, ErrorType.UNKNOWN_TOOL),
        ("wrong_image_id", "tiny_text", 1, ErrorType.ARG_INVALID),
        ("missing_argument", "count", 0, ErrorType.ARG_INVALID),
        ("mistyped_argument", "rotated_text", 0, ErrorType.ARG_INVALID),
        ("out_of_bounds_box", "tiny_text", 0, ErrorType.GROUNDING_DRIFT),
        ("calculator_unbalanced", "expression", 1, ErrorType.ARG_INVALID),
        ("calculator_unknown_name", "receipt", 1, ErrorType.ARG_INVALID),
    ],
)
def test_operators_make_the_failure_they_are_for(kind, category, step, expected):
    subject, replay, state = _state(category, step)
    good = reference_call(subject, step)
    for seed in range(3):
        bad = OPERATORS[kind](good, state, random.Random(seed))
        assert isinstance(bad, ToolCall) and bad != good
        observation = observation_of(asyncio.run(execute_at((subject.images, replay), bad, toolbox())))
        assert classify_failure(bad, observation) is expected, observation.content


def test_broken_syntax_is_always_rejected_by_the_real_parser():
    subject, _, state = _state("lookup", 1)
    texts = {
        OPERATORS["broken_syntax"](reference_call(subject, 1), state, random.Random(s)) for s in range(12)
    }
    assert len(texts) == 3  # all three variants occur
    assert all(isinstance(text, str) and isinstance(parse_action(text), Unparseable) for text in texts)


def test_operators_that_do_not_apply_say_so():
    subject, _, state = _state("expression", 1)
    calculator = reference_call(subject, 1)
    for kind in ("out_of_bounds_box", "shifted_box", "wrong_image_id"):
        assert OPERATORS[kind](calculator, state, random.Random(0)) is None
    ocr = reference_call(subject, 0)
    assert OPERATORS["calculator_unbalanced"](ocr, state, random.Random(0)) is None


def crop_step(subject) -> int:
    """The index of the reference's crop step (tiny_text reads the page first, then crops)."""
    return next(i for i, step in enumerate(subject.reference) if step.tool == "crop")


def test_make_near_misses_discards_calls_that_work_and_is_seeded():
    subject = task("tiny_text")
    step = crop_step(subject)  # after a read-only ocr: nothing to replay
    first = make_near_misses(subject, step, toolbox=toolbox(), replay=[], n=20, seed=3)
    # a crop box shifted but still on the page is a valid crop: executed, it succeeded, so it was dropped
    assert first.discarded["shifted_box"] == 1
    assert "shifted_box" not in {m.kind for m in first.kept}
    assert len(first.kept) >= 6
    for miss in first.kept:
        assert miss.error_type is classify_failure(miss.action, miss.observation)
    again = make_near_misses(subject, step, toolbox=toolbox(), replay=[], n=20, seed=3)
    assert [m.text for m in again.kept] == [m.text for m in first.kept]
    state = StepState(first.kept[0].images, toolbox(), subject.question)
    other = perturbations(reference_call(subject, step), state, random.Random(4))
    assert [p.text for p in other] != [m.text for m in first.kept]


def test_branch_environment_restores_once_and_isolates_continuations():
    subject = task("tiny_text")
    crop = reference_call(subject, crop_step(subject))
    environment = BranchEnvironment(toolbox(), max_states=2)
    source = (subject.images, [crop])
    made = []
    for _ in range(5):  # a group of G=5 continuations at one point
        execution = asyncio.run(environment.execute(source, ToolCall("grayscale", {"image": "img_1"})))
        assert execution.outcome.ok
        made.append(execution.outcome.new_images)
    assert environment.restores == 1
    assert made == [("img_2",)] * 5  # no continuation saw another's image
    context = asyncio.run(environment.context(source))
    assert [i.source for i in context.images.infos()] == ["user", "crop"]
    assert context.images.get("img_1").shape[:2] == (crop.arguments["box"][3] - crop.arguments["box"][1],) + (
        crop.arguments["box"][2] - crop.arguments["box"][0],
    )
    for other in ([], [crop, crop]):  # two more states evict the first (LRU of 2)
        asyncio.run(environment.context((subject.images, other)))
    asyncio.run(environment.context(source))
    assert environment.restores == 4


def test_a_replay_that_fails_raises_replay_error():
    subject = task("count")
    with pytest.raises(ReplayError, match="replay call 0"):
        asyncio.run(
            restore((subject.images, [ToolCall("crop", {"image": "img_3", "box": [0, 0, 5, 5]})]), toolbox())
        )
