"""``regrpo serve-model`` over a real socket with the real SmolLM2, driven by the official ``openai`` client.

Each status code, error ``type`` and body shape asserted here comes from ``shared/VLLM_CONTRACT.md``
(vLLM 0.33.0, checked against vLLM's source, not a live vLLM: vLLM needs a GPU CI does not have).
"""

from __future__ import annotations

import copy
import json

import httpx
import openai
import pytest
import torch

from regrpo.server.model_server import build_model_app, running_server

pytestmark = pytest.mark.slow

API_KEY = "test-key"
CHAT = [{"role": "user", "content": "Name a colour."}]


def make_adapter(policy, folder, seed: int) -> str:
    """A tiny random PEFT LoRA (r=8 on q/v) for ``policy``'s base model, saved to ``folder``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(
        copy.deepcopy(policy.model),
        LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )  # random B: the adapter changes outputs
    model.save_pretrained(folder)
    return str(folder)


def write_config(folder, **config) -> str:
    """An adapter folder holding only ``adapter_config.json`` (the checks before the weights are read)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def own_policy():
    """A private SmolLM2 for the server: adapters change the model object, so not the shared ``smollm``."""
    from regrpo.agent.local import LocalPolicy

    return LocalPolicy()


@pytest.fixture(scope="module")
def server(own_policy):
    with running_server(build_model_app(own_policy, api_key=API_KEY, max_lora_rank=64)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, own_policy):
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(own_policy, root / "step-000001", seed=1), make_adapter(
        own_policy, root / "step-000002", seed=2
    )


def greedy(client, model, **extra):
    return client.chat.completions.create(model=model, messages=CHAT, max_tokens=6, temperature=0, **extra)


# -- chat ---------------------------------------------------------------------------------------------


def test_models_lists_the_base_model_with_vllm_fields(client, own_policy):
    cards = client.models.list().data
    assert [c.id for c in cards] == [own_policy.model_name]
    card = cards[0].model_dump()
    assert card["owned_by"] == "vllm" and card["root"] == own_policy.model_name and card["parent"] is None
    assert card["max_model_len"] == own_policy.model.config.max_position_embeddings
    assert card["permission"][0]["object"] == "model_permission" and card["permission"][0]["allow_logprobs"]


def test_sampling_n_with_token_ids_and_top_logprobs(client, own_policy):
    reply = client.chat.completions.create(
        model=own_policy.model_name,
        messages=CHAT,
        n=2,
        temperature=1.0,
        seed=7,
        max_tokens=5,
        logprobs=True,
        top_logprobs=3,
        extra_body={"return_token_ids": True},
    )
    body = reply.model_dump()
    prompt = own_policy.encode_chat(CHAT)
    assert body["prompt_token_ids"] == prompt and body["usage"]["prompt_tokens"] == len(prompt)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in body["choices"])
    for choice in body["choices"]:
        entries = choice["logprobs"]["content"]
        assert 0 < len(choice["token_ids"]) == len(entries) <= 5
        for token_id, entry in zip(choice["token_ids"], entries, strict=True):
            assert entry["token"] == own_policy.tokenizer.decode([token_id])
            top = entry["top_logprobs"]
            assert (
                top[0]["token"] == entry["token"] and top[0]["logprob"] == entry["logprob"]
            )  # sampled first
            rest = [t["logprob"] for t in top[1:]]
            assert len(top) == 3 and rest == sorted(rest, reverse=True)
    # greedy: two computations (generate's raw logits, the top-k forward pass) agree the token was the best
    best = greedy(client, own_policy.model_name, logprobs=True, top_logprobs=2).choices[0].logprobs
    for entry in best.content:
        assert entry.logprob >= entry.top_logprobs[1].logprob - 1e-4
    # the same seed gives the same samples
    again = client.chat.completions.create(
        model=own_policy.model_name, messages=CHAT, n=2, temperature=1.0, seed=7, max_tokens=5
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in reply.choices]


