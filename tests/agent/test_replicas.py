"""``ReplicaPolicy`` over real ``regrpo serve-model`` replicas on real sockets, with the real SmolLM2.

Each replica is its own server over its own ``LocalPolicy`` (its own adapters, as vLLM's
data-parallel replicas have). serve-model stands in for vLLM, which needs a GPU CI does not have
(tests/agent/test_openai_policy.py says how it follows vLLM's contract). One replica is wrapped to
refuse ``load_lora_adapter`` with vLLM's error body, one URL has no server at all.
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch
from starlette.responses import JSONResponse

from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.agent.replicas import ReplicaPolicy
from regrpo.errors import AdapterError, InputError
from regrpo.server.model_server import build_model_app, running_server

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Name a colour."}]


class Counting:
    """ASGI wrapper: counts chat requests; ``refuse_loads`` answers adapter loads with a 500."""

    def __init__(self, app, *, refuse_loads: bool = False) -> None:
        self.app, self.refuse_loads, self.chats = app, refuse_loads, 0

    async def __call__(self, scope, receive, send):
        path = scope.get("path")
        if scope["type"] == "http" and path == "/v1/chat/completions":
            self.chats += 1
        if scope["type"] == "http" and path == "/v1/load_lora_adapter" and self.refuse_loads:
            body = {
                "error": {
                    "message": "out of GPU memory",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            }
            await JSONResponse(body, status_code=500)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def replicas(smollm):
    """Two independent replicas, one that refuses adapter loads, and a URL nobody listens on."""
    from regrpo.agent.local import LocalPolicy

    apps = [Counting(build_model_app(LocalPolicy())), Counting(build_model_app(LocalPolicy()))]
    apps.append(Counting(build_model_app(smollm), refuse_loads=True))
    with running_server(apps[0]) as a, running_server(apps[1]) as b, running_server(apps[2]) as refusing:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
            yield apps, (a, b, refusing, dead)


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory, smollm):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    model = get_peft_model(
        copy.deepcopy(smollm.model),
        LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    folder = tmp_path_factory.mktemp("adapters") / "tuned"
    model.save_pretrained(folder)
    return str(folder)


def _policy(smollm, *urls: str) -> ReplicaPolicy:
    return ReplicaPolicy([OpenAIPolicy(url, smollm.model_name, vllm=True, max_retries=0) for url in urls])


def test_requests_are_spread_round_robin_and_an_unreachable_replica_leaves_rotation(smollm, replicas):
    apps, (a, b, _, dead) = replicas
    before = [app.chats for app in apps]
    policy = _policy(smollm, a, dead, b)
    completions = [policy.generate(CHAT, max_new_tokens=4)[0] for _ in range(4)]
    assert all(c.token_ids for c in completions)
    assert [app.chats - n for app, n in zip(apps, before, strict=True)][:2] == [2, 2]
    assert list(policy.out_of_rotation) == [dead] and "unreachable" in policy.out_of_rotation[dead]
    assert [r.base_url for r in policy.in_rotation()] == [a, b]


def test_an_adapter_reaches_every_replica_before_any_serves_it_and_a_refusing_one_is_dropped(
    smollm, replicas, adapter_folder
):
    apps, (a, b, refusing, _) = replicas
    policy = _policy(smollm, a, b, refusing)
    policy.load_adapter("tuned", adapter_folder)
    assert (
        list(policy.out_of_rotation) == [refusing] and "out of GPU memory" in policy.out_of_rotation[refusing]
    )
    for replica in policy.in_rotation():  # loaded and listed on both, active on neither yet
        assert replica.served_name("tuned") in replica.listed_models() and replica.active_adapter is None
    assert policy.adapters == ["tuned"] and policy.active_adapter is None

    refused_chats = apps[2].chats
    policy.activate_adapter("tuned")
    base = OpenAIPolicy(a, smollm.model_name).generate(CHAT, max_new_tokens=8)[0]
    tuned = [policy.generate(CHAT, max_new_tokens=8)[0] for _ in range(2)]  # one on each replica
    assert all(c.adapter == "tuned" for c in tuned) and tuned[0].token_ids == tuned[1].token_ids
    assert tuned[0].logprobs != base.logprobs  # the adapter's weights, not the base model's
    assert apps[2].chats == refused_chats  # the replica without it never serves under its name

    policy.activate_adapter(None)
    policy.unload_adapter("tuned")
    assert policy.adapters == [] and all("tuned" not in r.adapters for r in policy.replicas)


def test_an_adapter_no_replica_takes_is_loaded_nowhere_and_rotation_is_unchanged(
    smollm, replicas, adapter_folder
):
    _, (_, _, refusing, _) = replicas
    policy = _policy(smollm, refusing)
    with pytest.raises(AdapterError, match=r"no replica took adapter 'tuned'.*out of GPU memory"):
        policy.load_adapter("tuned", adapter_folder)
    assert policy.out_of_rotation == {} and policy.adapters == []
    with pytest.raises(AdapterError, match="not loaded on"):
        policy.activate_adapter("tuned")


def test_bad_replica_sets_are_input_errors(smollm, replicas):
    _, (a, b, _, _) = replicas
    with pytest.raises(InputError, match="at least one replica"):
        ReplicaPolicy([])
    with pytest.raises(InputError, match="same model"):
        ReplicaPolicy([OpenAIPolicy(a, "one"), OpenAIPolicy(b, "other")])
    with pytest.raises(InputError, match="its own base URL"):
        ReplicaPolicy([OpenAIPolicy(a, "m"), OpenAIPolicy(f"{a}/v1", "m")])
