"""Hostile input against ``serve-model``: over 1,000 generated malformed requests, never a 5xx.

Hypothesis drives the real app (the real SmolLM2, in process over ``httpx.ASGITransport``: the ASGI
app uvicorn serves, without socket cost) with random bodies, content types, JSON shapes that are
almost a chat, tokenize or LoRA request, hostile strings (lone surrogates, NUL, huge numbers) and
adapter paths. Every answer must be < 500, and an error must be JSON without a traceback or a path
of this machine. Chat-shaped bodies always carry a small ``max_tokens``, so the ones that are valid
cost a token or two of decoding.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_helpers import json_values

from regrpo.server.model_server import build_model_app

pytestmark = pytest.mark.slow

KEY = "sk-model-fuzz"
PATHS = [
    "/v1/chat/completions",
    "/tokenize",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/v1/models",
]
HOSTILE = ["\ud800", "a\x00b", "m" * 5000, "/etc/passwd", "../../etc", "SmolLM2-135M-Instruct", ""]

strings = st.sampled_from(HOSTILE) | st.text(max_size=30)
numbers = st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=True) | json_values
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "robot"])
            | json_values
        },
        optional={"content": strings | st.lists(st.dictionaries(st.sampled_from(["type", "text"]), strings))},
    ),
    max_size=3,
)
chatlike = st.fixed_dictionaries(
    {"messages": messages | json_values, "max_tokens": st.integers(min_value=-2, max_value=2)},
    optional={
        "model": strings | json_values,
        "n": numbers,
        "seed": numbers,
        "temperature": numbers,
        "logprobs": json_values,
        "top_logprobs": numbers,
        "stop": strings | st.lists(strings, max_size=3) | json_values,
        "stream": json_values,
        "top_p": numbers,
        "return_token_ids": json_values,
    },
)
lora = st.fixed_dictionaries(
    {},
    optional={
        "lora_name": strings | json_values,
        "lora_path": strings | json_values,
        "load_inplace": json_values,
    },
)
tokenize = st.fixed_dictionaries({"prompt": strings | json_values}, optional={"model": strings | json_values})
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    chatlike.map(lambda v: json.dumps(v).encode()),
    lora.map(lambda v: json.dumps(v).encode()),
    tokenize.map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 5000 + b"]" * 5000),
)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""])


@pytest.fixture(scope="module")
def fuzz_client():
    from regrpo.agent.local import LocalPolicy

    runner = asyncio.Runner()
    app = build_model_app(LocalPolicy(), api_key=KEY, max_n=2, max_body_bytes=64 * 1024)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://m"
    )
    yield runner, client
    runner.run(client.aclose())
    runner.close()


@settings(max_examples=1100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_malformed_requests_never_give_5xx_or_tracebacks(fuzz_client, data):
    runner, client = fuzz_client
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "DELETE"]))
    headers = {"authorization": f"Bearer {KEY}", "content-type": data.draw(content_types)}
    response = runner.run(
        client.request(method, data.draw(st.sampled_from(PATHS)), content=data.draw(bodies), headers=headers)
    )
    text = response.text
    assert response.status_code < 500, (response.status_code, text[:500])
    assert "Traceback" not in text and 'File "' not in text and "/work/" not in text and "/root/" not in text
