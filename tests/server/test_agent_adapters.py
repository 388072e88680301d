"""Adapter admin over HTTP: promote and rollback through the registry, hot-swapped into the policy.

The fast tests use a scripted policy (it records which adapter is active); the slow one hot-swaps a
real peft LoRA adapter into the real SmolLM2 and checks that the model's log-probs change and come
back.
"""

from __future__ import annotations

import copy
import json

import httpx
import pytest
from server_helpers import crop_then_report

from regrpo import Agent, ScriptedPolicy
from regrpo.errors import InputError
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.server.app import build_agent_app, start_in_thread
from regrpo.server.config import ServerConfig
from regrpo.tools.calculator import calculator
from regrpo.tools.image_ops import crop

KEY = "sk-admin"
H = {"Authorization": f"Bearer {KEY}"}


def publish_placeholder(registry: AdapterRegistry, notes: str = "") -> str:
    """A registry entry the scripted policy can 'load' (it does not read the weights)."""
    tmp = registry.begin()
    (tmp / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return registry.commit(tmp, AdapterMeta(base_model="scripted", notes=notes)).version


@pytest.fixture
def admin(tmp_path, store):
    registry = AdapterRegistry(tmp_path / "adapters")
    for name in ("first", "second"):
        publish_placeholder(registry, name)
    policy = ScriptedPolicy([crop_then_report], cycle=True)
    agent = Agent(policy, tools=[calculator, crop], store=store)
    with start_in_thread(build_agent_app(agent, ServerConfig(api_keys=(KEY,)), registry=registry)) as server:
        yield server, registry, policy


def post(server, path, body=None):
    return httpx.post(f"{server.url}{path}", json=body or {}, headers=H)


def test_promote_and_rollback_move_the_pointer_and_the_policy(admin):
    server, registry, policy = admin
    listing = httpx.get(f"{server.url}/v1/adapters", headers=H).json()
    assert [a["version"] for a in listing["data"]] == ["v0001", "v0002"] and listing["live"] is None
    assert listing["data"][1]["notes"] == "second"

    assert post(server, "/v1/adapters/promote", {"version": "v0001"}).json()["active"] == "v0001"
    state = post(server, "/v1/adapters/promote", {"version": "v0002"}).json()
    assert state == {"live": "v0002", "active": "v0002", "previous": ["v0001"]}
    assert registry.live() == "v0002" and policy.active_adapter == "v0002"
    models = httpx.get(f"{server.url}/v1/models", headers=H).json()["data"]
    assert [m["id"] for m in models] == ["regrpo-agent", "v0002"] and models[1]["parent"] == "regrpo-agent"
    assert models[1]["root"] == "v0002"  # the version, never the registry's folder on the server

    # an episode run now is recorded as produced by the live adapter
    body = {"model": "v0002", "messages": [{"role": "user", "content": "go"}]}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=H).json()
    assert {s["adapter"] for s in reply["regrpo"]["steps"]} == {"v0002"}

    assert post(server, "/v1/adapters/rollback").json() == {
        "live": "v0001",
        "active": "v0001",
        "previous": [],
    }
    assert post(server, "/v1/adapters/rollback").json() == {"live": None, "active": None, "previous": []}
    assert policy.active_adapter is None and registry.live() is None


def test_admin_errors(admin, store):
    server, registry, _ = admin
    missing = post(server, "/v1/adapters/promote", {"version": "v0042"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "version"
    malformed = post(server, "/v1/adapters/promote", {"version": "../../etc"})
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "body.version"
    assert httpx.post(f"{server.url}/v1/adapters/promote", json={"version": "v0001"}).status_code == 401
    assert registry.live() is None

    no_registry = build_agent_app(Agent(ScriptedPolicy(["x"]), store=store), ServerConfig())
    with start_in_thread(no_registry) as plain:
        answer = httpx.get(f"{plain.url}/v1/adapters")
    assert answer.status_code == 404 and "registry" in answer.json()["error"]["message"]


def test_the_live_adapter_is_activated_at_startup(tmp_path, store):
    registry = AdapterRegistry(tmp_path)
    registry.promote(publish_placeholder(registry))
    policy = ScriptedPolicy(["<answer>x</answer>"], cycle=True)
    with start_in_thread(build_agent_app(Agent(policy, store=store), ServerConfig(registry_dir=tmp_path))):
        assert policy.active_adapter == "v0001"


@pytest.mark.slow
def test_a_real_lora_adapter_is_hot_swapped_into_smollm(tmp_path, store, smollm):
    from peft import LoraConfig, get_peft_model

    from regrpo.agent.local import LocalPolicy

    registry = AdapterRegistry(tmp_path / "adapters")
    lora = get_peft_model(  # a copy: get_peft_model edits the model it is given
        copy.deepcopy(smollm.model),
        LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),  # random B
    )
    tmp = registry.begin()
    lora.save_pretrained(tmp)
    version = registry.commit(tmp, AdapterMeta(base_model=smollm.model_name, config={"r": 8})).version
    broken = registry.begin()
    (broken / "adapter_config.json").write_text("{}")
    broken_version = registry.commit(broken).version

    policy = LocalPolicy()  # its own copy: adapters change the model object
    chat = [{"role": "user", "content": "Name a colour."}]
    base = policy.generate(chat, max_new_tokens=6)[0]
    agent = Agent(policy, tools=[calculator], store=store, max_steps=1, max_new_tokens=6)
    with start_in_thread(build_agent_app(agent, ServerConfig(api_keys=(KEY,)), registry=registry)) as server:
        assert post(server, "/v1/adapters/promote", {"version": version}).json()["active"] == version
        tuned = policy.generate(chat, max_new_tokens=6)[0]
        assert tuned.logprobs != pytest.approx(base.logprobs, abs=1e-3)
        body = {"model": "regrpo-agent", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=H, timeout=600).json()
        assert store.get(reply["regrpo"]["trace_id"]).steps[0].adapter == version

        refused = post(server, "/v1/adapters/promote", {"version": broken_version})
        assert refused.status_code == 400 and registry.live() == version  # a broken adapter never goes live
        assert policy.active_adapter == version

        assert post(server, "/v1/adapters/rollback").json()["active"] is None
    again = policy.generate(chat, max_new_tokens=6)[0]
    assert again.token_ids == base.token_ids
    assert again.logprobs == pytest.approx(base.logprobs, abs=1e-4)


def test_admin_keys_alone_open_the_admin_routes(tmp_path, store):
    registry = AdapterRegistry(tmp_path / "adapters")
    version = publish_placeholder(registry)
    agent = Agent(ScriptedPolicy(["<answer>ok</answer>"], cycle=True), tools=[calculator], store=store)
    config = ServerConfig(admin_keys=("sk-root",))  # no API keys: inference open, admin guarded
    with start_in_thread(build_agent_app(agent, config, registry=registry)) as server:
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=chat).status_code == 200
        assert httpx.post(f"{server.url}/v1/adapters/promote", json={"version": version}).status_code == 401
        root = {"Authorization": "Bearer sk-root"}
        promoted = httpx.post(f"{server.url}/v1/adapters/promote", json={"version": version}, headers=root)
        assert promoted.status_code == 200 and registry.live() == version
    with pytest.raises(InputError, match="an admin key must differ from every API key"):
        ServerConfig(api_keys=("k",), admin_keys=("k",))
