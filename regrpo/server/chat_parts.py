"""The chat of a ``/v1/chat/completions`` request as ``regrpo serve-model``'s engine takes it.

A text-only engine gets each message's text (its text parts joined with newlines). An engine that
takes images (:class:`~regrpo.agent.vision.VisionPolicy`) gets each message's parts in the order the
request gave them, every ``image_url`` part as ``{"type": "image", "image": <PIL image>}``: the form
the processors' chat templates take, and the one :func:`regrpo.agent.image_parts.wire_messages`
turns into these requests. Images are fetched with the agent server's
:class:`~regrpo.server.image_urls.ImageResolver` (``data:`` URLs always; local files and http(s) only
where its :class:`~regrpo.server.config.ServerConfig` allows) and checked from their headers
(per image and per request) before any pixel is decoded.
"""

from __future__ import annotations

import io
from typing import Any

from regrpo.openai_wire import ChatCompletionRequest, ChatMessage, ImageUrlContentPart
from regrpo.server.image_urls import EncodedImage, ImageResolver, ImageURLError, checked_request_pixels

__all__ = ["fetch_images", "image_chat", "text_chat"]


def _role(message: ChatMessage) -> str:
    return "system" if message.role == "developer" else message.role


def text_chat(body: ChatCompletionRequest) -> list[dict[str, str]]:
    """The request's messages as text (a ``developer`` message is a system message)."""
    return [{"role": _role(m), "content": m.text()} for m in body.messages]


async def fetch_images(body: ChatCompletionRequest, resolver: ImageResolver) -> list[list[EncodedImage]]:
    """Each message's images, fetched and checked, still encoded; :class:`ImageURLError` when one is
    refused, or when the request holds more images or pixels than ``resolver.config`` allows."""
    urls = [m.image_urls() for m in body.messages]
    count, limit = sum(len(u) for u in urls), resolver.config.max_images_per_request
    if count > limit:
        raise ImageURLError(f"the request holds {count} images, over this server's limit of {limit}")
    images = [[await resolver.resolve(url) for url in message] for message in urls]
    checked_request_pixels(
        [image for message in images for image in message], resolver.config.max_request_pixels
    )
    return images


def image_chat(body: ChatCompletionRequest, images: list[list[EncodedImage]]) -> list[dict[str, Any]]:
    """The request's messages with their image parts decoded (``images``: :func:`fetch_images`)."""
    from PIL import Image

    chat: list[dict[str, Any]] = []
    for message, encoded in zip(body.messages, images, strict=True):
        if not isinstance(message.content, list) or not encoded:
            chat.append({"role": _role(message), "content": message.text()})
            continue
        pending = iter(encoded)
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ImageUrlContentPart):
                image = Image.open(io.BytesIO(next(pending).data)).convert("RGB")
                parts.append({"type": "image", "image": image})
            else:
                parts.append({"type": "text", "text": part.text})
        chat.append({"role": _role(message), "content": parts})
    return chat
