"""Hostile input against the agent server: malformed requests never give a 5xx or a traceback.

Hypothesis sends well over 1,000 malformed requests in process (``httpx.ASGITransport``: the same
ASGI app uvicorn serves, without socket cost): random bodies, headers, content types, JSON shapes
that are almost a chat request, and image URLs aimed at files and internal hosts. Every answer must
be < 500, carry the OpenAI error envelope when it is an error, and hold no traceback or file path.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_helpers import data_url, image_message, json_values, png_bytes

from regrpo import Agent, ScriptedPolicy
from regrpo.server.app import build_agent_app
from regrpo.server.config import ServerConfig
from regrpo.tools.calculator import calculator

KEY = "sk-fuzz"
PATHS = [
    "/v1/chat/completions",
    "/v1/feedback",
    "/v1/adapters/promote",
    "/v1/adapters/rollback",
    "/v1/models",
    "/v1/adapters",
    "/metrics",
    "/healthz",
    "/v1/../etc/passwd",
    "/v1/chat/completions/extra",
    "/%00",
]
EVIL_URLS = [
    "file:///etc/passwd",
    "/etc/shadow",
    "../../../../etc/passwd",
    "file://localhost/proc/self/environ",
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:22/",
    "http://[::1]/",
    "http://2130706433/",
    "http://localhost/",
    "gopher://127.0.0.1:25/",
    "data:image/png;base64,!!!!",
    "data:text/plain;base64,aGk=",
    "data:,",
    "\x00",
    "A" * 5000,
]

image_urls = st.sampled_from(EVIL_URLS) | st.text(max_size=60) | st.just(data_url(png_bytes(4, 4)))
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": json_values}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": image_urls})}
    ),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": json_values}),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), json_values, max_size=3),
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "robot"]) | json_values},
        optional={"content": st.text(max_size=40) | st.lists(parts, max_size=4) | json_values},
    ),
    max_size=4,
)
chatlike = st.fixed_dictionaries(
    {"messages": messages | json_values},
    optional={
        "model": st.sampled_from(["regrpo-agent", "x"]) | json_values,
        "stream": json_values,
        "n": json_values,
        "stream_options": json_values,
        "temperature": json_values,
        "max_tokens": json_values,
    },
)
admin = st.fixed_dictionaries(
    {},
    optional={"trace_id": json_values, "reward": json_values, "answer": json_values, "version": json_values},
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    chatlike.map(lambda v: json.dumps(v).encode()),
    admin.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 5000 + b"]" * 5000),  # deep nesting
    st.just(b'{"messages": "' + b"x" * 300_000 + b'"}'),  # over the body limit
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "text/plain", "multipart/form-data", ""]
        )
        | st.text(max_size=20).filter(lambda t: t.isprintable() and t.isascii()),
        "authorization": st.sampled_from(
            [f"Bearer {KEY}", "Bearer", "Basic abc", f"bearer {KEY}", "Bearer x"]
        ),
        "content-length": st.sampled_from(["0", "5", "99999999999"]),
        "accept": st.sampled_from(["*/*", "text/event-stream"]),
    },
)


def make_app(store, **config):
    agent = Agent(ScriptedPolicy(["<answer>ok</answer>"], cycle=True), tools=[calculator], store=store)
    defaults = dict(api_keys=(KEY,), max_body_bytes=256 * 1024, allow_http_images=True)
    return build_agent_app(agent, ServerConfig(**{**defaults, **config}))


def check(response: httpx.Response) -> None:
    text = response.text
    assert response.status_code < 500, (response.status_code, text[:500])
    assert "Traceback" not in text and 'File "' not in text and "/work/" not in text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] == response.status_code and isinstance(error["message"], str)


@pytest.fixture
def fuzz_client(store):
    """A client for the in-process app on one event loop shared by every hypothesis example."""
    runner = asyncio.Runner()
    transport = httpx.ASGITransport(make_app(store), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://agent")
    yield runner, client
    runner.run(client.aclose())
    runner.close()


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_malformed_requests_never_give_5xx_or_tracebacks(fuzz_client, data):
    runner, client = fuzz_client
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]))
    path = data.draw(st.sampled_from(PATHS))
    request_headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    request_headers.update(data.draw(headers))
    body = data.draw(bodies)
    if "content-length" in request_headers:
        request_headers.pop("content-length")  # h11 would reject a wrong one before our app; httpx sets it
    response = runner.run(client.request(method, path, content=body, headers=request_headers))
    check(response)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=chatlike)
def test_chat_shaped_garbage_is_a_400_naming_a_parameter(fuzz_client, body):
    runner, client = fuzz_client
    h = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    response = runner.run(client.post("/v1/chat/completions", content=json.dumps(body), headers=h))
    check(response)
    if response.status_code == 400 and response.json()["error"]["type"] == "Bad Request":
        assert response.json()["error"]["param"].startswith("body")


def test_each_kind_of_bad_request_gets_its_status(store):
    async def run():
        transport = httpx.ASGITransport(make_app(store), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            h = {"authorization": f"Bearer {KEY}"}
            chat = "/v1/chat/completions"
            out = {
                "not json": await client.post(
                    chat, content=b"{", headers={**h, "content-type": "application/json"}
                ),
                "form": await client.post(chat, content=b"a=b", headers={**h, "content-type": "text/plain"}),
                "wrong type": await client.post(chat, json={"messages": "hi"}, headers=h),
                "no user": await client.post(
                    chat, json={"messages": [{"role": "system", "content": "x"}]}, headers=h
                ),
                "n=2": await client.post(
                    chat, json={"messages": [{"role": "user", "content": "x"}], "n": 2}, headers=h
                ),
                "too many images": await client.post(
                    chat, json={"messages": [image_message("x", *[data_url(png_bytes())] * 9)]}, headers=h
                ),
                "ssrf": await client.post(
                    chat, json={"messages": [image_message("x", "http://169.254.169.254/")]}, headers=h
                ),
                "no key": await client.post(chat, json={"messages": []}),
                "unknown route": await client.get("/v2/nothing", headers=h),
                "wrong method": await client.get(chat, headers=h),
                "no registry": await client.get("/v1/adapters", headers=h),
            }
            return out

    out = asyncio.run(run())
    for response in out.values():
        check(response)
    status = {name: r.status_code for name, r in out.items()}
    assert status == {
        "not json": 400,
        "form": 400,
        "wrong type": 400,
        "no user": 400,
        "n=2": 400,
        "too many images": 400,
        "ssrf": 400,
        "no key": 401,
        "unknown route": 404,
        "wrong method": 405,
        "no registry": 404,
    }
    assert out["wrong type"].json()["error"]["param"] == "body.messages"
    assert out["n=2"].json()["error"]["param"] == "n"
    assert out["ssrf"].json()["error"]["param"] == "messages.0.content"
    assert "non-public" in out["ssrf"].json()["error"]["message"]
    assert out["no key"].headers["www-authenticate"] == "Bearer"


def test_our_own_bug_is_a_generic_500_without_a_traceback(store, caplog):
    def broken(chat):
        raise ZeroDivisionError("secret internal detail")

    agent = Agent(ScriptedPolicy([broken], cycle=True), tools=[calculator], store=store)
    app = build_agent_app(agent, ServerConfig())

    async def run():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
            )

    response = asyncio.run(run())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "InternalServerError"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert "ZeroDivisionError" in caplog.text  # logged for the operator


def test_lone_surrogates_and_huge_error_lists_are_short_400s(store):
    """Issue 14, items 3 and 7: a lone surrogate was a 500 (a broken stream with ``stream``); a body
    of many bad items made a 400 listing every error (195 MiB for a 17 MiB body)."""

    async def run():
        transport = httpx.ASGITransport(make_app(store), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            h = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
            chat = "/v1/chat/completions"
            lone = b'{"messages": [{"role": "user", "content": "\\ud800"}]'
            return [
                await client.post(chat, content=lone + b"}", headers=h),
                await client.post(chat, content=lone + b', "stream": true}', headers=h),
                await client.post(chat, content=b'{"model": "\\udfff", "messages": []}', headers=h),
                await client.post(chat, content=json.dumps({"messages": [{}] * 20_000}), headers=h),
                await client.post(chat, content=json.dumps({"messages": [{}] * 60_000}), headers=h),
            ]

    *surrogates, many, too_many = asyncio.run(run())
    for response in surrogates:
        check(response)
        assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]
    check(many)
    assert many.status_code == 400 and len(many.content) < 10_000
    assert "more" in many.json()["error"]["message"]
    # 120,000 values are refused before parsing: json.loads and pydantic hold the GIL, so the worker
    # thread they ran in stalled the health checks for 1.4 s (benchmarks/health_under_abuse.py)
    check(too_many)
    assert too_many.status_code == 400 and "over the limit of 100,000" in too_many.json()["error"]["message"]


def test_the_error_list_bound_is_the_servers_setting(store):
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(make_app(store, max_error_items=2))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            body = {"messages": [{}] * 5}
            return await client.post(
                "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
            )

    message = asyncio.run(send()).json()["error"]["message"]
    assert message.startswith("5 validation errors") and message.count("'loc'") == 2
    assert message.endswith("... and 3 more")


def test_the_json_value_bound_is_the_servers_setting(store):
    async def send(max_json_values: int) -> httpx.Response:
        transport = httpx.ASGITransport(make_app(store, max_json_values=max_json_values))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            # 91 values by the count: 31 '{', 1 '[', 30 commas inside the messages and 29 between them
            body = {"messages": [{"role": "user", "content": "hi"}] * 30}
            return await client.post(
                "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
            )

    refused, served = asyncio.run(send(90)), asyncio.run(send(91))
    assert refused.status_code == 400 and "about 91 JSON values" in refused.json()["error"]["message"]
    assert "over the limit of 90" in refused.json()["error"]["message"]
    assert served.status_code == 200, served.text


def test_two_authorization_headers_are_a_401_whichever_holds_the_key(store):
    async def send(pair) -> int:
        transport = httpx.ASGITransport(make_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            response = await client.get("/v1/models", headers=[("Authorization", value) for value in pair])
            return response.status_code

    assert asyncio.run(send([f"Bearer {KEY}"])) == 200
    for pair in ([f"Bearer {KEY}", "Bearer x"], ["Bearer x", f"Bearer {KEY}"]):
        assert asyncio.run(send(pair)) == 401
