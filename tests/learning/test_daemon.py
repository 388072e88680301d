"""TrainerDaemon: trains on new failures past a persisted watermark, gates, survives failed and killed rounds.

The store, registry, evaluation and gate are real; ``train_round`` really saves a fresh peft LoRA (on a
tiny randomly initialised Llama, so a round takes milliseconds). The gate evaluates a
``ScriptedPolicy`` (a test double: any adapter answers right, the base model wrong), so the first
round is promoted and later equal ones are refused. One held-out task tests nothing, so these daemons
gate with the point rule (``rule="any_improvement"``); the default paired rule refuses so few tasks.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import msgspec
import numpy as np
import pytest
import torch
from PIL import Image

from regrpo.agent.loop import Agent
from regrpo.agent.scripted import ScriptedPolicy
from regrpo.errors import InputError
from regrpo.evaluation import EvalOptions
from regrpo.learning.daemon import STATE_FILE, DaemonConfig, DaemonState, RoundReport, TrainerDaemon
from regrpo.learning.gate import GateConfig
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.tasks.schema import AnswerSpec, Task
from regrpo.tools.calculator import calculator
from regrpo.traces.schema import Episode, Feedback


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


class LoraRounds:
    """A real, tiny ``train_round``: records the trace ids it got and saves a fresh LoRA."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def __call__(self, trace_ids, folder):
        from peft import LoraConfig, get_peft_model

        self.calls.append(list(trace_ids))
        lora = get_peft_model(copy.deepcopy(self.model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        lora.save_pretrained(folder)
        return {"episodes": len(trace_ids), "lora_r": 4}


@pytest.fixture
def held_out(tmp_path):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(path)
    answer = AnswerSpec(kind="number", value=1.0, tolerance=0.01)
    return [
        Task(
            id="held-1",
            category="expression",
            difficulty=1,
            question="Say 1.",
            images=[str(path)],
            answer=answer,
            reference=[],
            seed=0,
        )
    ]


def adapter_answers_right() -> ScriptedPolicy:
    holder: list[ScriptedPolicy] = []
    holder.append(
        ScriptedPolicy(
            [lambda chat: "<answer>1</answer>" if holder[0].active_adapter else "<answer>0</answer>"],
            cycle=True,
        )
    )
    return holder[0]


def episode(store, *, fails: bool = True, task_id: str | None = None) -> str:
    """A finished episode: an unparseable turn (a failed step) then an answer, or just the answer."""
    script = (["no action here", "<answer>2</answer>"] if fails else []) + ["<answer>2</answer>"]
    agent = Agent(ScriptedPolicy(script), [calculator], store, 3)
    return agent.run("Add 1 and 1.", metadata={"task_id": task_id} if task_id else None).trace_id


def daemon(store, registry, train_round, tasks, on_promote=None, **config) -> TrainerDaemon:
    return TrainerDaemon(
        store,
        registry,
        adapter_answers_right(),
        train_round,
        tasks,
        config=DaemonConfig(**({"min_new_failures": 2} | config)),
        gate=GateConfig(rule="any_improvement"),
        options=EvalOptions(max_steps=2, max_new_tokens=16),
        on_promote=on_promote,
    )


def test_a_daemon_whose_paired_gate_could_never_promote_is_refused(store, tmp_path, held_out):
    registry = AdapterRegistry(tmp_path / "registry")
    with pytest.raises(InputError, match=r"needs at least 155 held-out tasks.*got 1.*any_improvement"):
        TrainerDaemon(store, registry, adapter_answers_right(), LoraRounds(None), held_out)


def test_rounds_train_on_new_failures_only_and_the_watermark_survives_a_restart(
    store, tmp_path, tiny_model, held_out
):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    first = episode(store)
    assert daemon(store, registry, rounds, held_out).run_once().status == "waiting"  # 1 < 2 failures

    episode(store, fails=False)  # nothing failed: not training data
    episode(store, task_id="held-1")  # a held-out task's episode: never training data
    second = episode(store)
    promotions = []
    report = daemon(store, registry, rounds, held_out, on_promote=promotions.append).run_once()

    assert report.status == "decided" and rounds.calls == [[first, second]]
    assert report.decision is not None and report.decision.promoted and registry.live() == report.version
    assert promotions == [report.decision]
    meta = registry.get(report.version)
    assert meta.config == {"episodes": 2, "lora_r": 4} and meta.data_until >= meta.data_since
    assert (registry.path(report.version) / "adapter_model.safetensors").is_file()

    restarted = daemon(store, registry, rounds, held_out)  # a new process: state comes from trainer.json
    assert restarted.state().rounds == 1 and restarted.run_once().status == "waiting"

    third, fourth = episode(store), episode(store)
    again = restarted.run_once()
    assert again.status == "decided" and rounds.calls[-1] == [third, fourth]
    assert not again.decision.promoted and registry.live() == report.version  # equal: refused


def test_the_watermark_waits_for_an_episode_still_running(store, tmp_path, tiny_model, held_out):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    running = Episode(trace_id="still-running", task="Add 1 and 1.", started_at=time.time(), model="scripted")
    store.put_header(running)
    later = [episode(store), episode(store)]
    worker = daemon(store, registry, rounds, held_out)
    assert worker.new_failures()[0] == [] and worker.run_once().status == "waiting"

    store.put_header(msgspec.structs.replace(running, status="error", error="crashed"))  # it failed
    assert worker.run_once().status == "decided" and rounds.calls == [["still-running", *later]]


def test_a_long_running_episode_that_still_beats_is_waited_for_and_a_silent_one_is_skipped(
    store, tmp_path, tiny_model, held_out
):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    hour_ago = time.time() - 3600
    # started an hour ago, its last step written now: alive (a long episode, not a dead process)
    alive = Episode(
        trace_id="long", task="Add 1 and 1.", started_at=hour_ago, model="m", updated_at=time.time()
    )
    store.put_header(alive)
    later = [episode(store), episode(store)]
    worker = daemon(store, registry, rounds, held_out, stale_running_s=60)
    assert worker.new_failures()[0] == [] and worker.run_once().status == "waiting"

    # its process died: no write for longer than stale_running_s, so it no longer holds the watermark
    store.put_header(msgspec.structs.replace(alive, updated_at=time.time() - 61))
    assert worker.run_once().status == "decided" and rounds.calls == [later]


def test_the_runtime_beats_the_heartbeat_at_every_step(store):
    beats: list[float | None] = []

    def reply(chat):
        beats.append(store.get_header(store.trace_ids()[-1]).updated_at)
        return "no action here" if len(beats) == 1 else "<answer>2</answer>"

    trace_id = Agent(ScriptedPolicy([reply], cycle=True), [calculator], store, 3).run("Add 1 and 1.").trace_id
    header = store.get_header(trace_id)
    assert beats[0] is not None and beats[1] > beats[0]  # written at the start, again after step 1
    assert header.updated_at == header.ended_at


def test_a_failing_round_leaves_nothing_behind_and_is_retried(store, tmp_path, tiny_model, held_out):
    registry = AdapterRegistry(tmp_path / "registry")
    ids = [episode(store), episode(store)]

    def broken(trace_ids, folder):
        (folder / "adapter_config.json").write_text("{}")
        raise RuntimeError("out of memory")

    report = daemon(store, registry, broken, held_out).run_once()
    assert report.status == "failed" and "out of memory" in report.error
    assert registry.list() == [] and registry.live() is None
    assert (
        list((registry.root / ".incoming").iterdir()) == []
        and daemon(store, registry, broken, held_out).state() == DaemonState()
    )

    rounds = LoraRounds(tiny_model)
    assert daemon(store, registry, rounds, held_out).run_once().status == "decided" and rounds.calls == [ids]


def test_episodes_that_give_nothing_to_learn_are_consumed_not_retried(store, tmp_path, tiny_model, held_out):
    from regrpo.errors import NothingToLearn

    registry = AdapterRegistry(tmp_path / "registry")
    ids = [episode(store), episode(store)]

    def barren(trace_ids, folder):
        raise NothingToLearn(f"{len(trace_ids)} episodes gave no branch points")

    report = daemon(store, registry, barren, held_out).run_once()
    assert (
        report.status == "nothing_to_learn" and report.trace_ids == ids and "no branch points" in report.error
    )
    assert registry.list() == [] and list((registry.root / ".incoming").iterdir()) == []
    assert daemon(store, registry, barren, held_out).state().trace_id == ids[-1]  # the watermark moved on
    later = [episode(store), episode(store)]
    rounds = LoraRounds(tiny_model)
    assert daemon(store, registry, rounds, held_out).run_once().status == "decided" and rounds.calls == [
        later
    ]


CHILD = textwrap.dedent(
    """
    import os, sys
    from regrpo.agent.scripted import ScriptedPolicy
    from regrpo.learning.daemon import DaemonConfig, TrainerDaemon
    from regrpo.learning.gate import GateConfig
    from regrpo.learning.registry import AdapterRegistry
    from regrpo.tasks.schema import AnswerSpec, Task
    from regrpo.traces import TraceStore

    def train_round(trace_ids, folder):
        (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        with open(folder / "adapter_model.safetensors", "wb") as f:
            f.write(b"x" * 4096)  # the first half of the weights
            f.flush()
            os.write(1, b"half\\n")  # tell the parent: kill me now
            sys.stdin.read()  # block until killed
        return {}

    task = Task(id="held-1", category="expression", difficulty=1, question="Say 1.", images=[],
                answer=AnswerSpec(kind="number", value=1.0), reference=[], seed=0)
    daemon = TrainerDaemon(TraceStore(sys.argv[1]), AdapterRegistry(sys.argv[2]), ScriptedPolicy(["x"]),
                           train_round, [task], config=DaemonConfig(min_new_failures=2),
                           gate=GateConfig(rule="any_improvement"))
    daemon.run_once()
    """
)


@pytest.mark.slow
def test_a_round_killed_mid_write_promotes_nothing_and_the_restart_retrains_the_same_traces(
    store, tmp_path, tiny_model, held_out
):
    registry = AdapterRegistry(tmp_path / "registry")
    ids = [episode(store), episode(store)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store.path, str(registry.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"half\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        assert child.wait(timeout=120) == -signal.SIGKILL
        child.stdin.close()
        child.stdout.close()

    assert registry.list() == [] and registry.live() is None
    assert registry.read_state(STATE_FILE) is None  # the watermark never moved
    assert len(list((registry.root / ".incoming").iterdir())) == 1  # the half-written folder, unlisted

    rounds = LoraRounds(tiny_model)
    restarted = daemon(store, registry, rounds, held_out, prune_incoming_after_s=0)
    assert len(restarted.start()) == 1 and list((registry.root / ".incoming").iterdir()) == []
    report = restarted.run_once()
    assert (
        report.status == "decided" and rounds.calls == [ids] and registry.live() == report.version == "v0001"
    )


PHASE_CHILD = textwrap.dedent(
    """
    import os, sys
    from regrpo.agent.scripted import ScriptedPolicy
    from regrpo.evaluation import EvalOptions
    from regrpo.learning.daemon import DaemonConfig, TrainerDaemon
    from regrpo.learning.gate import GateConfig
    from regrpo.learning.registry import AdapterRegistry
    from regrpo.tasks.schema import AnswerSpec, Task
    from regrpo.traces import TraceStore

    store_path, registry_path, phase = sys.argv[1:4]

    def hold(where):
        if where == phase:
            os.write(1, (where + "\\n").encode())  # tell the parent: kill me now
            sys.stdin.read()  # block until killed

    def train_round(trace_ids, folder):
        (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        (folder / "adapter_model.safetensors").write_bytes(b"x" * 64)
        hold("train")
        return {}

    real_commit, real_promote = AdapterRegistry.commit, AdapterRegistry.promote

    def commit(self, *args, **kwargs):  # killed once the version is published, before trainer.json
        meta = real_commit(self, *args, **kwargs)
        hold("commit")
        return meta

    def promote(self, *args, **kwargs):  # killed once the live pointer moved, before trainer.json
        result = real_promote(self, *args, **kwargs)
        hold("promote")
        return result

    AdapterRegistry.commit, AdapterRegistry.promote = commit, promote
    policy = ScriptedPolicy([lambda chat: "<answer>0</answer>"], cycle=True)

    def reply(chat):  # the gate's evaluation of the candidate: killed mid-evaluation
        if policy.active_adapter:
            hold("gate")
            return "<answer>1</answer>"
        return "<answer>0</answer>"

    policy.script = [reply]
    task = Task(id="held-1", category="expression", difficulty=1, question="Say 1.", images=[],
                answer=AnswerSpec(kind="number", value=1.0, tolerance=0.01), reference=[], seed=0)
    daemon = TrainerDaemon(
        TraceStore(store_path), AdapterRegistry(registry_path), policy, train_round, [task],
        config=DaemonConfig(min_new_failures=2), gate=GateConfig(rule="any_improvement"),
        options=EvalOptions(max_steps=2, max_new_tokens=16), on_promote=lambda decision: hold("swap"),
    )
    daemon.run_once()
    os.write(1, b"finished\\n")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "retrained"),
    [("train", True), ("commit", True), ("gate", False), ("promote", False), ("swap", False)],
)
def test_a_trainer_killed_at_any_phase_leaves_nothing_half_promoted_and_resumes(
    phase, retrained, store, tmp_path, tiny_model, held_out
):
    registry = AdapterRegistry(tmp_path / "registry")
    ids = [episode(store), episode(store)]
    child = subprocess.Popen(
        [sys.executable, "-c", PHASE_CHILD, store.path, str(registry.root), phase],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == f"{phase}\n".encode()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        assert child.wait(timeout=120) == -signal.SIGKILL
        child.stdin.close()
        child.stdout.close()
    live_at_kill = registry.live()
    assert live_at_kill == ("v0001" if phase in ("promote", "swap") else None)  # the pointer moves last

    rounds = LoraRounds(tiny_model)
    restarted = daemon(store, registry, rounds, held_out, prune_incoming_after_s=0)
    restarted.start()
    assert restarted.live_policy.active_adapter == live_at_kill  # serving follows the registry at start
    reports = [restarted.run_once() for _ in range(2)]
    assert [r.status for r in reports] == ["decided", "waiting"] or (
        phase == "swap" and [r.status for r in reports] == ["waiting", "waiting"]
    )
    assert rounds.calls == ([ids] if retrained else [])  # retrained only where nothing was pending
    state = restarted.state()
    assert state.pending is None and state.rounds == 1
    assert (state.started_at, state.trace_id) == max((store.get_header(i).started_at, i) for i in ids)
    live = registry.live()
    # a version published but never recorded as pending (killed after commit) is never made live
    assert live == ("v0002" if phase == "commit" else "v0001")
    assert restarted.live_policy.active_adapter == live
    assert list((registry.root / ".incoming").iterdir()) == []


def committed_before_a_crash(store, registry, rounds, held_out):
    """What ``run_once`` had done when its process died: trained, committed, recorded as pending."""
    ids = [episode(store), episode(store)]
    worker = daemon(store, registry, rounds, held_out)
    _, until = worker.new_failures()
    folder = registry.begin()
    rounds(ids, folder)
    version = registry.commit(folder, AdapterMeta(base_model="scripted")).version
    registry.write_state(STATE_FILE, msgspec.json.encode(DaemonState(pending=version, pending_until=until)))
    return worker, version, until


def test_a_version_committed_before_a_crash_is_gated_on_restart_not_retrained(
    store, tmp_path, tiny_model, held_out
):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    worker, version, until = committed_before_a_crash(store, registry, rounds, held_out)

    report = daemon(store, registry, rounds, held_out).run_once()
    assert report.resumed and report.status == "decided" and report.version == version
    assert registry.live() == version and len(rounds.calls) == 1  # gated, not trained again
    state = worker.state()
    assert state.pending is None and (state.started_at, state.trace_id) == until and state.rounds == 1
    assert worker.run_once().status == "waiting"


def test_run_forever_trains_when_failures_arrive_and_stops_on_the_event(
    store, tmp_path, tiny_model, held_out
):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    trained, stop = threading.Event(), threading.Event()

    def train_and_signal(trace_ids, folder):
        info = rounds(trace_ids, folder)
        trained.set()
        return info

    worker = daemon(store, registry, train_and_signal, held_out)
    thread = threading.Thread(target=worker.run_forever, args=(0.05, stop))
    thread.start()
    try:
        ids = [episode(store), episode(store)]
        assert trained.wait(timeout=60)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and rounds.calls == [ids]
    assert registry.live() == "v0001" and worker.state().rounds == 1


def test_a_kill_after_promotion_before_the_state_is_saved_is_decided_on_restart(
    store, tmp_path, tiny_model, held_out
):
    """Issue 13 (6): the restart used to fail forever with "v0001 is already live"."""
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    worker, version, until = committed_before_a_crash(store, registry, rounds, held_out)
    registry.promote(version)  # the gate's pointer move happened; trainer.json was not saved

    report = daemon(store, registry, rounds, held_out).run_once()
    assert report.status == "decided" and report.resumed and report.version == version
    state = worker.state()
    assert state.pending is None and (state.started_at, state.trace_id) == until and state.rounds == 1
    assert worker.run_once().status == "waiting" and len(rounds.calls) == 1


def test_run_forever_survives_a_poll_that_raises(store, tmp_path, tiny_model, held_out, monkeypatch):
    registry = AdapterRegistry(tmp_path / "registry")
    worker = daemon(store, registry, LoraRounds(tiny_model), held_out)
    stop, polls = threading.Event(), []

    def flaky():
        polls.append(len(polls))
        if len(polls) == 1:
            raise RuntimeError("database is locked")
        stop.set()
        return RoundReport(status="waiting")

    monkeypatch.setattr(worker, "run_once", flaky)
    thread = threading.Thread(target=worker.run_forever, args=(0.01, stop))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and polls == [0, 1]  # the raising poll did not end the loop


def test_a_traffic_answer_the_user_named_wrong_counts_as_a_failure(store, tmp_path, tiny_model, held_out):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    wrong, right = episode(store, fails=False), episode(store, fails=False)  # both answer 2, no step failed
    store.add_feedback(wrong, Feedback(answer="3"))
    store.add_feedback(right, Feedback(answer="2"))
    failed = episode(store)
    assert daemon(store, registry, rounds, held_out).run_once().status == "decided"
    assert rounds.calls == [[wrong, failed]]


def test_the_watermark_waits_for_feedback_on_a_recent_answer(store, tmp_path, tiny_model, held_out):
    registry = AdapterRegistry(tmp_path / "registry")
    rounds = LoraRounds(tiny_model)
    answered = episode(store, fails=False)
    later = [episode(store), episode(store)]
    worker = daemon(store, registry, rounds, held_out, feedback_wait_s=3600)
    assert worker.new_failures()[0] == [] and worker.run_once().status == "waiting"

    store.add_feedback(answered, Feedback(answer="5"))  # the user: the answer was 5, not 2
    assert worker.run_once().status == "decided" and rounds.calls == [[answered, *later]]
    with pytest.raises(InputError, match="feedback_wait_s"):
        DaemonConfig(feedback_wait_s=-1)
