"""Our wire JSON, read by vLLM 0.33.0's own pydantic protocol classes (vLLM imported, never started).

serve-model and ``OpenAIPolicy`` were written from ``shared/VLLM_CONTRACT.md``; this test checks the
JSON they produce against the real classes: the request ``OpenAIPolicy`` sends, a chat response with
log-probs and token ids, a stream chunk, the model list, the LoRA bodies and the error envelope. It
also checks our response carries exactly vLLM's fields (no field missing, none invented).

vLLM cannot be installed next to our pins (it pins torch 2.14.0 and transformers < 5.21), so only its
Python sources and the few pure dependencies its protocol modules import are unpacked into
``build/vllm-protocol/`` (``make build/vllm-protocol``, a prerequisite of ``make test``), and the
check runs in a subprocess with those folders at the *end* of ``sys.path``, so our own packages win
and vLLM's import-time set-up cannot touch this test process. Without the folder the test fails
and says how to make it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.errors import ModelError
from regrpo.openai_wire import (
    ModelCard,
)
from regrpo.server.model_server import build_model_app, running_server

pytestmark = pytest.mark.slow

VLLM_DIR = Path(__file__).resolve().parents[2] / "build" / "vllm-protocol"
CHAT = [{"role": "user", "content": "Name a colour."}]
IMAGE_PARTS = [{"type": "image", "image": Image.new("RGB", (8, 8))}, {"type": "text", "text": "Colour?"}]
IMAGE_CHAT = [{"role": "user", "content": IMAGE_PARTS}]

CHECK = r"""
import json, sys
sys.path += sys.argv[2:]
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionRequest, ChatCompletionResponse, ChatCompletionStreamResponse)
from vllm.entrypoints.serve.engine.protocol import ErrorResponse, ModelList
from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest

s = json.load(open(sys.argv[1]))
request = ChatCompletionRequest.model_validate(s["request"])
image_request = ChatCompletionRequest.model_validate(s["image_request"])
response = ChatCompletionResponse.model_validate(s["response"])
models = ModelList.model_validate(s["models"])
out = {
    "request_extra": sorted((request.model_extra or {}).keys()),
    "request_fields": sorted(ChatCompletionRequest.model_fields),
    "response_keys": sorted(response.model_dump()),
    "choice_keys": sorted(response.model_dump()["choices"][0]),
    "message_keys": sorted(response.model_dump()["choices"][0]["message"]),
    "token_ids": response.choices[0].token_ids,
    "top_logprobs": len(response.choices[0].logprobs.content[0].top_logprobs),
    "card_keys": sorted(models.model_dump()["data"][0]),
    "lora_card": models.model_dump()["data"][1],
    "image_parts": [part["type"] for part in image_request.messages[0]["content"]],
    "image_extra": sorted((image_request.model_extra or {}).keys()),
}
ChatCompletionStreamResponse.model_validate(s["chunk"])
LoadLoRAAdapterRequest.model_validate(s["load"])
UnloadLoRAAdapterRequest.model_validate(s["unload"])
out["error"] = ErrorResponse.model_validate(s["error"]).model_dump()
print(json.dumps(out))
"""


class Recorder:
    """ASGI wrapper keeping the chat request bodies that reach the server."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(b"".join(chunks)))
        replay = iter([{"type": "http.request", "body": b"".join(chunks), "more_body": False}])
        await self.app(scope, lambda: _next(replay, receive), send)


async def _next(replay, receive):
    return next(replay, None) or await receive()


@pytest.fixture(scope="module")
def vllm_paths():
    paths = [VLLM_DIR / "src", VLLM_DIR / "deps"]
    if not all(p.is_dir() for p in paths):
        pytest.fail(f"vLLM's protocol sources are not unpacked in {VLLM_DIR}: run `make build/vllm-protocol`")
    return [str(p) for p in paths]


def test_our_json_validates_against_vllms_protocol_classes(smollm, tmp_path, vllm_paths):
    recorder = Recorder(build_model_app(smollm))
    with running_server(recorder) as url:
        OpenAIPolicy(url, smollm.model_name).generate(CHAT, max_new_tokens=2, stop=["</answer>"])
        with pytest.raises(ModelError, match="text-only model"):  # serve-model's model takes no images
            OpenAIPolicy(url, smollm.model_name, images=True).generate(IMAGE_CHAT, max_new_tokens=2)
        body = {
            "messages": CHAT,
            "max_tokens": 2,
            "logprobs": True,
            "top_logprobs": 2,
            "return_token_ids": True,
        }
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
        stream = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=120).text
        error = httpx.post(f"{url}/v1/chat/completions", json={"model": "x", "messages": CHAT}).json()
        models = httpx.get(f"{url}/v1/models").json()
    lora = {"lora_name": "policy", "lora_path": "/adapters/policy/step-000001", "load_inplace": True}
    models["data"].append(  # an adapter card, as serve-model lists one after a load
        ModelCard(id="policy", root=lora["lora_path"], parent=smollm.model_name).model_dump()
    )
    samples = {
        "request": recorder.bodies[0],
        "image_request": recorder.bodies[1],
        "response": response,
        "chunk": json.loads(stream.split("\n\n")[1][len("data: ") :]),
        "models": models,
        "load": lora,
        "unload": {"lora_name": "policy"},
        "error": error,
    }
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "samples.json"), *vllm_paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    # every field OpenAIPolicy sends is a declared vLLM field, not an ignored extra
    assert out["request_extra"] == []
    assert {"return_token_ids", "include_stop_str_in_output", "logprobs"} <= set(out["request_fields"])
    # our response has exactly vLLM's fields, at every level we emit
    assert out["response_keys"] == sorted(response)
    assert out["choice_keys"] == sorted(response["choices"][0])
    # the message omits an empty tool_calls (contract §4.2), which vLLM's model fills with []
    assert set(out["message_keys"]) - set(response["choices"][0]["message"]) <= {"tool_calls"}
    assert set(response["choices"][0]["message"]) <= set(out["message_keys"])
    assert out["token_ids"] == response["choices"][0]["token_ids"] and out["top_logprobs"] == 2
    assert out["card_keys"] == sorted(models["data"][0])
    assert out["lora_card"]["root"] == "/adapters/policy/step-000001"
    # an image request (a vision engine's turn) is vLLM's multimodal chat: image_url parts, no extras
    assert out["image_parts"] == ["image_url", "text"] and out["image_extra"] == []
    assert out["error"]["error"]["code"] == 404 and out["error"]["error"]["param"] == "model"