def test_stop_string_is_cut_unless_include_stop_str_in_output(client, own_policy):
    full = greedy(client, own_policy.model_name).choices[0].message.content
    words = full.split()
    assert len(words) >= 2, full
    stop = words[1]
    cut = greedy(client, own_policy.model_name, stop=[stop]).model_dump()["choices"][0]
    assert cut["message"]["content"] == full[: full.index(stop)]
    assert cut["finish_reason"] == "stop" and cut["stop_reason"] == stop
    kept = greedy(client, own_policy.model_name, stop=[stop], extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].message.content == full[: full.index(stop) + len(stop)]


def test_streaming_frames_follow_the_contract(client, http, own_policy):
    expected = greedy(client, own_policy.model_name).choices[0].message.content
    stream = client.chat.completions.create(
        model=own_policy.model_name,
        messages=CHAT,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    raw = http.post(
        "/v1/chat/completions",
        json={"messages": CHAT, "max_tokens": 2, "temperature": 0, "stream": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    frames = [line for line in raw.text.split("\n\n") if line]
    assert frames[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in frames)
    assert "usage" not in json.loads(frames[-2][6:])  # no include_usage: no usage frame


# -- errors -------------------------------------------------------------------------------------------

BAD_REQUESTS = [  # (body, status, type, param, text in message)
    ({"model": "nope", "messages": CHAT}, 404, "NotFoundError", "model", "The model `nope` does not exist"),
    ({"messages": CHAT, "top_logprobs": 2}, 400, "Bad Request", "body", "`logprobs` must be set to true"),
    ({"messages": CHAT, "stream_options": {"include_usage": True}}, 400, "Bad Request", "body", "stream"),
    (
        {"messages": CHAT, "logprobs": True, "top_logprobs": 21},
        400,
        "BadRequestError",
        None,
        "max allowed: 20",
    ),
    ({"messages": CHAT, "max_tokens": 10**6}, 400, "BadRequestError", None, "maximum context length"),
    ({"messages": CHAT, "top_p": 0.5}, 400, "BadRequestError", "top_p", "not supported"),
    (
        {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]},
        400,
        "BadRequestError",
        None,
        "--tool-call-parser",
    ),  # fmt: skip
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
                }
            ]
        },
        400,
        "BadRequestError",
        "messages",
        "text-only",
    ),  # fmt: skip
    ({"messages": []}, 400, "Bad Request", "body.messages", "validation error"),
    (
        {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "Bad Request",
        "body.messages.0.role",
        "validation",
    ),
]


@pytest.mark.parametrize(("body", "status", "kind", "param", "text"), BAD_REQUESTS)
def test_chat_errors_use_vllms_codes_and_envelope(http, body, status, kind, param, text):
    response = http.post("/v1/chat/completions", json=body)
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["type"], error["param"]) == (
        status,
        status,
        kind,
        param,
    )
    assert text in error["message"] and "Traceback" not in error["message"]


def test_auth_media_type_and_unknown_routes(server, http, client):
    assert httpx.get(f"{server}/v1/models").json() == {"error": "Unauthorized"}
    assert httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server}/health").status_code == 200 and httpx.get(f"{server}/health").content == b""
    assert httpx.get(f"{server}/version").json() == {"version": "0.33.0"}
    wrong_type = http.post("/v1/chat/completions", content=json.dumps({"messages": CHAT}))
    assert (
        wrong_type.status_code == 400 and "Only 'application/json'" in wrong_type.json()["error"]["message"]
    )
    assert http.get("/v1/nothing-here").json() == {"detail": "Not Found"}
    with pytest.raises(openai.NotFoundError):
        greedy(client, "no-such-adapter")


def test_tokenize_matches_the_model_tokenizer(http, own_policy):
    text = "<answer>blue</answer>"
    body = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
    assert body["count"] == own_policy.count_tokens(text) and len(body["tokens"]) == body["count"]


# -- LoRA -------------------------------------------------------------------------------------------


