"""An agent episode on an engine that takes images: the user's image in the task turn, a crop's output
in the observation after the crop, each shown once, recorded in the trace by id, and rendered again
from the trace by the same code path.

The engine is the real :class:`VisionPolicy` (tiny Idefics3, real processor) with its sampling
replaced by a script (tests/vision_helpers.py).
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from PIL import Image
from vision_helpers import ScriptedVision

from regrpo import Agent, ScriptedPolicy
from regrpo.agent.image_parts import chat_for, wire_messages
from regrpo.agent.vision_models import build_tiny_idefics3
from regrpo.tools import ImageStore
from regrpo.traces.schema import ImageRecord, Message

CROP = '<tool_call>{"name": "crop", "arguments": {"image": "img_0", "box": [0, 0, 30, 20]}}</tool_call>'
PICTURE = Image.new("RGB", (60, 40), (200, 30, 30))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


def images_in(message):
    content = message["content"]
    return [] if isinstance(content, str) else [p["image"] for p in content if p["type"] == "image"]


def test_each_image_is_shown_once_where_it_appears_and_the_trace_names_it(folder, store):
    policy = ScriptedVision(folder, [CROP, "<answer>red</answer>"])
    result = Agent(policy, store=store, adapter=None).run("What colour is the top-left corner?", PICTURE)

    assert result.answer == "red"
    first, second = policy.chats
    assert [len(images_in(m)) for m in first] == [0, 1]  # system, task with the user's image
    assert images_in(first[1])[0].size == (60, 40)
    assert [len(images_in(m)) for m in second] == [0, 1, 0, 1]  # ... crop call, observation with its output
    assert images_in(second[3])[0].size == (30, 20)
    assert policy.prompt_tokens[1] > policy.prompt_tokens[0] + 4  # the crop's image tokens joined the prompt

    episode = store.get(result.trace_id)
    assert [m.images for m in episode.messages] == [(), ("img_0",), (), ("img_1",), ()]
    assert "img_0 (60x40)" in episode.messages[1].content  # the text names it for a text-only engine
    corner = np.asarray(PICTURE)[:20, :30].tobytes()  # the crop's pixels, hashed in the step that made them
    assert episode.steps[0].images_made == [ImageRecord("img_1", 30, 20, hashlib.sha256(corner).hexdigest())]
    assert episode.steps[1].images_made == []


class TakesImagesEngine:
    """All :func:`chat_for` reads of an engine that takes images."""

    takes_images = True


def store_with(picture):
    store = ImageStore()
    store.add(picture)
    return store


def test_a_text_only_engine_gets_the_same_text_and_no_parts():
    store = store_with(PICTURE)
    messages = [Message("user", "Look: img_0 (60x40)", images=("img_0",))]
    assert chat_for(ScriptedPolicy(["x"]), messages, store) == [
        {"role": "user", "content": messages[0].content}
    ]

    image, text = chat_for(TakesImagesEngine(), messages, store)[0]["content"]
    assert image["image"].size == (60, 40) and text == {"type": "text", "text": messages[0].content}


def test_image_parts_go_over_the_wire_as_png_data_urls_with_the_same_pixels():
    chat = chat_for(TakesImagesEngine(), [Message("user", "Look", images=("img_0",))], store_with(PICTURE))
    (message,) = wire_messages(chat)
    image, text = message["content"]
    header, data = image["image_url"]["url"].split(",", 1)
    assert image["type"] == "image_url" and header == "data:image/png;base64" and text["text"] == "Look"
    assert Image.open(io.BytesIO(base64.b64decode(data))).tobytes() == PICTURE.tobytes()
    assert wire_messages([{"role": "user", "content": "plain"}]) == [{"role": "user", "content": "plain"}]
