"""``evaluate``: each task scored by its verifier, traces and feedback stored, faults and adapters applied."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import InputError
from regrpo.evaluation import EvalOptions, evaluate
from regrpo.tasks.schema import AnswerSpec, ReferenceStep, Task
from regrpo.tools.calculator import calculator


def arithmetic_task(i: int, expression: str, value: float, image: str) -> Task:
    return Task(
        id=f"t{i}",
        category="expression" if i % 2 else "receipt",
        difficulty=1,
        question=f"Compute {expression}.",
        images=[image],
        answer=AnswerSpec(kind="number", value=value, tolerance=0.01),
        reference=[
            ReferenceStep(tool="calculator", arguments={"expression": expression}, expects=[str(value)])
        ],
        seed=i,
    )


@pytest.fixture
def tasks(tmp_path):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((32, 48, 3), 255, np.uint8)).save(path)
    return [
        arithmetic_task(0, "17 * 23", 391, str(path)),
        arithmetic_task(1, "12 + 30", 42, str(path)),
        arithmetic_task(2, "9 * 9", 81, str(path)),
    ]


def calculating_policy(wrong_on: str | None = None) -> ScriptedPolicy:
    """Calls the calculator on the task's expression, then answers with what it returned."""

    def turn(chat):
        if "<tool_response>" not in chat[-1]["content"]:
            expression = re.search(r"Compute (.+?)\.", chat[1]["content"]).group(1)
            call = {"name": "calculator", "arguments": {"expression": expression}}
            return f"<tool_call>{json.dumps(call)}</tool_call>"
        shown = re.search(r"<tool_response>\s*(.*?)\s*</tool_response>", chat[-1]["content"], re.S).group(1)
        if wrong_on and wrong_on in chat[1]["content"]:
            return "<answer>7</answer>"
        return f"<answer>{shown}</answer>"

    return ScriptedPolicy([turn], cycle=True)


def test_every_task_is_scored_stored_and_fed_back(tasks, store):
    report = evaluate(
        calculating_policy(wrong_on="9 * 9"),
        tasks,
        store=store,
        tools=[calculator],
        progress=False,
        label="x",
    )
    assert [e.correct for e in report.episodes] == [True, True, False]
    assert report.overall.success_rate == pytest.approx(2 / 3)
    assert report.by_category["receipt"].episodes == 2 and report.by_category["expression"].episodes == 1
    assert report.overall.tool_calls_per_episode == 1.0 and report.overall.tool_failure_rate == 0.0
    for record in report.episodes:
        episode = store.get(record.trace_id)
        assert episode.reward == (1.0 if record.correct else 0.0)
        assert episode.feedback[-1].answer == record.expected
    assert report.settings["tasks"] == 3 and report.settings["tools"] == ["calculator"]


def test_concurrent_runs_score_the_same_as_sequential(tasks, store):
    one = evaluate(calculating_policy(), tasks, store=store, tools=[calculator], progress=False)
    many = evaluate(
        calculating_policy(),
        tasks,
        store=store,
        tools=[calculator],
        progress=False,
        options=EvalOptions(concurrency=3),
    )
    assert [e.correct for e in one.episodes] == [e.correct for e in many.episodes] == [True, True, True]


def test_a_broken_task_is_recorded_as_an_error_and_the_run_goes_on(tasks, store, tmp_path):
    broken = arithmetic_task(3, "1 + 1", 2, str(tmp_path / "missing.png"))
    report = evaluate(calculating_policy(), [*tasks, broken], store=store, tools=[calculator], progress=False)
    last = report.episodes[-1]
    assert last.status == "error" and not last.correct and "missing.png" in (last.error or "")
    assert store.get(last.trace_id).status == "error"  # the trace exists, as for any bad input
    assert [e.correct for e in report.episodes[:3]] == [True, True, True]


def test_injected_faults_show_up_as_failed_calls(tasks, store):
    report = evaluate(
        calculating_policy(),
        tasks,
        store=store,
        tools=[calculator],
        progress=False,
        options=EvalOptions(fault_rate=1.0, fault_seed=3, max_steps=2),
    )
    injected = report.settings["faults_injected"]
    assert report.settings["fault_rate"] == 1.0
    calls = round(report.overall.tool_calls_per_episode * len(tasks))
    # every call drew a fault; "wrong_region" passes through (uncounted) on a tool that takes no box
    assert 0 < sum(injected.values()) <= calls
    failed_calls = sum(e.tool_failures for e in report.episodes)
    assert failed_calls == injected["timeout"] + injected["crash"]  # the kinds that are failures