def test_lora_load_select_reload_in_place_and_unload(client, http, own_policy, adapters):
    first, second = adapters
    base = greedy(client, own_policy.model_name).choices[0].message.content

    loaded = http.post("/v1/load_lora_adapter", json={"lora_name": "policy", "lora_path": first})
    assert (loaded.status_code, loaded.text) == (200, "Success: LoRA adapter 'policy' added successfully.")
    assert "content-type" not in loaded.headers  # a bare FastAPI Response, as vLLM sends it
    cards = {c.id: c.model_dump() for c in client.models.list().data}
    assert cards["policy"]["root"] == first and cards["policy"]["parent"] == own_policy.model_name
    assert cards["policy"]["max_model_len"] is None

    with_first = greedy(client, "policy")
    assert with_first.model == "policy" and with_first.choices[0].message.content != base

    again = http.post("/v1/load_lora_adapter", json={"lora_name": "policy", "lora_path": second})
    assert again.status_code == 400 and again.json()["error"]["type"] == "InvalidUserInput"
    assert "set 'load_inplace' to True" in again.json()["error"]["message"]

    swapped = http.post(
        "/v1/load_lora_adapter", json={"lora_name": "policy", "lora_path": second, "load_inplace": True}
    )
    assert swapped.status_code == 200
    assert {c.id: c.root for c in client.models.list().data}["policy"] == second
    with_second = greedy(client, "policy").choices[0].message.content
    assert with_second != with_first.choices[0].message.content  # new weights serve the same name

    # a failed in-place load keeps the old adapter registered and serving
    failed = http.post(
        "/v1/load_lora_adapter", json={"lora_name": "policy", "lora_path": "/tmp/none", "load_inplace": True}
    )
    assert failed.status_code == 404
    assert greedy(client, "policy").choices[0].message.content == with_second
    assert greedy(client, own_policy.model_name).choices[0].message.content == base  # base unchanged

    removed = http.post("/v1/unload_lora_adapter", json={"lora_name": "policy"})
    assert (removed.status_code, removed.text) == (
        200,
        "Success: LoRA adapter 'policy' removed successfully.",
    )
    assert [c.id for c in client.models.list().data] == [own_policy.model_name]
    assert http.post("/v1/chat/completions", json={"model": "policy", "messages": CHAT}).status_code == 404


LOAD_ERRORS = [  # (body builder, status, type, text in message)
    (lambda d: {"lora_name": "x"}, 400, "Bad Request", "body.lora_path"),
    (
        lambda d: {"lora_name": "", "lora_path": "/a"},
        400,
        "InvalidUserInput",
        "Both 'lora_name' and 'lora_path'",
    ),
    (
        lambda d: {"lora_name": "SmolLM2-135M-Instruct", "lora_path": d["good"]},
        400,
        "InvalidUserInput",
        "conflicts with a served base model",
    ),  # fmt: skip
    (
        lambda d: {"lora_name": "x", "lora_path": d["missing"]},
        404,
        "NotFoundError",
        "Loading lora x failed: No adapter found for <path>",
    ),  # fmt: skip
    (lambda d: {"lora_name": "x", "lora_path": d["no_config"]}, 404, "NotFoundError", "No adapter found"),
    (
        lambda d: {"lora_name": "x", "lora_path": d["no_fields"]},
        500,
        "InternalServerError",
        "Missing required configuration fields",
    ),  # fmt: skip
    (
        lambda d: {"lora_name": "x", "lora_path": d["rank"]},
        500,
        "InternalServerError",
        "LoRA rank 128 is greater than max_lora_rank 64.",
    ),  # fmt: skip
    (
        lambda d: {"lora_name": "x", "lora_path": d["bias"]},
        500,
        "InternalServerError",
        "Adapter bias is not supported.",
    ),
    (
        lambda d: {"lora_name": "x", "lora_path": d["dora"]},
        500,
        "InternalServerError",
        "does not yet support DoRA.",
    ),
    (
        lambda d: {"lora_name": "x", "lora_path": d["no_tensors"]},
        500,
        "InternalServerError",
        "doesn't contain tensors",
    ),
]


