"""``OpenAIPolicy`` against ``regrpo serve-model`` over a real socket, with the real SmolLM2.

serve-model stands in for vLLM (which needs a GPU CI does not have); it implements vLLM's contract as
written in ``shared/VLLM_CONTRACT.md``, checked against vLLM's source, not a live server. The retry
tests put a small fault injector in front of it: it answers the first requests with 503/429 itself
and passes the rest to the real server.
"""

from __future__ import annotations

import copy
import socket
import time

import httpx
import pytest
import torch
from logprob_reference import forward_logprobs
from starlette.responses import JSONResponse

from regrpo import Agent
from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.errors import AdapterError, ModelError
from regrpo.server.model_server import build_model_app, running_server
from regrpo.tools.calculator import calculator

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Name a colour."}]
TASK = "What is 17 * 23? Use the calculator."


class FaultInjector:
    """ASGI wrapper: answers the first chat requests with the given ``(status, Retry-After)`` pairs."""

    def __init__(self, app, faults):
        self.app, self.faults, self.chat_requests = app, list(faults), 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            self.chat_requests += 1
            if self.faults:
                status, retry_after = self.faults.pop(0)
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                body = {
                    "error": {
                        "message": "busy",
                        "type": "ServiceUnavailableError",
                        "param": None,
                        "code": status,
                    }
                }
                await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def shared_server(smollm):
    """serve-model over the session's SmolLM2 (no adapters are loaded into it)."""
    with running_server(build_model_app(smollm)) as url:
        yield url


