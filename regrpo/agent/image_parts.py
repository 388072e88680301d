"""The chat an engine is given: text for a text-only engine, image parts too for one that takes images.

One rendering serves both. Every message's text is the same for every engine: the task names its
images by id and size, and an observation names the images a tool made (``regrpo.agent.prompts``), so
a text-only model can still refer to them in tool calls. An engine with ``takes_images = True``
(:class:`~regrpo.agent.vision.VisionPolicy`) is also shown each message's images
(:attr:`Message.images <regrpo.traces.schema.Message.images>`) as ``{"type": "image"}`` parts before
its text, in the message where they first appear and never again: the user's images in the task, a
crop's output in the observation after the crop. The pixels come from the episode's
:class:`~regrpo.tools.ImageStore`, so a replayed episode (the data engine, ReGRPO's branch points)
rebuilds the same parts from the same ids.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from regrpo.agent.policy import as_chat
from regrpo.tools import ImageStore
from regrpo.traces.schema import Message

__all__ = ["chat_for", "takes_images", "wire_messages"]


def takes_images(policy: object) -> bool:
    """Whether an engine is shown image parts (it says so with ``takes_images = True``)."""
    return bool(getattr(policy, "takes_images", False))


def chat_for(policy: object, messages: Sequence[Message], images: ImageStore | None) -> list[dict[str, Any]]:
    """``messages`` as ``policy`` takes them (module docstring); text only without an image store."""
    if images is None or not takes_images(policy):
        return list(as_chat(messages))
    return [_with_image_parts(message, images) for message in messages]


def _with_image_parts(message: Message, images: ImageStore) -> dict[str, Any]:
    from PIL import Image

    if not message.images:
        return message.to_dict()
    parts: list[dict[str, Any]] = [
        {"type": "image", "image": Image.fromarray(images.get(image_id))} for image_id in message.images
    ]
    return {"role": message.role, "content": [*parts, {"type": "text", "text": message.content}]}


def wire_messages(chat: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat with image parts in the OpenAI wire format: each PIL image part becomes an ``image_url``
    part holding a PNG ``data:`` URL (what vLLM takes for a multimodal model); text is unchanged."""
    return [
        message if isinstance(message["content"], str) else {**message, "content": _wire_parts(message)}
        for message in chat
    ]


def _wire_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts = []
    for part in message["content"]:
        if part.get("type") == "image":
            buffer = io.BytesIO()
            part["image"].save(buffer, "PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            parts.append(part)
    return parts