def test_bad_options_and_empty_task_lists_are_clear_errors(store):
    with pytest.raises(InputError, match="concurrency"):
        EvalOptions(concurrency=0)
    with pytest.raises(InputError, match="fault_rate"):
        EvalOptions(fault_rate=1.5)
    with pytest.raises(InputError, match="no tasks"):
        evaluate(calculating_policy(), [], store=store, progress=False)


@pytest.mark.slow
def test_an_adapter_is_active_for_the_run_and_removed_after(tasks, store, tmp_path):
    from peft import LoraConfig, get_peft_model

    from regrpo.agent.local import LocalPolicy

    policy = LocalPolicy()  # its own copy: adapters change the model object
    lora = get_peft_model(policy.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    policy = LocalPolicy()
    report = evaluate(
        policy,
        tasks[:1],
        store=store,
        tools=[calculator],
        adapter=tmp_path / "adapter",
        progress=False,
        options=EvalOptions(max_steps=1, max_new_tokens=8),
    )
    episode = store.get(report.episodes[0].trace_id)
    assert episode.adapter == "eval-adapter" and all(s.adapter == "eval-adapter" for s in episode.steps)
    assert policy.active_adapter is None and policy.adapters == []
    assert report.settings["adapter_path"] == str(tmp_path / "adapter")


class DoubleChecking(ScriptedPolicy):
    """Calls the calculator twice, the second time far less sure (log-prob -3 vs -0.1), then answers."""

    def __init__(self):
        super().__init__([self.turn], cycle=True)

    @staticmethod
    def turn(chat):
        expression = re.search(r"Compute (.+?)\.", chat[1]["content"]).group(1)
        call = json.dumps({"name": "calculator", "arguments": {"expression": expression}})
        calls = sum(m["role"] == "assistant" for m in chat)
        if calls < 2:
            return f"<tool_call>{call}</tool_call>"
        shown = re.search(r"<tool_response>\s*(.*?)\s*</tool_response>", chat[-1]["content"], re.S).group(1)
        return f"<answer>{shown}</answer>"

    def generate(self, messages, **kwargs):
        from regrpo.traces import Completion

        (completion,) = super().generate(messages, **kwargs)
        value = -3.0 if sum(m["role"] == "assistant" for m in messages) == 1 else -0.1
        words = self.count_tokens(completion.text)
        return [Completion(completion.text, token_ids=list(range(words)), logprobs=[value] * words)]


def test_an_evaluation_asks_for_no_reflection_after_successful_steps_unless_opted_in(tasks, store):
    def requested(options):
        report = evaluate(
            DoubleChecking(), tasks[:1], store=store, tools=[calculator], progress=False, **options
        )
        episode = store.get(report.episodes[0].trace_id)
        assert report.episodes[0].correct and [s.failed for s in episode.steps] == [False, False, False]
        return report.settings["confidence_trigger"], [s.reflection_requested for s in episode.steps]

    assert requested({}) == (False, [None, None, None])
    opted_in = {"options": EvalOptions(confidence_trigger=True)}
    assert requested(opted_in) == (True, [None, None, "low_confidence"])


def test_the_shipped_warm_start_by_marker_and_a_bad_adapter_path(tasks, store, tmp_path):
    from regrpo.agent.adapters import WARM_START, WARM_START_DIR
    from regrpo.errors import AdapterError

    policy = calculating_policy()
    report = evaluate(policy, tasks[:1], store=store, tools=[calculator], adapter=WARM_START, progress=False)
    assert store.get(report.episodes[0].trace_id).adapter == "eval-warm-start"
    assert report.settings["adapter_path"] == str(WARM_START_DIR) and policy.active_adapter is None
    with pytest.raises(AdapterError, match=r"'.*nowhere' does not exist"):
        evaluate(policy, tasks, store=store, adapter=tmp_path / "nowhere", progress=False)
    assert len(store) == 1  # refused before any episode ran
