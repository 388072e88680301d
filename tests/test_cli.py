"""The ``regrpo`` command line, run as a user runs it: a subprocess with the real model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from regrpo.traces import TraceStore


def regrpo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regrpo.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_run_on_a_real_image_with_the_real_model(tmp_path):
    image = np.full((120, 200, 3), 255, dtype=np.uint8)
    image[30:90, 50:150] = (30, 90, 200)
    Image.fromarray(image).save(tmp_path / "box.png")
    store = tmp_path / "traces.sqlite"
    done = regrpo(
        "run",
        "Rotate img_0 by 90 degrees. What is its new width?",
        "--image",
        str(tmp_path / "box.png"),
        "--store",
        str(store),
        "--max-steps",
        "2",
        "--max-new-tokens",
        "32",
    )
    assert done.returncode == 0, done.stderr
    assert "step 0" in done.stdout and "status=" in done.stdout  # each step shown live, then the summary
    (episode,) = TraceStore(store).episodes()
    assert episode.status in ("answered", "max_steps")  # the weak base model need not be right
    assert episode.model == "SmolLM2-135M-Instruct"
    assert [(i.width, i.height) for i in episode.images] == [(200, 120)]
    assert all(len(s.completion.token_ids) == len(s.completion.logprobs) > 0 for s in episode.steps)


@pytest.mark.slow
def test_run_json_prints_the_episode(tmp_path):
    done = regrpo(
        "run",
        "What is 17*23?",
        "--store",
        str(tmp_path / "t.sqlite"),
        "--max-steps",
        "1",
        "--max-new-tokens",
        "16",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    episode = json.loads(done.stdout)
    assert episode["task"] == "What is 17*23?" and len(episode["steps"]) == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    done = regrpo(
        "run",
        "look",
        "--image",
        str(tmp_path / "missing.png"),
        "--store",
        str(tmp_path / "t.sqlite"),
        "--model",
        str(tmp_path / "no-model"),
    )
    assert done.returncode == 2
    assert "error:" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_models_lists_the_offline_default():
    done = regrpo("models")
    assert done.returncode == 0
    assert "SmolLM2-135M-Instruct" in done.stdout and "(default)" in done.stdout


def test_export_writes_json_lines(tmp_path):
    from regrpo import Agent, ScriptedPolicy

    store_path = tmp_path / "t.sqlite"
    with TraceStore(store_path) as store:
        Agent(ScriptedPolicy(["<answer>1</answer>"], cycle=True), store=store).run_many(["a", "b"])
    done = regrpo("export", str(tmp_path / "out.jsonl"), "--store", str(store_path))
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["task"] for line in lines) == ["a", "b"]


@pytest.mark.slow
def test_demo_without_learning_runs_scores_and_records_rewards(tmp_path):
    store = tmp_path / "demo.sqlite"
    args = ("--limit", "2", "--max-steps", "1", "--max-new-tokens", "16", "--no-learn")
    done = regrpo("demo", *args, "--store", str(store), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    assert "expected" in done.stdout  # the episode table
    episodes = list(TraceStore(store).episodes())
    assert len(episodes) == 2
    assert all(e.reward in (0.0, 1.0) and e.feedback[-1].answer for e in episodes)  # scored via feedback
    report = json.loads((tmp_path / "report" / "base" / "report.json").read_text())
    assert sorted(e["trace_id"] for e in report["episodes"]) == sorted(e.trace_id for e in episodes)


@pytest.mark.slow
def test_demo_closes_the_loop_with_gated_versions_and_a_learning_curve(tmp_path):
    from regrpo.learning.registry import AdapterRegistry

    store, out = tmp_path / "demo.sqlite", tmp_path / "report"
    budgets = ("--limit", "1", "--traffic", "1", "--rollouts", "2", "--group-size", "2")
    small = ("--max-steps", "2", "--max-new-tokens", "40", "--fault-rate", "0.5")
    done = regrpo("demo", *budgets, *small, "--store", str(store), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gate v0001" in done.stdout and "gate v0002" in done.stdout
    assert "not statistically significant" in done.stdout  # the demo's gate opts out of the paired test
    assert (out / "learning_curve.png").stat().st_size > 1000
    registry = AdapterRegistry(out / "registry")
    versions = registry.list()
    assert [m.version for m in versions] == ["v0001", "v0002"]
    assert all(any(k.endswith("/success_rate") for k in m.metrics) for m in versions)  # both were gated
    assert versions[1].config["method"] == "regrpo" and versions[1].config["report"]["rollouts"] == 2
    with TraceStore(store) as traces:
        episodes = list(traces.episodes())
    adapters = {s.adapter for e in episodes for s in e.steps}
    assert None in adapters and "v0001" in adapters  # base episodes, then the warm start's (gate or live)
    assert all(e.feedback for e in episodes)


def test_run_and_demo_keep_their_own_defaults():
    from regrpo.cli import _parser

    run = _parser().parse_args(["run", "task"])
    demo = _parser().parse_args(["demo"])
    assert (run.max_steps, run.max_new_tokens) == (6, 128)
    assert (demo.max_steps, demo.max_new_tokens, demo.split, demo.fault_rate) == (4, 112, "holdout", 0.2)


# -- adapters: the shipped warm start by default, --adapter PATH or --no-adapter ------------------

MODEL_COMMANDS = (["run", "task"], ["eval"], ["serve"], ["serve-model"])


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=lambda c: c[0])
def test_every_command_that_runs_the_model_takes_an_adapter(command, tmp_path, capsys):
    from regrpo.agent.adapters import WARM_START
    from regrpo.cli import _parser, main
    from regrpo.cli.common import chosen_adapter

    with pytest.raises(SystemExit):
        main([command[0], "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "[--adapter PATH | --no-adapter]" in shown and "default: the shipped RoT warm start" in shown
    folder = tmp_path / "rot-sft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")

    parser = _parser()

    def chosen(*flags):
        return chosen_adapter(parser.parse_args([*command, *flags]))

    assert chosen() is WARM_START
    assert chosen("--no-adapter") is None
    assert chosen("--adapter", str(folder)) == folder
    assert chosen("--model", "SmolLM2-360M-Instruct") is None  # the warm start fits only its own base
    if command[0] != "serve-model":  # a remote server runs as it is
        assert chosen("--base-url", "http://127.0.0.1:1") is None
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--adapter", str(folder), "--no-adapter"])


def test_demo_keeps_evaluating_the_base_model_first():
    from regrpo.cli import _parser

    with pytest.raises(SystemExit):  # no adapter options: its first stage is the base model, by design
        _parser().parse_args(["demo", "--no-adapter"])


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=lambda c: c[0])
def test_a_bad_adapter_is_a_one_line_error_before_the_model_loads(command, tmp_path, capsys):
    from regrpo.cli import main

    missing = tmp_path / "no-such-adapter"
    store = [] if command[0] == "serve-model" else ["--store", str(tmp_path / "t.sqlite")]
    # a model that cannot load: the adapter must be refused first
    code = main([*command, *store, "--model", str(tmp_path / "no-model"), "--adapter", str(missing)])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and f"error: adapter '{missing}' does not exist" in out and "--no-adapter" in out


@pytest.mark.slow
def test_run_and_eval_use_the_shipped_warm_start_by_default(tmp_path):
    from regrpo.cli import main

    store = tmp_path / "traces.sqlite"
    small = ("--max-steps", "1", "--max-new-tokens", "8", "--store", str(store))
    assert main(["run", "What is 2+2?", *small]) == 0
    with TraceStore(store) as traces:
        (episode,) = traces.episodes()
    assert episode.adapter == "warm-start" and episode.steps[0].adapter == "warm-start"

    out = tmp_path / "report"
    selection = ("--limit", "1", "--categories", "expression", "--concurrency", "1", "--out", str(out))
    assert main(["eval", *small, *selection]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["adapter"].endswith("warm-start") and report["settings"]["confidence_trigger"] is False
    with TraceStore(store) as traces:
        evaluated = traces.get(report["episodes"][0]["trace_id"])
    assert evaluated.adapter == "eval-warm-start"


def test_a_repeated_base_url_makes_a_replica_set_and_one_makes_a_single_client():
    from rich.console import Console

    from regrpo.agent.openai_policy import OpenAIPolicy
    from regrpo.agent.replicas import ReplicaPolicy
    from regrpo.cli import _parser
    from regrpo.cli.common import make_policy

    def policy(*flags):  # building a client connects to nothing
        return make_policy(_parser().parse_args(["run", "task", *flags]), Console())

    one = policy("--base-url", "http://127.0.0.1:1")
    assert isinstance(one, OpenAIPolicy) and one.base_url == "http://127.0.0.1:1"
    both = policy("--base-url", "http://127.0.0.1:1", "--base-url", "http://127.0.0.1:2/v1", "--vllm")
    assert isinstance(both, ReplicaPolicy)
    assert [r.base_url for r in both.replicas] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert all(r.vllm for r in both.replicas)
    assert not one.takes_images and not both.takes_images  # a text-only server unless told otherwise
    seeing = policy("--base-url", "http://127.0.0.1:1", "--base-url", "http://127.0.0.1:2", "--remote-images")
    assert seeing.takes_images and all(r.takes_images for r in seeing.replicas)


# -- a user's own tools: --tool MODULE:NAME on every command that runs or replays the agent ------------

TOOL_COMMANDS = (
    ["run", "task"],
    ["eval"],
    ["serve"],
    ["trainer", "--registry", "REG"],
    ["train", "data", "--out", "OUT"],
    ["train", "regrpo", "--data", "DATA", "--out", "OUT"],
)


@pytest.mark.parametrize("command", TOOL_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_every_command_that_runs_or_replays_the_agent_takes_the_users_tools(command, tmp_path, monkeypatch):
    from regrpo.cli import _parser
    from regrpo.cli.common import chosen_tools
    from regrpo.tools import default_tools

    (tmp_path / "my_app.py").write_text(
        'def ping(text: str) -> str:\n    """Echo.\n\n    Args:\n        text: t.\n    """\n    return text\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    command = [str(tmp_path / part) if part.isupper() else part for part in command]
    parser = _parser()
    assert chosen_tools(parser.parse_args(command)) is None  # the built-in toolbox
    mixed = chosen_tools(parser.parse_args([*command, "--tool", "my_app:ping"]))
    only = chosen_tools(parser.parse_args([*command, "--tool", "my_app:ping", "--no-builtin-tools"]))
    assert mixed is not None and [t.name for t in mixed] == [*(t.name for t in default_tools()), "ping"]
    assert only is not None and [t.name for t in only] == ["ping"]


@pytest.mark.parametrize("command", TOOL_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_a_bad_tool_is_a_one_line_error_before_anything_loads(command, tmp_path, capsys):
    from regrpo.cli import main

    command = [str(tmp_path / part) if part.isupper() else part for part in command]
    store = ["--store", str(tmp_path / "t.sqlite")]
    model = [] if command[0] == "train" and command[1] == "data" else ["--model", str(tmp_path / "no-model")]
    code = main([*command, *store, *model, "--tool", "no_such_app_xyz:ping"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "error: cannot import tool module 'no_such_app_xyz'" in out


@pytest.mark.parametrize("command", [["run", "task"], ["serve"]], ids=["run", "serve"])
def test_run_and_serve_take_the_apps_verifier_and_refuse_a_bad_one_before_loading(
    command, tmp_path, monkeypatch, capsys
):
    from regrpo.cli import _parser, main
    from regrpo.cli.common import chosen_verifier

    (tmp_path / "my_checks.py").write_text("def right(task, answer):\n    return 1.0\nNOT_A_FUNCTION = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = _parser()
    assert chosen_verifier(parser.parse_args(command)) is None
    found = chosen_verifier(parser.parse_args([*command, "--verifier", "my_checks:right"]))
    assert found is not None and found("t", "a") == 1.0
    base = [*command, "--store", str(tmp_path / "t.sqlite"), "--model", str(tmp_path / "no-model")]
    for name, message in (
        ("my_checks:NOT_A_FUNCTION", "is a int, not a function"),
        ("my_checks:wrong", "module 'my_checks' has no 'wrong'"),
        ("no_such_checks_xyz:right", "cannot import verifier module 'no_such_checks_xyz'"),
    ):
        code = main([*base, "--verifier", name])
        out = " ".join(capsys.readouterr().out.split())
        assert code == 2 and message in out, out


def test_the_in_process_engines_batch_size_is_a_flag_checked_before_the_model_loads(tmp_path, capsys):
    from regrpo.cli import _parser, main

    assert _parser().parse_args(["serve"]).max_batch_size == 8  # LocalPolicy's default
    assert _parser().parse_args(["serve-model", "--max-batch-size", "1"]).max_batch_size == 1
    code = main(["run", "task", "--store", str(tmp_path / "t.sqlite"), "--max-batch-size", "0"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "max_batch_size >= 1" in out


def test_the_trainers_gate_rule_is_a_flag_and_defaults_to_the_paired_test():
    from regrpo.cli import _parser

    parser = _parser()
    assert parser.parse_args(["trainer", "--registry", "r"]).gate_rule == "paired_ci"
    chosen = parser.parse_args(["trainer", "--registry", "r", "--gate-rule", "any_improvement"])
    assert chosen.gate_rule == "any_improvement"
    with pytest.raises(SystemExit):
        parser.parse_args(["trainer", "--registry", "r", "--gate-rule", "vibes"])


def test_the_trainer_takes_the_outcome_term_and_refuses_a_negative_budget_before_loading(tmp_path, capsys):
    from regrpo.cli import _parser, main

    parsed = _parser().parse_args(["trainer", "--registry", "r", "--outcome-max-steps", "6"])
    assert (parsed.outcome_max_steps, parsed.outcome_weight) == (6, 1.0)
    store = ["--store", str(tmp_path / "t.sqlite"), "--model", str(tmp_path / "no-model")]
    code = main(["trainer", "--registry", str(tmp_path / "r"), *store, "--outcome-max-steps", "-1"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "outcome_max_steps must be >= 0" in out


def test_a_trainer_without_the_suite_needs_the_users_eval_set(tmp_path, capsys):
    from regrpo.cli import main

    code = main(
        ["trainer", "--registry", str(tmp_path / "r"), "--store", str(tmp_path / "t.sqlite"), "--no-suite"]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2 and "--no-suite leaves the gate without tasks" in out and "--eval-set FILE" in out