@pytest.fixture(scope="module")
def lora_policy():
    from regrpo.agent.local import LocalPolicy

    return LocalPolicy()  # its own copy: adapters change the model object


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, lora_policy):
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("policy")
    paths = []
    for step in (1, 2):
        torch.manual_seed(step)
        model = get_peft_model(
            copy.deepcopy(lora_policy.model),
            LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        model.save_pretrained(root / f"step-{step:06d}")
        paths.append(str(root / f"step-{step:06d}"))
    return paths


def test_agent_through_openai_policy_equals_the_local_engine(smollm, shared_server, store):
    remote = OpenAIPolicy(f"{shared_server}/v1", smollm.model_name)
    results = []
    for policy in (smollm, remote):
        agent = Agent(policy, tools=[calculator], store=store, max_steps=2, max_new_tokens=24)
        results.append(agent.run(TASK))
    local, served = results
    assert served.status == local.status and served.answer == local.answer
    assert len(served.steps) == len(local.steps) >= 1
    for mine, theirs in zip(served.steps, local.steps, strict=True):
        a, b = mine.completion, theirs.completion
        assert (a.text, a.token_ids, a.finish_reason, a.prompt_tokens) == (
            b.text,
            b.token_ids,
            b.finish_reason,
            b.prompt_tokens,
        )
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
        assert mine.action == theirs.action and mine.reflection_tokens == theirs.reflection_tokens
        assert mine.confidence == pytest.approx(theirs.confidence, abs=1e-4)
    stored = store.get(served.trace_id)
    assert stored.model == smollm.model_name
    assert stored.steps[-1].completion == served.steps[-1].completion
    # count_tokens goes through the server's /tokenize and equals the local tokenizer
    for text in ("<answer>391</answer>", "héllo wörld, 17 * 23"):
        assert remote.count_tokens(text) == smollm.count_tokens(text)


def test_sampling_n_gives_token_ids_and_logprobs_of_the_sampled_tokens(smollm, shared_server):
    remote = OpenAIPolicy(shared_server, smollm.model_name)
    completions = remote.generate(CHAT, n=3, temperature=1.0, max_new_tokens=6)
    assert len(completions) == 3
    for c in completions:
        assert 0 < len(c.token_ids) == len(c.logprobs) <= 6
        assert c.prompt_tokens == len(smollm.encode_chat(CHAT))
        assert c.text == smollm.tokenizer.decode(c.token_ids, skip_special_tokens=True)
        expected = forward_logprobs(smollm, CHAT, c.token_ids)
        assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


def test_lora_load_select_hot_swap_and_unload_in_place(lora_policy, adapters, store):
    first, second = adapters
    with running_server(build_model_app(lora_policy, max_lora_rank=16)) as url:
        remote = OpenAIPolicy(url, lora_policy.model_name, vllm=True)
        base = remote.generate(CHAT, max_new_tokens=6)[0]

        remote.load_adapter("policy", first)
        assert remote.active_adapter is None  # loaded, not active
        remote.activate_adapter("policy")
        result = Agent(remote, tools=[calculator], store=store, max_steps=1, max_new_tokens=8).run(TASK)
        assert result.steps[0].adapter == "policy" and store.get(result.trace_id).adapter == "policy"
        tuned = remote.generate(CHAT, max_new_tokens=6)[0]
        assert tuned.token_ids != base.token_ids  # the adapter is what answered
        assert (base.adapter, tuned.adapter) == (None, "policy")
        # the server's weights are the adapter's: log-probs equal a forward pass of the local engine with it
        assert torch.allclose(
            torch.tensor(tuned.logprobs), forward_logprobs(lora_policy, CHAT, tuned.token_ids), atol=1e-4
        )

        cards = {c["id"]: c for c in httpx.get(f"{url}/v1/models").json()["data"]}
        assert cards["policy"]["root"] == first  # in place: one stable name (server says 0.33.0)
        remote.load_adapter("policy", second)  # hot swap under the same name
        cards = {c["id"]: c for c in httpx.get(f"{url}/v1/models").json()["data"]}
        assert set(cards) == {lora_policy.model_name, "policy"} and cards["policy"]["root"] == second
        assert remote.generate(CHAT, max_new_tokens=6)[0].token_ids != tuned.token_ids

        remote.load_adapter("policy", second)  # same folder again: staged into a fresh one first
        root = {c["id"]: c for c in httpx.get(f"{url}/v1/models").json()["data"]}["policy"]["root"]
        assert root != second and root.startswith(second + "-reload-")

        remote.unload_adapter("policy")
        assert remote.active_adapter is None
        assert [c["id"] for c in httpx.get(f"{url}/v1/models").json()["data"]] == [lora_policy.model_name]
        assert remote.generate(CHAT, max_new_tokens=6)[0].token_ids == base.token_ids
        with pytest.raises(AdapterError, match="no adapter named 'policy'"):
            remote.activate_adapter("policy")
        with pytest.raises(AdapterError, match="No adapter found"):
            remote.load_adapter("other", "/tmp/regrpo-no-such-adapter")


def test_versioned_hot_swap_for_servers_without_load_inplace(lora_policy, adapters):
    first, second = adapters
    with running_server(build_model_app(lora_policy, max_lora_rank=16)) as url:
        remote = OpenAIPolicy(url, lora_policy.model_name, vllm=True, hot_swap="versioned")
        remote.load_adapter("policy", first)
        remote.activate_adapter("policy")
        before = remote.generate(CHAT, max_new_tokens=4)[0]
        remote.load_adapter("policy", second)
        names = [c["id"] for c in httpx.get(f"{url}/v1/models").json()["data"]]
        assert names == [lora_policy.model_name, "policy-v2"]  # v1 unloaded: nothing was in flight
        assert remote.active_adapter == "policy"
        after = remote.generate(CHAT, max_new_tokens=4)[0]
        assert after.logprobs != before.logprobs  # new requests use the new weights
        remote.unload_adapter("policy")
        assert [c["id"] for c in httpx.get(f"{url}/v1/models").json()["data"]] == [lora_policy.model_name]


def test_without_vllm_an_adapter_must_already_be_served(smollm, shared_server):
    remote = OpenAIPolicy(shared_server, smollm.model_name)
    with pytest.raises(AdapterError, match="does not serve a model named 'policy'"):
        remote.load_adapter("policy", "/adapters/policy")
    with pytest.raises(AdapterError, match="no adapter named"):
        remote.activate_adapter("policy")


def test_retries_503_and_429_then_succeeds_honouring_retry_after(smollm):
    app = FaultInjector(build_model_app(smollm), [(503, "0"), (429, "1")])
    with running_server(app) as url:
        started = time.perf_counter()
        completion = OpenAIPolicy(url, smollm.model_name, max_retries=3).generate(CHAT, max_new_tokens=2)[0]
        elapsed = time.perf_counter() - started
    assert app.chat_requests == 3 and len(completion.token_ids) == 2
    assert elapsed >= 1.0  # waited the 429's Retry-After: 1


def test_gives_up_after_max_retries_with_the_servers_message(smollm):
    app = FaultInjector(build_model_app(smollm), [(503, "0")] * 10)
    with running_server(app) as url:
        with pytest.raises(ModelError, match="after 3 attempts: HTTP 503: busy"):
            OpenAIPolicy(url, smollm.model_name, max_retries=2).generate(CHAT, max_new_tokens=2)
    assert app.chat_requests == 3


def test_a_400_is_not_retried_and_carries_the_servers_message(smollm):
    app = FaultInjector(build_model_app(smollm), [])
    with running_server(app) as url:
        remote = OpenAIPolicy(url, smollm.model_name, max_retries=3)
        with pytest.raises(ModelError, match="HTTP 400: This model's maximum context length is 8192"):
            remote.generate(CHAT, max_new_tokens=10**6)
        assert app.chat_requests == 1
        with pytest.raises(ModelError, match="HTTP 404: The model `ghost` does not exist"):
            OpenAIPolicy(url, "ghost").generate(CHAT, max_new_tokens=2)
        assert app.chat_requests == 2


def test_connection_refused_is_retried_then_a_model_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = OpenAIPolicy(f"http://127.0.0.1:{port}", "m", max_retries=1)
    with pytest.raises(ModelError, match="failed after 2 attempts: cannot reach"):
        remote.generate(CHAT)


def test_generate_works_inside_a_running_event_loop(smollm, shared_server):
    import asyncio

    remote = OpenAIPolicy(shared_server, smollm.model_name)

    async def main():
        sync = remote.generate(CHAT, max_new_tokens=3)[0]  # sync call from async code: private loop
        asynchronous = (await remote.agenerate(CHAT, max_new_tokens=3))[0]
        return sync, asynchronous

    sync, asynchronous = asyncio.run(main())
    assert sync.token_ids == asynchronous.token_ids
