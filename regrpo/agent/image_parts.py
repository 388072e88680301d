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

from collections.abc import Sequence
from typing import Any

from regrpo.agent.policy import as_chat
from regrpo.tools import ImageStore
from regrpo.traces.schema import Message

__all__ = ["chat_for", "takes_images"]


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
