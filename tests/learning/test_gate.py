"""The eval gate: the paired rule and the point rule, promotion + hot-swap only for a measured improvement.

Most tests evaluate a ``ScriptedPolicy`` (a test double standing in for a model: which adapter is
active decides which tasks it gets right), so "better" and "worse" are exact and known in advance;
the gate still runs the real evaluation, verifiers, registry and swap. The four-task tests use the
point rule (``rule="any_improvement"``, what the demo opts into); the default paired rule gets
20 tasks and a test sized for them (``SMALL_TEST``: 17 tasks needed), or refuses four tasks outright.
The last test gates real SmolLM2 adapters and checks the decision follows the measured metrics.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import InputError
from regrpo.evaluation import EvalOptions, PairedTest
from regrpo.evaluation.paired import compare_outcomes
from regrpo.learning.gate import GateConfig, decide, eval_key, evaluate_and_gate
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.tasks.schema import AnswerSpec, ReferenceStep, Task

EXPRESSIONS = {"t0": ("17 * 23", 391), "t1": ("12 + 30", 42), "t2": ("9 * 9", 81), "t3": ("7 - 2", 5)}
TWENTY = {f"m{i:02d}": (f"{i} + 100", i + 100) for i in range(20)}
OPTIONS = EvalOptions(max_steps=3, max_new_tokens=32)
POINT_RULE = {"rule": "any_improvement"}
SMALL_TEST = PairedTest(effect=0.5, discordant_rate=0.6)  # a paired test that needs 17 tasks


def make_tasks(tmp_path, expressions):
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
        for task_id, (expression, value) in expressions.items()
    ]


@pytest.fixture
def tasks(tmp_path):
    return make_tasks(tmp_path, EXPRESSIONS)


@pytest.fixture
def twenty_tasks(tmp_path):
    return make_tasks(tmp_path, TWENTY)


def skilled_policy(solves: dict[str | None, set[str]]) -> ScriptedPolicy:
    """Answers right exactly the tasks ``solves[active adapter]`` names (by their expression), else 7."""
    holder: list[ScriptedPolicy] = []

    def turn(chat):
        expression = re.search(r"Compute (.+?)\.", chat[1]["content"]).group(1)
        if "<tool_response>" not in chat[-1]["content"]:
            call = {"name": "calculator", "arguments": {"expression": expression}}
            return f"<tool_call>{json.dumps(call)}</tool_call>"
        known = {({**EXPRESSIONS, **TWENTY})[t][0] for t in solves.get(holder[0].active_adapter, set())}
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


def point_gate(policy, registry, version, tasks, store, **config):
    """The four-task tests: the point rule (the paired one refuses four tasks, see below)."""
    return gate(policy, registry, version, tasks, store, **POINT_RULE, **config)


def pattern(bits: str) -> dict[str, bool]:
    return {f"m{i:02d}": bit == "1" for i, bit in enumerate(bits)}


# -- the rules, as pure functions ---------------------------------------------------------------------


def test_the_point_rule_is_strict_and_ties_need_a_tie_breaker():
    def point(**config):
        return GateConfig(rule="any_improvement", **config)

    live = {"success_rate": 0.5, "reflection_tokens_per_episode": 10.0, "tool_calls_per_episode": 1.0}
    assert decide({**live, "success_rate": 0.75}, live, point())[0]
    assert not decide(live, live, point())[0]  # equal is not better
    assert not decide({**live, "success_rate": 0.25}, live, point())[0]
    assert not decide({**live, "success_rate": 0.75}, live, point(margin=0.25))[0]  # 0.25 is not > 0.25
    assert decide({**live, "success_rate": 0.8}, live, point(margin=0.25))[0]
    cheaper = {**live, "reflection_tokens_per_episode": 4.0}
    assert not decide(cheaper, live, point())[0]
    promote, reason = decide(cheaper, live, point(tie_breaker="reflection_tokens"))
    assert promote and "reflection_tokens_per_episode 4.00 < live 10.00" in reason
    assert not decide(live, live, point(tie_breaker="reflection_tokens"))[0]
    no_failures = {k: v for k, v in live.items() if k != "recovery_rate"}
    promote, reason = decide(
        {**no_failures, "recovery_rate": 1.0}, no_failures, point(metric="recovery_rate")
    )
    assert not promote and "undefined" in reason


def test_the_point_rule_says_when_its_promotion_is_not_significant():
    live, candidate = {"success_rate": 0.5}, {"success_rate": 1.0}
    few = compare_outcomes(pattern("10"), pattern("11"))  # 2 tasks: far below the 155 a test needs
    promote, reason = decide(candidate, live, GateConfig(rule="any_improvement"), few)
    assert promote and "NOT statistically significant" in reason and "verdict: too_few_tasks" in reason
    sweep = compare_outcomes(pattern("0" * 20), pattern("1" * 20), SMALL_TEST)
    promote, reason = decide(candidate, live, GateConfig(rule="any_improvement"), sweep)
    assert promote and "the paired test agrees it is significant" in reason


def test_the_paired_rule_needs_enough_tasks_and_a_ci_above_the_margin():
    metrics = {"success_rate": 0.0}  # the paired rule reads the comparison, not these
    config = GateConfig(test=SMALL_TEST)
    sweep = compare_outcomes(pattern("0" * 20), pattern("1" * 20), SMALL_TEST)  # CI low 0.77
    promote, reason = decide(metrics, metrics, config, sweep)
    assert promote and reason.startswith("significant:") and "on 20 paired tasks" in reason
    assert not decide(metrics, metrics, GateConfig(margin=0.8, test=SMALL_TEST), sweep)[0]
    two_more = compare_outcomes(pattern("1" * 10 + "0" * 10), pattern("1" * 12 + "0" * 8), SMALL_TEST)
    promote, reason = decide(metrics, metrics, config, two_more)
    assert not promote and reason.startswith("not significant:") and "verdict: no_difference" in reason
    four = compare_outcomes(pattern("0000"), pattern("1111"))  # 4 of 4 against 0 of 4, default test
    promote, reason = decide(metrics, metrics, GateConfig(), four)
    assert not promote and "too few held-out tasks" in reason and "at least 155 tasks" in reason
    assert "rule='any_improvement'" in reason  # the way out is named
    with pytest.raises(InputError, match="per-task outcomes"):
        decide(metrics, metrics, GateConfig())


def test_bad_gate_settings_are_input_errors():
    with pytest.raises(InputError, match="margin"):
        GateConfig(margin=-0.1)
    with pytest.raises(InputError, match="metric"):
        GateConfig(metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tie_breaker"):
        GateConfig(tie_breaker="latency")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="gate rule"):
        GateConfig(rule="vibes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="any_improvement"):
        GateConfig(metric="recovery_rate")  # recovery is not paired task by task
    with pytest.raises(InputError, match="any_improvement"):
        GateConfig(tie_breaker="tool_calls")


# -- the gate end to end (scripted policy) -------------------------------------------------------------


def test_a_better_candidate_is_promoted_hot_swapped_and_its_metrics_recorded(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: {"t0", "t1"}, version: {"t0", "t1", "t2"}})

    decision = point_gate(policy, registry, version, tasks, store)

    assert decision.promoted and decision.live is None
    assert decision.rule == "any_improvement" and not decision.significant  # 4 tasks test nothing
    assert "NOT statistically significant" in decision.reason
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

    decision = point_gate(policy, registry, candidate, tasks, store)

    assert not decision.promoted and "does not beat" in decision.reason
    assert decision.live_metrics["success_rate"] == 0.5
    assert decision.candidate_metrics["success_rate"] == len(candidate_solves) / 4
    assert registry.live() == live and policy.active_adapter == live and decision.swap is None
    assert registry.metrics(candidate) != {}  # measured and recorded even though refused


def test_the_margin_holds_back_a_small_improvement(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: {"t0"}, version: {"t0", "t1"}})
    decision = point_gate(policy, registry, version, tasks, store, margin=0.25)
    assert not decision.promoted and registry.live() is None and policy.active_adapter is None
    assert decision.candidate_metrics["success_rate"] - decision.live_metrics["success_rate"] == 0.25


def test_live_metrics_are_reused_for_the_same_tasks_and_options_only(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    first, second, third = publish(registry), publish(registry), publish(registry)
    policy = skilled_policy({None: {"t0"}, first: {"t0", "t1"}, second: {"t0", "t1", "t2"}, third: set()})
    assert point_gate(policy, registry, first, tasks, store).promoted
    calls = policy.calls

    decision = point_gate(policy, registry, second, tasks, store)
    assert decision.promoted and decision.live == first and decision.live_from_cache
    assert policy.calls - calls == 2 * len(tasks)  # only the candidate ran (two turns per task)
    assert registry.history() == [first] and policy.active_adapter == second
    # the cached per-task outcomes still pair task by task: t2 is the one discordant task
    assert decision.comparison is not None and (decision.comparison.b_only, decision.comparison.a_only) == (
        1,
        0,
    )

    fewer = point_gate(policy, registry, third, tasks[:2], store)  # another task set: measured again
    assert not fewer.live_from_cache and fewer.live_metrics["success_rate"] == 1.0
    assert registry.live() == second


def test_cached_metrics_without_per_task_outcomes_are_measured_again(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    first, second = publish(registry), publish(registry)
    policy = skilled_policy({None: {"t0"}, first: {"t0", "t1"}, second: {"t0", "t1", "t2"}})
    assert point_gate(policy, registry, first, tasks, store).promoted
    key = eval_key(policy.model_name, tasks, OPTIONS)
    outcomes = registry.root / f"outcomes-{first}-{key}.json"
    assert json.loads(outcomes.read_text()) == {"t0": True, "t1": True, "t2": False, "t3": False}
    outcomes.unlink()  # a registry written before outcomes were kept: the metrics alone cannot pair

    decision = point_gate(policy, registry, second, tasks, store)
    assert not decision.live_from_cache and decision.comparison.n_tasks == 4 and decision.promoted


# -- the paired rule end to end ------------------------------------------------------------------------


def test_a_significant_candidate_on_enough_tasks_is_promoted_and_the_record_says_why(
    twenty_tasks, store, tmp_path
):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: {"m00", "m01"}, version: set(TWENTY)})

    decision = gate(policy, registry, version, twenty_tasks, store, test=SMALL_TEST)

    assert decision.promoted and decision.significant and decision.rule == "paired_ci"
    assert registry.live() == version and policy.active_adapter == version
    paired = decision.comparison
    assert (paired.n_tasks, paired.b_only, paired.a_only, paired.verdict) == (20, 18, 0, "better")
    assert paired.labels == ("base", version) and paired.difference == pytest.approx(0.9)
    assert f"CI lower bound {paired.ci_low:+.3f} > margin 0.000" in decision.reason


@pytest.mark.parametrize(
    ("live_solves", "candidate_solves", "verdict"),
    [(2, 4, "no_difference"), (12, 0, "worse")],
    ids=["two-more-tasks", "worse"],
)
def test_a_candidate_the_paired_test_cannot_tell_apart_or_that_is_worse_is_refused(
    twenty_tasks, store, tmp_path, live_solves, candidate_solves, verdict
):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    ids = sorted(TWENTY)
    policy = skilled_policy({None: set(ids[:live_solves]), version: set(ids[:candidate_solves])})

    decision = gate(policy, registry, version, twenty_tasks, store, test=SMALL_TEST)

    assert not decision.promoted and not decision.significant and registry.live() is None
    assert decision.comparison.verdict == verdict and "not significant" in decision.reason


def test_the_default_gate_refuses_a_perfect_sweep_of_four_tasks(tasks, store, tmp_path):
    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: set(), version: set(EXPRESSIONS)})

    decision = gate(policy, registry, version, tasks, store)  # GateConfig(): the paired rule, 155 tasks

    assert not decision.promoted and registry.live() is None and policy.active_adapter is None
    assert decision.candidate_metrics["success_rate"] == 1.0 and decision.live_metrics["success_rate"] == 0.0
    assert decision.comparison.verdict == "too_few_tasks" and decision.comparison.tasks_needed == 155
    assert "too few held-out tasks" in decision.reason


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
        config = GateConfig(rule="any_improvement")  # two tasks: the paired rule would always refuse
        decision = evaluate_and_gate(
            smollm, registry, version, tasks[:2], store=store, options=options, config=config
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


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "never-applied"])
def test_a_winning_candidate_goes_live_only_once_the_serving_engine_verified_it(
    tasks, store, tmp_path, verified
):
    """Issue 13: promotion into a ``regrpo serve`` in another process (here a thread) sharing the
    registry. An engine that verifies: live. One whose answers never come from the new adapter: the
    decision is a refusal that says so, and the pointer stays where it was."""
    from test_serving_engine import NeverApplied

    from regrpo.agent.loop import Agent
    from regrpo.learning.serving_engine import RegrpoServeEngine
    from regrpo.server.app import build_agent_app, start_in_thread
    from regrpo.server.config import ServerConfig

    registry = AdapterRegistry(tmp_path / "registry")
    version = publish(registry)
    policy = skilled_policy({None: {"t0", "t1"}, version: {"t0", "t1", "t2"}})
    serving_policy = (ScriptedPolicy if verified else NeverApplied)(["<answer>5</answer>"], cycle=True)
    agent = Agent(serving_policy, tools=[], store=store)
    app = build_agent_app(agent, ServerConfig(admin_keys=("sk-admin",)), registry=registry)
    with start_in_thread(app) as server:
        decision = evaluate_and_gate(
            policy,
            registry,
            version,
            tasks,
            store=store,
            options=OPTIONS,
            config=GateConfig(**POINT_RULE),
            serving=RegrpoServeEngine(server.url, "sk-admin"),
        )
    assert decision.promoted is verified and policy.active_adapter is None  # the gate's engine untouched
    if verified:
        assert registry.live() == version and serving_policy.active_adapter == version
        assert decision.swap is not None and decision.swap.name == version
    else:
        assert registry.live() is None and serving_policy.active_adapter is None
        assert "passed the gate" in decision.reason and "the serving engine refused it" in decision.reason
        assert "rolled back: the base model is live" in decision.reason


def test_the_metrics_key_names_a_users_toolbox_and_not_the_builtin_default(tmp_path):
    from regrpo.tools import default_tools, tool

    @tool
    def shout(text: str) -> str:
        """Upper-case a text.

        Args:
            text: The text.
        """
        return text.upper()

    tasks = make_tasks(tmp_path, {"t1": ("1+1", 2)})
    builtin = eval_key("m", tasks, OPTIONS)
    assert eval_key("m", tasks, OPTIONS, None) == builtin  # existing registries keep their keys
    mine = eval_key("m", tasks, OPTIONS, [*default_tools(), shout])
    assert mine != builtin and mine == eval_key("m", tasks, OPTIONS, [shout, *default_tools()])
