"""``regrpo serve`` over a real socket, driven by the official ``openai`` client.

Most tests use a scripted policy (a test double, so answers are deterministic); one runs the real
SmolLM2. The server runs in uvicorn on a free port in a thread; tests wait on its ``ready`` event.
"""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from server_helpers import data_url, image_message, png_bytes

from regrpo import Agent, ScriptedPolicy
from regrpo.server.app import build_agent_app, start_in_thread
from regrpo.server.config import ServerConfig
from regrpo.tools.calculator import calculator
from regrpo.tools.image_ops import crop

KEY = "sk-test-key"


@pytest.fixture
def served(scripted_agent):
    """(server, agent) for the scripted agent, with one API key and a 64 KiB body limit."""
    config = ServerConfig(api_keys=(KEY,), max_body_bytes=64 * 1024)
    with start_in_thread(build_agent_app(scripted_agent, config)) as server:
        yield server, scripted_agent


def client_for(server, key: str = KEY, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=timeout)


def ask(client: openai.OpenAI, text: str, model: str = "regrpo-agent"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def test_chat_completion_with_a_data_image(served):
    server, agent = served
    completion = client_for(server).chat.completions.create(
        model="regrpo-agent",
        messages=[image_message("Crop the corner and tell me its size.", data_url(png_bytes(12, 10)))],
    )
    assert completion.choices[0].message.content == "4x3"  # read off the real crop of our image
    assert completion.choices[0].finish_reason == "stop"
    extension = completion.model_extra["regrpo"]
    assert extension["status"] == "answered"
    assert [s["kind"] for s in extension["steps"]] == ["tool_call", "answer"]
    assert extension["steps"][0]["action"]["name"] == "crop" and extension["steps"][0]["ok"] is True
    assert extension["usage"]["tool_calls"] == 1 and completion.usage.prompt_tokens > 0

    episode = agent.store.get(extension["trace_id"])  # the same episode, durable in the trace store
    assert episode.status == "answered" and episode.answer == "4x3"
    assert [(i.width, i.height) for i in episode.images] == [(12, 10)]


def test_streaming_sends_one_chunk_per_step_then_done(served):
    server, agent = served
    stream = client_for(server).chat.completions.create(
        model="regrpo-agent",
        messages=[image_message("Crop it.", data_url(png_bytes(9, 9)))],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the client stops at data: [DONE]
    steps = [
        c.model_extra["regrpo"]["step"] for c in chunks if (c.model_extra or {}).get("regrpo", {}).get("step")
    ]
    assert [s["kind"] for s in steps] == ["tool_call", "answer"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "4x3"
    reasoning = [c.choices[0].delta.model_extra.get("reasoning") for c in chunks if c.choices]
    assert any(r and "crop(" in r for r in reasoning)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    trace_id = finish[0].model_extra["regrpo"]["trace_id"]
    assert chunks[0].model_extra["regrpo"]["trace_id"] == trace_id  # announced before any step ran
    assert len(agent.store.get(trace_id).steps) == len(steps)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_raw_stream_ends_with_done(served):
    server, _ = served
    body = {"model": "regrpo-agent", "stream": True, "messages": [image_message("x", data_url(png_bytes()))]}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=auth()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in response.iter_lines() if line]
    assert frames[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in frames)


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_feedback_is_recorded_and_unknown_traces_are_404(served):
    server, agent = served
    client = client_for(server)
    completion = client.chat.completions.create(
        model="regrpo-agent", messages=[image_message("size?", data_url(png_bytes()))]
    )
    trace_id = completion.model_extra["regrpo"]["trace_id"]

    graded = client.post("/feedback", body={"trace_id": trace_id, "answer": "4X3 "}, cast_to=httpx.Response)
    assert graded.json()["reward"] == 1.0 and graded.json()["episode_answer"] == "4x3"
    client.post("/feedback", body={"trace_id": trace_id, "reward": 0.25}, cast_to=httpx.Response)
    assert [f.reward for f in agent.store.get(trace_id).feedback] == [1.0, 0.25]

    with pytest.raises(openai.NotFoundError) as missing:
        client.post("/feedback", body={"trace_id": "no-such-trace", "reward": 1}, cast_to=httpx.Response)
    assert missing.value.body["param"] == "trace_id"
    with pytest.raises(openai.BadRequestError):
        client.post("/feedback", body={"trace_id": trace_id}, cast_to=httpx.Response)


def test_wrong_or_missing_key_is_401_but_health_is_open(served):
    server, _ = served
    with pytest.raises(openai.AuthenticationError) as denied:
        client_for(server, key="sk-wrong").models.list()
    assert denied.value.status_code == 401 and denied.value.body["code"] == 401
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert [m.id for m in client_for(server).models.list()] == ["regrpo-agent"]


def test_oversize_body_is_413_before_parsing(served):
    server, _ = served
    big = data_url(png_bytes(200, 200, seed=3))  # random pixels: ~120 KB of PNG, over the 64 KiB limit
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(server).chat.completions.create(model="regrpo-agent", messages=[image_message("x", big)])
    assert refused.value.status_code == 413 and "at most 65,536" in refused.value.message
    # a chunked body (no Content-Length) is counted while it is read
    chunked = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=iter([b"{" + b" " * 40_000] * 3),
        headers={**auth(), "content-type": "application/json"},
    )
    assert chunked.status_code == 413


def test_unknown_model_is_404_and_metrics_count_requests(served):
    server, _ = served
    with pytest.raises(openai.NotFoundError) as missing:
        client_for(server).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["param"] == "model"
    text = httpx.get(f"{server.url}/metrics", headers=auth()).text
    assert 'regrpo_http_requests_total{method="POST",route="/v1/chat/completions",status="404"} 1.0' in text


def test_overload_is_429_with_retry_after_and_shutdown_is_503(store):
    entered, release = threading.Event(), threading.Event()

    def blocking(chat):
        entered.set()
        release.wait(60)
        return "<answer>done</answer>"

    agent = Agent(ScriptedPolicy([blocking], cycle=True), tools=[calculator], store=store)
    config = ServerConfig(api_keys=(KEY,), max_concurrency=1, max_queue=0, retry_after_s=7)
    app = build_agent_app(agent, config)
    with start_in_thread(app) as server:
        client = client_for(server)
        first: dict = {}
        worker = threading.Thread(
            target=lambda: first.update(
                r=client.chat.completions.create(
                    model="regrpo-agent", messages=[{"role": "user", "content": "a"}]
                )
            )
        )
        worker.start()
        try:
            assert entered.wait(30)  # the first episode holds the only slot
            with pytest.raises(openai.RateLimitError) as busy:
                client.chat.completions.create(
                    model="regrpo-agent", messages=[{"role": "user", "content": "b"}]
                )
            assert busy.value.status_code == 429 and busy.value.response.headers["Retry-After"] == "7"
            assert httpx.get(f"{server.url}/healthz").json()["running"] == 1
        finally:
            release.set()
            worker.join(30)
        assert first["r"].choices[0].message.content == "done"

        app.state.service.gate.closed = True  # what the lifespan does at shutdown
        with pytest.raises(openai.InternalServerError) as closing:
            ask(client, "c")
        assert closing.value.status_code == 503 and closing.value.response.headers["Retry-After"] == "7"
        metrics = httpx.get(f"{server.url}/metrics", headers=auth()).text
        assert 'regrpo_rejections_total{reason="overloaded",status="429"} 1.0' in metrics
        assert 'regrpo_rejections_total{reason="shutdown",status="503"} 1.0' in metrics


def test_an_engine_failure_is_503_and_the_trace_records_it(store):
    agent = Agent(ScriptedPolicy(["<answer>once</answer>"]), tools=[calculator], store=store)  # runs dry
    with start_in_thread(build_agent_app(agent, ServerConfig())) as server:
        client = client_for(server, key="unused")
        assert client.chat.completions.create(
            model="regrpo-agent", messages=[{"role": "user", "content": "1"}]
        )
        with pytest.raises(openai.InternalServerError) as failed:
            ask(client, "2")
    assert failed.value.status_code == 503 and "ran out of replies" in failed.value.message
    assert failed.value.response.headers["Retry-After"] == "1"
    statuses = sorted(e.status for e in store.episodes())
    assert statuses == ["answered", "error"]


@pytest.mark.slow
def test_real_smollm_behind_the_openai_client(store, smollm):
    agent = Agent(smollm, tools=[calculator, crop], store=store, max_steps=1, max_new_tokens=24)
    with start_in_thread(build_agent_app(agent, ServerConfig(api_keys=(KEY,)))) as server:
        completion = client_for(server, timeout=600).chat.completions.create(
            model="regrpo-agent", messages=[image_message("What is 2+3?", data_url(png_bytes()))]
        )
    extension = completion.model_extra["regrpo"]
    episode = store.get(extension["trace_id"])
    assert extension["status"] == episode.status in ("answered", "max_steps")
    assert len(extension["steps"]) == len(episode.steps) >= 1
    assert completion.choices[0].message.content == episode.answer
    assert completion.usage.completion_tokens == sum(len(s.completion.token_ids) for s in episode.steps) > 0


def crop_size_is_4x3(task: str, answer: str | None) -> float:
    """The app's verifier, as ``regrpo serve --verifier test_agent_server:crop_size_is_4x3`` names it."""
    return 1.0 if answer == "4x3" else 0.0


def verifier_down(task: str, answer: str | None) -> float:
    raise ConnectionError("the answer key service is down")


@pytest.mark.parametrize("verifier", [crop_size_is_4x3, verifier_down], ids=["scores", "broken"])
def test_the_servers_verifier_scores_every_episode_and_a_broken_one_costs_the_caller_nothing(store, verifier):
    from server_helpers import crop_then_report

    from regrpo.verifier import feedback_source

    policy = ScriptedPolicy([crop_then_report], cycle=True)
    agent = Agent(policy, tools=[crop], store=store, verifier=verifier)
    with start_in_thread(build_agent_app(agent, ServerConfig(api_keys=(KEY,)))) as server:
        client = client_for(server)
        for _ in range(2):
            completion = client.chat.completions.create(
                model="regrpo-agent", messages=[image_message("size?", data_url(png_bytes()))]
            )
            assert completion.choices[0].message.content == "4x3"  # the answer reaches the caller either way
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    feedback = [store.get(trace_id).feedback for trace_id in store.trace_ids()]
    if verifier is crop_size_is_4x3:
        scored = [[(f.reward, f.source) for f in fs] for fs in feedback]
        assert scored == [[(1.0, feedback_source(verifier))]] * 2
        assert "regrpo_verifier_errors_total 0.0" in metrics
    else:  # stored, unscored, counted
        assert feedback == [[], []] and "regrpo_verifier_errors_total 2.0" in metrics
        assert [store.get(t).status for t in store.trace_ids()] == ["answered", "answered"]
