"""The agent loop driven by a scripted policy: failure → reflection → corrected action → answer."""

from __future__ import annotations

import asyncio
import io
import math
import threading

import numpy as np
import pytest
from PIL import Image

from regrpo import Agent, ErrorType, ScriptedPolicy, tool
from regrpo.errors import ImageError, InputError, TaskError
from regrpo.tools import ToolContext
from regrpo.traces import Answer, ToolCall, Unparseable

BAD_CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "17*/23"}}</tool_call>'
REFLECT_AND_FIX = (
    '<reflection>{"error_type": "ArgInvalid", "evidence": "cannot parse expression 17*/23", '
    '"fix_plan": "remove the stray slash"}</reflection>'
    '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>'
)


def test_failure_reflection_correction_answer(store):
    agent = Agent(ScriptedPolicy([BAD_CALL, REFLECT_AND_FIX, "<answer>391</answer>"]), store=store)
    result = agent.run("What is 17*23?")

    assert (result.status, result.answer) == ("answered", "391")
    failed, fixed, answered = result.steps
    assert failed.observation.error_type is ErrorType.ARG_INVALID and failed.failed
    assert failed.reflection_requested is None
    assert fixed.reflection_requested == "tool_error"
    assert fixed.reflection.error_type is ErrorType.ARG_INVALID and fixed.reflection_problem is None
    assert fixed.observation.output == 391
    assert isinstance(answered.action, Answer) and answered.reflection_requested is None
    assert result.reflections == [fixed.reflection]
    usage = result.usage
    assert (
        usage.steps,
        usage.tool_calls,
        usage.tool_failures,
        usage.reflections,
        usage.valid_reflections,
    ) == (3, 2, 1, 1, 1)
    assert usage.reflection_tokens > 0

    # what the model was shown after the failure: the error, the arguments, and the request to reflect
    episode = store.get(result.trace_id)
    shown = episode.messages[fixed.prompt_messages - 1]
    assert shown.role == "user"
    assert "cannot parse expression '17*/23'" in shown.content
    assert '"expression":"17*/23"' in shown.content
    assert "<reflection>" in shown.content
    assert [s.index for s in episode.steps] == [0, 1, 2]
    assert episode.status == "answered" and not episode.usage.wall_s == 0


def test_no_reflection_is_asked_after_a_successful_step(store):
    good = '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>'
    result = Agent(ScriptedPolicy([good, "<answer>4</answer>"]), store=store).run("2+2?")
    assert [s.reflection_requested for s in result.steps] == [None, None]
    assert "<reflection>" not in store.get(result.trace_id).messages[-1].content


def test_reflect_false_is_a_plain_retry_loop(store):
    agent = Agent(
        ScriptedPolicy([BAD_CALL, REFLECT_AND_FIX, "<answer>391</answer>"]), store=store, reflect=False
    )
    result = agent.run("What is 17*23?")
    assert result.status == "answered"
    assert all(s.reflection_requested is None and s.reflection is None for s in result.steps)
    assert result.usage.reflections == 0


def test_missing_reflection_is_recorded_not_invented(store):
    script = [
        BAD_CALL,
        '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>',
        "<answer>391</answer>",
    ]
    result = Agent(ScriptedPolicy(script), store=store).run("What is 17*23?")
    assert result.steps[1].reflection is None
    assert result.steps[1].reflection_problem.startswith("missing")
    assert result.usage.reflections == 0


def test_unparseable_and_unknown_tool_become_observations(store):
    script = [
        "the answer is 4",
        '<tool_call>{"name": "abacus", "arguments": {}}</tool_call>',
        "<answer>4</answer>",
    ]
    result = Agent(ScriptedPolicy(script), store=store).run("2+2?")
    unparseable, unknown, _ = result.steps
    assert isinstance(unparseable.action, Unparseable)
    assert unparseable.observation.error_type is ErrorType.UNPARSEABLE_ACTION
    assert unknown.observation.error_type is ErrorType.UNKNOWN_TOOL
    assert "calculator" in unknown.observation.error_message  # names the tools that do exist
    assert result.usage.tool_failures == 1  # the unparseable turn was not a tool call


