"""``regrpo serve-model`` serving an image-text-to-text model (issue 15): image_url parts in, the
image's tokens in the prompt, over a real socket, driven by ``OpenAIPolicy(images=True)`` (the
client the agent uses against vLLM) and by plain HTTP for the refusals.

The engine is a tiny randomly initialised Qwen2-VL with transformers' real processor
(regrpo/agent/vision_models.py: no pretrained VLM is reachable offline). The request shape is vLLM's
multimodal chat (tests/server/test_vllm_protocol.py validates it with vLLM's own classes).
"""

from __future__ import annotations

import base64

import httpx
import pytest
from PIL import Image

from regrpo.agent.image_parts import wire_messages
from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.agent.vision import VisionPolicy
from regrpo.agent.vision_models import build_tiny_qwen2_vl
from regrpo.server.config import ServerConfig
from regrpo.server.model_server import build_model_app, running_server

pytestmark = pytest.mark.slow

PICTURE = Image.new("RGB", (112, 56), (200, 40, 40))


def chat(image: Image.Image = PICTURE) -> list[dict[str, object]]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Colour?"}]}
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("served-vlm"))


@pytest.fixture(scope="module")
def local(folder):
    """A second engine on the same weights, in this process: what the server should have computed."""
    return VisionPolicy(folder)


@pytest.fixture(scope="module")
def server(folder):
    app = build_model_app(VisionPolicy(folder), images=ServerConfig(max_images_per_request=2))
    with running_server(app) as url:
        yield url


def test_an_image_request_is_answered_as_the_engine_answers_it_in_process(server, local):
    remote = OpenAIPolicy(server, local.model_name, images=True)
    (served,) = remote.generate(chat(), max_new_tokens=6)
    (own,) = local.generate(chat(), max_new_tokens=6)
    text_only = local.encode([{"role": "user", "content": "Colour?"}])["input_ids"].shape[1]
    assert served.prompt_tokens == own.prompt_tokens == text_only + 10  # 8 image tokens + start/end marks
    assert served.token_ids == own.token_ids and served.text == own.text  # PNG over the wire: same pixels
    assert served.logprobs == pytest.approx(own.logprobs, abs=1e-4)


def test_top_logprobs_are_scored_with_the_image(server, local):
    body = {
        "messages": wire_messages(chat()),
        "max_tokens": 3,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    body["return_token_ids"] = True
    reply = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120).json()
    choice = reply["choices"][0]
    tokens = choice["token_ids"]
    expected = local.top_logprobs(chat(), tokens, 2)
    for entry, best in zip(choice["logprobs"]["content"], expected, strict=True):
        assert entry["top_logprobs"][0]["logprob"] == pytest.approx(best[0][1], abs=1e-4)
    blank = local.top_logprobs(chat(Image.new("RGB", (112, 56))), tokens, 2)
    assert blank != expected  # the image, not just the text, was scored


def post(server: str, messages: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"{server}/v1/chat/completions", json={"messages": messages, "max_tokens": 2}, timeout=60
    )


def data_url(payload: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(payload).decode()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (data_url(b"not a picture"), "is not a readable image"),
        ("/etc/passwd", "does not accept local image paths"),
        ("http://169.254.169.254/latest", "does not fetch http(s) image URLs"),
    ],
    ids=["not-an-image", "local-file", "http"],
)
def test_a_bad_image_url_is_a_400_naming_the_messages(server, url, problem):
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Colour?"}]
    reply = post(server, [{"role": "user", "content": parts}])
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "messages" and problem in error["message"]


def test_more_images_than_the_servers_limit_is_a_400(server):
    image = wire_messages(chat())[0]["content"][0]
    reply = post(server, [{"role": "user", "content": [image, image, image, {"type": "text", "text": "?"}]}])
    assert (
        reply.status_code == 400
        and "3 images, over this server's limit of 2" in reply.json()["error"]["message"]
    )
