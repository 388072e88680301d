"""The eval gate: the margin rule, promotion + hot-swap only for a measured improvement, metrics cached.

Most tests evaluate a ``ScriptedPolicy`` (a test double standing in for a model: which adapter is
active decides which tasks it gets right), so "better" and "worse" are exact and known in advance;
the gate still runs the real evaluation, verifiers, registry and swap. The last test gates real
SmolLM2 adapters and checks the decision follows the measured metrics.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import InputError
from regrpo.evaluation import EvalOptions
from regrpo.learning.gate import GateConfig, decide, eval_key, evaluate_and_gate
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.tasks.schema import AnswerSpec, ReferenceStep, Task

EXPRESSIONS = {"t0": ("17 * 23", 391), "t1": ("12 + 30", 42), "t2": ("9 * 9", 81), "t3": ("7 - 2", 5)}
OPTIONS = EvalOptions(max_steps=3, max_new_tokens=32)


@pytest.fixture
def tasks(tmp_path):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((32, 48, 3), 255, np.uint8)).save(path)
    return [
        Task(
            id=task_id,
            category="expression",
            difficulty=1,
            question=f"Compute {expression}.",
            images=[str(path)],
            answer=AnswerSpec(kind="number", value=value, tolerance=0.01),
            reference=[ReferenceStep(tool="calculator", arguments={"expression": expression})],
            seed=0,
        )
        for task_id, (expression, value) in EXPRESSIONS.items()
    ]


def skilled_policy(solves: dict[str | None, set[str]]) -> ScriptedPolicy:
    """Answers right exactly the tasks ``solves[active adapter]`` names (by their expression), else 7."""
    holder: list[ScriptedPolicy] = []

    def turn(chat):
        expression = re.search(r"Compute (.+?)\.", chat[1]["content"]).group(1)
        if "<tool_response>" not in chat[-1]["content"]:
            call = {"name": "calculator", "arguments": {"expression": expression}}
            return f"<tool_call>{json.dumps(call)}</tool_call>"
        known = {EXPRESSIONS[t][0] for t in solves.get(holder[0].active_adapter, set())}
        shown = re.search(r"<tool_response>\s*(.*?)\s*</tool_response>", chat[-1]["content"], re.S).group(1)
        return f"<answer>{shown if expression in known else 7}</answer>"

    holder.append(ScriptedPolicy([turn], cycle=True))
    return holder[0]


def publish(registry: AdapterRegistry) -> str:
    folder = registry.begin()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return registry.commit(folder, AdapterMeta(base_model="scripted")).version


def gate(policy, registry, version, tasks, store, **config):
    return evaluate_and_gate(
        policy, registry, version, tasks, store=store, options=OPTIONS, config=GateConfig(**config)
    )


# -- the rule, as a pure function ---------------------------------------------------------------------


def test_the_margin_rule_is_strict_and_ties_need_a_tie_breaker():
    live = {"success_rate": 0.5, "reflection_tokens_per_episode": 10.0, "tool_calls_per_episode": 1.0}
    assert decide({**live, "success_rate": 0.75}, live, GateConfig())[0]
    assert not decide(live, live, GateConfig())[0]  # equal is not better
    assert not decide({**live, "success_rate": 0.25}, live, GateConfig())[0]
    assert not decide({**live, "success_rate": 0.75}, live, GateConfig(margin=0.25))[0]  # 0.25 is not > 0.25
    assert decide({**live, "success_rate": 0.8}, live, GateConfig(margin=0.25))[0]
    cheaper = {**live, "reflection_tokens_per_episode": 4.0}
    assert not decide(cheaper, live, GateConfig())[0]
    promote, reason = decide(cheaper, live, GateConfig(tie_breaker="reflection_tokens"))
    assert promote and "reflection_tokens_per_episode 4.00 < live 10.00" in reason
    assert not decide(live, live, GateConfig(tie_breaker="reflection_tokens"))[0]
    no_failures = {k: v for k, v in live.items() if k != "recovery_rate"}
    promote, reason = decide(
        {**no_failures, "recovery_rate": 1.0}, no_failures, GateConfig(metric="recovery_rate")
    )
    assert not promote and "undefined" in reason


def test_bad_gate_settings_are_input_errors():
    with pytest.raises(InputError, match="margin"):
        GateConfig(margin=-0.1)
    with pytest.raises(InputError, match="metric"):
        GateConfig(metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tie_breaker"):
        GateConfig(tie_breaker="latency")  # type: ignore[arg-type]


# -- the gate end to end (scripted policy) -------------------------------------------------------------


def test_a_better_candidate_is_promoted_hot_swapped_and_its_metrics_recorded(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: {"t0", "t1"}, version: {"t0", "t1", "t2"}})

    decision = gate(policy, registry, version, tasks, store)

    assert decision.promoted and decision.live is None
    assert decision.candidate_metrics["success_rate"] == 0.75 and decision.live_metrics["success_rate"] == 0.5
    assert registry.live() == version and policy.active_adapter == version
    assert decision.swap is not None and decision.swap.name == version
    key = eval_key(policy.model_name, tasks, OPTIONS)
    assert registry.metrics(version)[f"{key}/success_rate"] == 0.75
    assert registry.metrics(None)[f"{key}/success_rate"] == 0.5  # the base model's, for the next gate
    # the evaluation traces say which version acted
    candidate_episodes = [e for e in store.episodes() if e.adapter == version]
    assert len(candidate_episodes) == len(tasks) and all(
        s.adapter == version for e in candidate_episodes for s in e.steps
    )


@pytest.mark.parametrize(
    "candidate_solves", [{"t0", "t1"}, {"t2", "t3"}, {"t0"}], ids=["equal", "equal-other", "worse"]
)
def test_an_equal_or_worse_candidate_is_refused_and_nothing_changes(tasks, store, tmp_path, candidate_solves):
    registry = AdapterRegistry(tmp_path / "registry")
    live = publish(registry)
    registry.promote(live)
    candidate = publish(registry)
    policy = skilled_policy({live: {"t0", "t1"}, candidate: candidate_solves})
    policy.load_adapter(live, str(registry.path(live)))
    policy.activate_adapter(live)

    decision = gate(policy, registry, candidate, tasks, store)

    assert not decision.promoted and "does not beat" in decision.reason
    assert decision.live_metrics["success_rate"] == 0.5
    assert decision.candidate_metrics["success_rate"] == len(candidate_solves) / 4
    assert registry.live() == live and policy.active_adapter == live and decision.swap is None
    assert registry.metrics(candidate) != {}  # measured and recorded even though refused


def test_the_margin_holds_back_a_small_improvement(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: {"t0"}, version: {"t0", "t1"}})
    decision = gate(policy, registry, version, tasks, store, margin=0.25)
    assert not decision.promoted and registry.live() is None and policy.active_adapter is None
    assert decision.candidate_metrics["success_rate"] - decision.live_metrics["success_rate"] == 0.25


def test_live_metrics_are_reused_for_the_same_tasks_and_options_only(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    first, second, third = publish(registry), publish(registry), publish(registry)
    policy = skilled_policy({None: {"t0"}, first: {"t0", "t1"}, second: {"t0", "t1", "t2"}, third: set()})
    assert gate(policy, registry, first, tasks, store).promoted
    calls = policy.calls

    decision = gate(policy, registry, second, tasks, store)
    assert decision.promoted and decision.live == first and decision.live_from_cache
    assert policy.calls - calls == 2 * len(tasks)  # only the candidate ran (two turns per task)
    assert registry.history() == [first] and policy.active_adapter == second

    fewer = gate(
        policy, registry, third, tasks[:2], store
    )  # another task set: the live one is measured again
    assert not fewer.live_from_cache and fewer.live_metrics["success_rate"] == 1.0
    assert registry.live() == second


def test_gating_the_live_version_or_with_no_tasks_is_an_input_error(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    registry.promote(version)
    policy = skilled_policy({})
    with pytest.raises(InputError, match="already live"):
        gate(policy, registry, version, tasks, store)
    with pytest.raises(InputError, match="held-out tasks"):
        gate(policy, registry, publish(registry), [], store)


# -- real adapters on the real model -------------------------------------------------------------------


@pytest.mark.slow
def test_real_adapters_are_gated_by_their_measured_metrics(smollm, tasks, store, tmp_path):
    from regrpo.learning.lora_trainer import save_random_adapter

    registry = AdapterRegistry(tmp_path / "registry")
    folder = registry.begin()
    save_random_adapter(smollm.model, folder, seed=5)
    version = registry.commit(folder, AdapterMeta(base_model=smollm.model_name)).version
    options = EvalOptions(max_steps=1, max_new_tokens=12)
    try:
        decision = evaluate_and_gate(
            smollm, registry, version, tasks[:2], store=store, options=options, config=GateConfig()
        )
        candidate, live = decision.candidate_metrics["success_rate"], decision.live_metrics["success_rate"]
        assert decision.promoted == (candidate > live)
        assert registry.live() == (version if decision.promoted else None)
        assert smollm.active_adapter == registry.live()
        assert smollm.adapters == ([version] if decision.promoted else [])
    finally:
        smollm.activate_adapter(None)
        for name in smollm.adapters:
            smollm.unload_adapter(name)