def test_a_model_that_never_answers_ends_at_max_steps(store):
    agent = Agent(ScriptedPolicy(["hmm"], cycle=True), store=store, max_steps=3)
    result = agent.run("2+2?")
    assert (result.status, result.answer, len(result.steps)) == ("max_steps", None, 3)
    assert store.get(result.trace_id).status == "max_steps"


def test_a_raising_tool_is_a_recorded_crash(store):
    @tool
    def flaky(x: int) -> int:
        """Always fails."""
        raise RuntimeError("disk on fire")

    script = ['<tool_call>{"name": "flaky", "arguments": {"x": 1}}</tool_call>', "<answer>?</answer>"]
    result = Agent(ScriptedPolicy(script), tools=[flaky], store=store).run("go")
    assert result.steps[0].observation.error_type is ErrorType.TOOL_CRASH
    assert "disk on fire" in result.steps[0].observation.error_message


def test_a_slow_tool_times_out(store):
    release = threading.Event()

    @tool(timeout_s=0.2)
    def stuck(x: int) -> int:
        """Waits until released."""
        release.wait(30)
        return x

    script = ['<tool_call>{"name": "stuck", "arguments": {"x": 1}}</tool_call>', "<answer>?</answer>"]
    try:
        result = Agent(ScriptedPolicy(script), tools=[stuck], store=store).run("go")
    finally:
        release.set()
    assert result.steps[0].observation.error_type is ErrorType.TIMEOUT
    assert result.steps[1].reflection_requested == "tool_error"


