"""``regrpo serve-model`` under hostile input (issue 14, items 1, 4, 7, 9, 10): JSON 4xx, never a 500.

Each case was a plain-text 500, a crash or an unbounded read before; the server runs the real SmolLM2
on a real socket.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from regrpo.server.model_server import build_model_app, running_server

pytestmark = pytest.mark.slow

API_KEY = "abuse-key"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def http():
    from regrpo.agent.local import LocalPolicy

    app = build_model_app(LocalPolicy(), api_key=API_KEY, max_n=4, max_body_bytes=LIMIT)
    with (
        running_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client,
    ):
        yield client


def chat(**extra) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **extra}


def post(http, path: str, body: str | bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("[" * 30_000 + "]" * 30_000, 400, "nested too deeply"),
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "lone UTF-16 surrogate"),
        ('{"model": "\\udfff", "messages": [{"role": "user", "content": "x"}]}', 400, "surrogate"),
        ('{"stream": true, "messages": [{"role": "user", "content": "\\ud800"}]}', 400, "surrogate"),
        (json.dumps(chat(seed=2**70)), 400, "body.seed"),
        (json.dumps(chat(n=64)), 400, "over this server's limit of 4"),
    ],
    ids=[
        "deep-nesting",
        "surrogate-content",
        "surrogate-model",
        "surrogate-stream",
        "huge-seed",
        "n-64",
    ],
)
def test_a_hostile_chat_body_is_a_json_400(http, body, status, words):
    assert_error(post(http, "/v1/chat/completions", body), status, words)


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(http):
    big = json.dumps(chat(user="x" * (2 * LIMIT)))
    assert_error(post(http, "/v1/chat/completions", big), 413, "byte limit")
    chunks = (b"x" * 4096 for _ in range(64))  # no Content-Length: counted while streamed
    assert_error(post(http, "/tokenize", b"".join([b'{"prompt": "', *chunks, b'"}'])), 413, "byte limit")


def test_an_echoed_huge_model_name_gives_a_short_404_and_health_stays_up(http):
    response = post(http, "/v1/chat/completions", json.dumps({**chat(), "model": "m" * 60_000}))
    assert_error(response, 404, "does not exist")
    assert len(response.text) < 3_000
    assert http.get("/health").status_code == 200


def test_a_seed_in_range_repeats_a_sample(http):
    body = json.dumps(chat(seed=2**40, temperature=1.0, max_tokens=8))
    first, second = (post(http, "/v1/chat/completions", body).json() for _ in range(2))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def write_adapter(folder, config: dict, weights: tuple[str, bytes] | None = None) -> str:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        (folder / weights[0]).write_bytes(weights[1])
    return str(folder)


def test_hostile_adapter_loads_are_json_400s(http, tmp_path):
    lora = {"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"], "peft_type": "LORA"}
    cases = [
        ({"lora_name": "a", "lora_path": "/tmp/a\x00b"}, "Invalid lora_path"),
        (
            {
                "lora_name": "b",
                "lora_path": write_adapter(tmp_path / "b", {**lora, "r": "abc"}, ("adapter_model.bin", b"x")),
            },
            "must be integers",
        ),
        (  # a pickle that is not weights: peft reads it with weights_only=True, so it is refused, not run
            {
                "lora_name": "c",
                "lora_path": write_adapter(tmp_path / "c", lora, ("adapter_model.bin", b"\x80\x04junk")),
            },
            "cannot load adapter",
        ),
    ]
    for body, words in cases:
        assert_error(http.post("/v1/load_lora_adapter", json=body), 400, words), body["lora_name"]
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["SmolLM2-135M-Instruct"]


def test_a_wrong_key_of_any_length_is_a_401(http):
    for key in ("x", "abuse-ke", "abuse-key-longer", "k" * 10_000):
        response = http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401


def test_two_authorization_headers_are_a_401_whichever_holds_the_key(http):
    for pair in ((f"Bearer {API_KEY}", "Bearer x"), ("Bearer x", f"Bearer {API_KEY}")):
        headers = [("Authorization", value) for value in pair]
        url = str(http.base_url).rstrip("/") + "/v1/models"  # a bare client: no default key header
        assert httpx.get(url, headers=headers).status_code == 401


def test_adapters_load_only_from_under_the_lora_roots(smollm, tmp_path):
    from regrpo.learning.lora_trainer import LoraSettings, save_random_adapter

    roots, elsewhere = tmp_path / "roots", tmp_path / "elsewhere"
    for folder, seed in ((roots / "a", 1), (elsewhere / "b", 2)):
        save_random_adapter(smollm.model, folder, LoraSettings(rank=8), seed=seed)
    (roots / "sneaky").symlink_to(elsewhere / "b")
    app = build_model_app(smollm, lora_roots=[roots], lora_modules={"operator": str(elsewhere / "b")})
    try:
        with running_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            ok = client.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": str(roots / "a")})
            assert ok.status_code == 200, ok.text
            for path in (
                elsewhere / "b",
                roots / "sneaky",
                roots / ".." / "elsewhere" / "b",
                tmp_path / "none",
            ):
                refused = client.post(
                    "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(path)}
                )
                assert_error(refused, 400, "outside the folders this server loads adapters from")
                assert str(tmp_path) not in refused.text  # the same answer whether or not it exists
            listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
            assert listed == [smollm.model_name, "operator", "a"]  # --lora-modules are the operator's own
    finally:
        smollm.activate_adapter(None)
        for name in smollm.adapters:
            smollm.unload_adapter(name)


@pytest.mark.parametrize(
    "body",
    [{"messages": [{}] * 300_000}, {**chat(), "stop_token_ids": [1] * 200_000}],
    ids=["300k-items", "200k-numbers"],
)
def test_a_body_of_too_many_json_values_is_a_400_before_it_is_parsed(smollm, body):
    """json.loads and pydantic hold the GIL in the worker thread they run in: 300,000 ``{}`` items
    stalled ``/health`` for 2.9 s (benchmarks/health_under_abuse.py). Now counted and refused first."""

    async def send(app, body) -> httpx.Response:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            return await client.post("/v1/chat/completions", json=body)

    assert_error(asyncio.run(send(build_model_app(smollm), body)), 400, "over the limit of 100,000")
    strict = build_model_app(smollm, max_json_values=3)  # serve-model --max-json-values 3
    assert_error(asyncio.run(send(strict, chat())), 400, "over the limit of 3")
    terse = build_model_app(smollm, max_error_items=2)  # serve-model --max-error-items 2
    response = asyncio.run(send(terse, {"messages": [{}] * 5}))
    assert_error(response, 400, "5 validation errors")
    assert response.json()["error"]["message"].count("'loc'") == 2 and "... and 3 more" in response.text