@pytest.fixture(scope="module")
def bad_dirs(tmp_path_factory, adapters):
    root = tmp_path_factory.mktemp("bad")
    ok = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (root / "no_config").mkdir()
    return {
        "good": adapters[0],
        "missing": str(root / "does-not-exist"),
        "no_config": str(root / "no_config"),
        "no_fields": write_config(root / "no_fields", r=8),
        "rank": write_config(root / "rank", **{**ok, "r": 128}),
        "bias": write_config(root / "bias", **ok, bias="all"),
        "dora": write_config(root / "dora", **ok, use_dora=True),
        "no_tensors": write_config(root / "no_tensors", **ok),
    }


@pytest.mark.parametrize(("build", "status", "kind", "text"), LOAD_ERRORS)
def test_load_lora_error_cases(http, bad_dirs, build, status, kind, text):
    response = http.post("/v1/load_lora_adapter", json=build(bad_dirs))
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["type"]) == (status, status, kind)
    assert text in error["message"] or text == error["param"]
    assert "/tmp" not in error["message"] and "pytest-" not in error["message"]  # paths are sanitised
    assert "x" not in {c["id"] for c in http.get("/v1/models").json()["data"]}


@pytest.mark.parametrize(
    ("body", "status", "kind", "text"),
    [
        ({"lora_name": ""}, 400, "InvalidUserInput", "'lora_name' needs to be provided"),
        ({"lora_name": "ghost"}, 404, "NotFoundError", "The lora adapter 'ghost' cannot be found."),
        ({}, 400, "Bad Request", "validation error"),
    ],
)
def test_unload_lora_error_cases(http, body, status, kind, text):
    response = http.post("/v1/unload_lora_adapter", json=body)
    error = response.json()["error"]
    assert (response.status_code, error["type"]) == (status, kind) and text in error["message"]


def test_lora_routes_need_the_api_key_and_json(server, adapters):
    body = {"lora_name": "policy", "lora_path": adapters[0]}
    assert httpx.post(f"{server}/v1/load_lora_adapter", json=body).status_code == 401
    plain = httpx.post(
        f"{server}/v1/load_lora_adapter",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/plain"},
    )
    assert plain.status_code == 400 and plain.json()["error"]["type"] == "Bad Request"


def test_adapters_past_max_loras_are_read_back_on_use(own_policy, adapters):
    with running_server(build_model_app(own_policy, max_loras=1)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for name, path in zip(("a", "b"), adapters, strict=True):
            assert httpx.post(
                f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}
            ).is_success
        first_a = greedy(client, "a").choices[0].message.content  # evicts b, reads a back
        first_b = greedy(client, "b").choices[0].message.content  # evicts a, reads b back
        assert greedy(client, "a").choices[0].message.content == first_a != first_b
        for name in ("a", "b"):
            assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": name}).is_success


def test_lora_modules_are_served_from_start_up_like_vllms_flag(own_policy, tmp_path):
    from regrpo.agent.adapters import WARM_START_DIR
    from regrpo.errors import AdapterError

    app = build_model_app(own_policy, lora_modules={"warm-start": str(WARM_START_DIR)})
    with running_server(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        cards = {c.id: c.model_dump() for c in client.models.list().data}
        assert cards["warm-start"]["root"] == str(WARM_START_DIR)
        assert cards["warm-start"]["parent"] == own_policy.model_name
        tuned = greedy(client, "warm-start").choices[0].message.content
        base = greedy(client, own_policy.model_name).choices[0].message.content
        assert tuned != base  # the base name still serves the base model
        assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "warm-start"}).is_success
    with pytest.raises(AdapterError, match="cannot serve adapter 'x' from .*No adapter found"):
        build_model_app(own_policy, lora_modules={"x": str(tmp_path / "missing")})
    with pytest.raises(AdapterError, match="base model's served name"):
        build_model_app(own_policy, lora_modules={own_policy.model_name: str(WARM_START_DIR)})