def test_malformed_arguments_fail_validation_before_the_tool_runs(store):
    ran = []

    @tool
    def double(x: int) -> int:
        """Doubles x."""
        ran.append(x)
        return 2 * x

    script = [
        '<tool_call>{"name": "double", "arguments": {"x": "two", "y": 1}}</tool_call>',
        "<answer>?</answer>",
    ]
    result = Agent(ScriptedPolicy(script), tools=[double], store=store).run("go")
    observation = result.steps[0].observation
    assert observation.error_type is ErrorType.ARG_INVALID
    assert "x:" in observation.error_message and "y:" in observation.error_message
    assert ran == []


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_in_every_accepted_form_and_tool_made_images(store, tmp_path):
    array = np.zeros((40, 60, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    script = [
        '<tool_call>{"name": "rotate", "arguments": {"image": "img_3", "angle": 90}}</tool_call>',
        "<answer>done</answer>",
    ]
    images = [str(path), _png_bytes(array), Image.fromarray(array), array]
    result = Agent(ScriptedPolicy(script), store=store).run("rotate the last one", images)
    episode = store.get(result.trace_id)
    assert [(i.image_id, i.width, i.height) for i in episode.images] == [
        (f"img_{k}", 60, 40) for k in range(4)
    ]
    assert len({i.sha256 for i in episode.images}) == 1  # same pixels, same hash
    assert "img_0 (60x40)" in episode.messages[1].content
    assert result.steps[0].observation.new_images == ["img_4"]
    assert result.steps[0].observation.output == {"image": "img_4", "width": 40, "height": 60}


@pytest.mark.parametrize(
    ("task", "images", "error"),
    [
        ("", None, TaskError),
        ("   ", None, TaskError),
        (42, None, TaskError),
        ("look", "/no/such/image.png", ImageError),
        ("look", b"not an image", ImageError),
        ("look", [{"not": "an image"}], ImageError),
    ],
)
def test_bad_input_raises_a_clear_error_and_the_trace_is_written(store, task, images, error):
    agent = Agent(ScriptedPolicy(["<answer>x</answer>"]), store=store)
    with pytest.raises(error) as caught:
        agent.run(task, images)
    episode = store.get(caught.value.trace_id)
    assert episode.status == "error"
    assert type(caught.value).__name__ in episode.error
    assert isinstance(caught.value, InputError)


def test_our_own_bugs_are_raised_and_still_recorded(store):
    def broken(messages):
        raise ZeroDivisionError("policy bug")

    agent = Agent(ScriptedPolicy([broken]), store=store)
    with pytest.raises(ZeroDivisionError):
        agent.run("2+2?")
    (trace_id,) = store.trace_ids()
    assert store.get(trace_id).error == "ZeroDivisionError: policy bug"


def test_run_many_keeps_input_order_and_bounds_concurrency(store):
    inside, peak, lock = 0, 0, threading.Lock()
    entered = threading.Barrier(2, timeout=10)

    def answer(messages):
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        entered.wait()  # two episodes must be generating at the same time to pass this
        with lock:
            inside -= 1
        task = messages[1]["content"]
        return f"<answer>{task.split()[-1]}</answer>"

    agent = Agent(ScriptedPolicy([answer], cycle=True), store=store)
    results = agent.run_many([f"echo {i}" for i in range(6)], concurrency=2)
    assert [r.answer for r in results] == [str(i) for i in range(6)]
    assert peak == 2
    assert len(store) == 6


def test_run_inside_a_running_event_loop(store):
    agent = Agent(ScriptedPolicy(["<answer>ok</answer>"]), store=store)

    async def caller():
        return agent.run("hi")

    assert asyncio.run(caller()).answer == "ok"


def test_feedback_records_a_reward(store):
    agent = Agent(ScriptedPolicy(["<answer>391</answer>", "<answer>341</answer>"]), store=store)
    right, wrong = agent.run("17*23?"), agent.run("17*23?")
    assert agent.feedback(right.trace_id, answer="391.0").reward == 1.0
    assert agent.feedback(wrong.trace_id, answer="391").reward == 0.0
    agent.feedback(wrong.trace_id, reward=0.25)
    assert store.get(wrong.trace_id).reward == 0.25
    with pytest.raises(InputError):
        agent.feedback(right.trace_id)
    with pytest.raises(KeyError):
        agent.feedback("no-such-trace", reward=1.0)


def test_user_tools_receive_the_context(store):
    @tool
    def image_area(image: str, ctx: ToolContext) -> int:
        """Area of an image in pixels.

        Args:
            image: image id
        """
        height, width = ctx.images.get(image).shape[:2]
        return height * width

    script = [
        '<tool_call>{"name": "image_area", "arguments": {"image": "img_0"}}</tool_call>',
        "<answer>x</answer>",
    ]
    agent = Agent(ScriptedPolicy(script), tools=[image_area], store=store)
    assert "image_area(image: string)" in agent.system_prompt
    result = agent.run("area?", np.zeros((3, 5), dtype=np.uint8))
    assert result.steps[0].observation.output == 15


def test_the_episode_key_names_the_task_and_images_not_the_run(store):
    keys: list[str] = []

    @tool
    def note_key(ctx: ToolContext) -> int:
        """Record the episode key the runtime passed."""
        keys.append(ctx.episode_key)
        return len(keys)

    def run(task: str, pixel: int) -> str:
        script = ['<tool_call>{"name": "note_key", "arguments": {}}</tool_call>', "<answer>x</answer>"]
        agent = Agent(ScriptedPolicy(script), tools=[note_key], store=store)
        agent.run(task, np.full((3, 5), pixel, np.uint8))
        return keys[-1]

    first = run("count the dots", 0)
    assert first and run("count the dots", 0) == first  # another run (another method) of the same task
    assert run("count the dots", 1) != first  # other pixels
    assert run("count the lines", 0) != first  # other words


@pytest.mark.parametrize("kwargs", [{"max_steps": 0}, {"max_new_tokens": 0}, {"temperature": -1}])
def test_bad_agent_settings(store, kwargs):
    with pytest.raises(InputError):
        Agent(ScriptedPolicy(["x"]), store=store, **kwargs)


def test_tool_call_action_is_stored_with_arguments(store):
    result = Agent(ScriptedPolicy([BAD_CALL, "<answer>x</answer>"]), store=store).run("q")
    assert store.get(result.trace_id).steps[0].action == ToolCall("calculator", {"expression": "17*/23"})


def test_every_step_records_the_adapter_that_produced_it(store):
    policy = ScriptedPolicy(["<answer>a</answer>"], cycle=True)
    policy.load_adapter("v1", "/adapters/v1")
    policy.activate_adapter("v1")
    agent = Agent(policy, store=store)
    tuned = store.get(agent.run("q").trace_id)
    policy.activate_adapter(None)
    base = store.get(agent.run("q").trace_id)
    assert (tuned.adapter, [s.adapter for s in tuned.steps]) == ("v1", ["v1"])
    assert (base.adapter, [s.adapter for s in base.steps]) == (None, [None])


def test_a_swap_during_a_tool_call_does_not_relabel_the_step_that_made_the_call(store):
    call_swap = '<tool_call>{"name": "swap", "arguments": {}}</tool_call>'
    policy = ScriptedPolicy([call_swap, "<answer>a</answer>"])
    policy.load_adapter("v1", "/adapters/v1")
    policy.load_adapter("v2", "/adapters/v2")
    policy.activate_adapter("v1")

    @tool
    def swap() -> str:
        """Promotes v2 while the step that called it is still running."""
        policy.activate_adapter("v2")
        return "swapped"

    episode = store.get(Agent(policy, tools=[swap], store=store).run("q").trace_id)
    assert [s.adapter for s in episode.steps] == ["v1", "v2"]


def test_confidence_scores_the_action_not_the_reflection(store):
    from regrpo.traces import Completion

    reflect = (
        '<reflection>{"error_type": "ArgInvalid", "evidence": "cannot parse expression", '
        '"fix_plan": "fix it"}</reflection><answer>x</answer>'
    )

    class Confident(ScriptedPolicy):
        """Scripted replies with log-probs: the reflection is certain (0.0), the action unsure (-2.0)."""

        def generate(self, messages, **kwargs):
            (completion,) = super().generate(messages, **kwargs)
            words = self.count_tokens(completion.text)
            action_words = self.count_tokens(completion.text.split("</reflection>")[-1])
            logprobs = [0.0] * (words - action_words) + [-2.0] * action_words
            return [Completion(completion.text, token_ids=list(range(words)), logprobs=logprobs)]

    result = Agent(Confident([BAD_CALL, reflect]), store=store).run("q")
    assert result.steps[1].reflection is not None
    assert result.steps[1].confidence == pytest.approx(math.exp(-2.0))


def test_a_caller_chosen_trace_id_names_the_episode_and_is_never_reused(store):
    agent = Agent(ScriptedPolicy(["<answer>1</answer>"], cycle=True), store=store)
    assert agent.run("t", trace_id="req-42").trace_id == "req-42" and "req-42" in store
    with pytest.raises(InputError, match="already in the trace store"):
        agent.run("another task", trace_id="req-42")
    assert store.get("req-42").task == "t"  # the first episode is intact
    with pytest.raises(InputError, match="letters, digits"):
        agent.run("t", trace_id="no spaces allowed")
    assert "fresh" not in store and len(store) == 1


# -- when a reflection is asked for (issue 11, item 7) ----------------------------------------------

GOOD_CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>'


class WithLogprobs(ScriptedPolicy):
    """Scripted replies whose tokens all have the given log-prob, one value per call."""

    def __init__(self, script, logprobs):
        super().__init__(script)
        self.logprobs = list(logprobs)

    def generate(self, messages, **kwargs):
        from regrpo.traces import Completion

        (completion,) = super().generate(messages, **kwargs)
        words = self.count_tokens(completion.text)
        value = self.logprobs[self.calls - 1]
        return [Completion(completion.text, token_ids=list(range(words)), logprobs=[value] * words)]


def unsure_second_call() -> WithLogprobs:
    """Two successful calls, the second far less confident than the first, then the answer."""
    return WithLogprobs([GOOD_CALL, GOOD_CALL, "<answer>4</answer>"], logprobs=[-0.1, -3.0, -0.1])


def test_a_default_agent_asks_for_no_reflection_after_a_successful_low_confidence_step(store):
    result = Agent(unsure_second_call(), store=store).run("2+2?")
    assert result.steps[1].confidence < result.steps[0].confidence  # ReGRPO's u_2 < κ_2 holds...
    assert [s.reflection_requested for s in result.steps] == [None, None, None]  # ...and asks nothing
    shown = [m.content for m in store.get(result.trace_id).messages if m.role == "user"]
    assert not any("<reflection>" in text for text in shown)


def test_the_low_confidence_trigger_is_an_opt_in(store):
    result = Agent(unsure_second_call(), store=store, confidence_trigger=True).run("2+2?")
    assert [s.reflection_requested for s in result.steps] == [None, None, "low_confidence"]


def test_a_default_agent_still_asks_after_failed_and_unparseable_steps(store):
    script = [BAD_CALL, "no action at all", "<answer>x</answer>"]
    result = Agent(WithLogprobs(script, logprobs=[-0.1, -0.1, -0.1]), store=store).run("q")
    assert [s.reflection_requested for s in result.steps] == [None, "tool_error", "tool_error"]


# -- which adapter an agent runs (issue 11: the default agent is the best shipped agent) -----------


def peft_folder(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def test_a_given_policy_is_used_as_it_is_unless_an_adapter_is_given(store, tmp_path):
    from regrpo.agent.adapters import WARM_START

    policy = ScriptedPolicy(["<answer>a</answer>"], cycle=True)
    policy.load_adapter("v1", "/adapters/v1")
    policy.activate_adapter("v1")
    assert Agent(policy, store=store).policy.active_adapter == "v1"  # left out: untouched

    agent = Agent(policy, store=store, adapter=WARM_START)
    episode = store.get(agent.run("q").trace_id)
    assert (policy.active_adapter, episode.adapter, episode.steps[0].adapter) == ("warm-start",) * 3

    Agent(policy, store=store, adapter=peft_folder(tmp_path / "rot-sft"))
    assert policy.active_adapter == "rot-sft"  # named after its folder
    Agent(policy, store=store, adapter=None)
    assert policy.active_adapter is None  # explicit None: the base model


def test_a_bad_adapter_path_says_which_and_what_to_do(store, tmp_path):
    from regrpo.errors import AdapterError

    policy = ScriptedPolicy(["<answer>a</answer>"])
    with pytest.raises(AdapterError, match=r"'.*missing' does not exist: pass the folder .*--no-adapter"):
        Agent(policy, store=store, adapter=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match=r"'.*empty' is not a PEFT adapter folder"):
        Agent(policy, store=store, adapter=tmp_path / "empty")
    with pytest.raises(AdapterError, match="does not exist"):  # checked before any model would load
        Agent(store=store, adapter=tmp_path / "missing")
    assert policy.active_adapter is None


def test_an_adapter_with_a_policy_that_cannot_load_one_is_an_input_error(store):
    class Plain:
        """Generates, but has no adapter methods."""

        model_name = "plain"
        active_adapter = None

        def generate(self, messages, **kwargs):
            return ScriptedPolicy(["<answer>a</answer>"]).generate(messages, **kwargs)

        def count_tokens(self, text):
            return len(text.split())

    from regrpo.agent.adapters import WARM_START

    assert Agent(Plain(), store=store).run("q").answer == "a"  # no adapter asked for: fine
    with pytest.raises(InputError, match="cannot switch adapters .*load_adapter, activate_adapter"):
        Agent(Plain(), store=store, adapter=WARM_START)


@pytest.mark.slow
def test_the_default_agent_runs_the_shipped_warm_start(store):
    tuned = Agent(store=store, max_steps=1, max_new_tokens=24)
    base = Agent(store=store, max_steps=1, max_new_tokens=24, adapter=None)
    assert (tuned.policy.active_adapter, base.policy.active_adapter) == ("warm-start", None)
    task = "What is 17*23? Use the calculator."
    tuned_episode = store.get(tuned.run(task).trace_id)
    base_episode = store.get(base.run(task).trace_id)
    assert (tuned_episode.adapter, tuned_episode.steps[0].adapter) == ("warm-start", "warm-start")
    assert base_episode.adapter is None
    # the adapter is really active, not just named: greedy decoding differs from the base model's
    assert tuned_episode.steps[0].completion.token_ids != base_episode.steps[0].completion.token_ids
