"""What ``regrpo serve``'s routes share: reading requests, running one episode, the adapters.

:class:`AgentService` holds the agent, the limits, metrics, the admission gate, the image resolver
and the adapter registry; the routes in :mod:`regrpo.server.app` are thin over it. Request bodies
are read under the byte limit and the body deadline, then decoded and validated in a worker thread;
an episode's failures become refusals (:func:`episode_refusal`: the caller's mistake 400, the
engine's 503 with ``Retry-After``, ours a generic 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from regrpo.agent.loop import Agent, Result
from regrpo.errors import AdapterError, InputError, ModelError, RegrpoError, TraceStoreError
from regrpo.learning.hotswap import swap_in, swap_to_base
from regrpo.learning.registry import AdapterRegistry
from regrpo.openai_wire import ChatCompletionRequest
from regrpo.server.admission import EpisodeGate, Refusal, Ticket
from regrpo.server.agent_protocol import AdapterState
from regrpo.server.config import ServerConfig
from regrpo.server.image_urls import ImageResolver, ImageURLError, checked_request_pixels
from regrpo.server.metrics import ServerMetrics
from regrpo.server.responses import BodyRefused, InvalidBody, NotJSONText, parse_json_text, read_json_body
from regrpo.traces import Step
from regrpo.verifier import VerifierError

__all__ = ["AgentService", "episode_refusal"]

logger = logging.getLogger("regrpo.server")


class AgentService:
    """Everything the routes share: the agent, limits, metrics, registry and admission gate."""

    def __init__(
        self,
        agent: Agent,
        config: ServerConfig,
        registry: AdapterRegistry | None,
        image_transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.agent, self.config, self.registry = agent, config, registry
        self.metrics = ServerMetrics()
        self.gate = EpisodeGate(config.max_concurrency, config.max_queue, config.retry_after_s)
        self.metrics.episodes_running.set_function(lambda: self.gate.running)
        self.metrics.episodes_queued.set_function(lambda: self.gate.waiting)
        self.images = ImageResolver(config, transport=image_transport)
        self.admin_lock = asyncio.Lock()
        self.loaded: set[str] = set()  # adapter versions this server loaded into the policy

    # -- reading requests -------------------------------------------------------------------------------

    async def read_json(self, request: Request) -> Any:
        try:
            body = await read_json_body(request, self.config.max_body_bytes, self.config.body_timeout_s)
        except BodyRefused as exc:
            raise Refusal(exc.status, exc.message) from None
        try:
            # off the event loop (the value count bounds how long the parse may hold the GIL)
            return await anyio.to_thread.run_sync(parse_json_text, body, self.config.max_json_values)
        except NotJSONText as exc:
            raise Refusal(400, f"the request body cannot be parsed: {exc}") from None

    async def parse(self, request: Request, model: type[BaseModel]) -> Any:
        data = await self.read_json(request)

        def validated() -> Any:
            try:
                return model.model_validate(data)
            except ValidationError as exc:
                raise InvalidBody(exc, self.config.max_error_items) from None
            except RecursionError:
                raise Refusal(400, "request body is nested too deeply") from None

        return await anyio.to_thread.run_sync(validated)

    # -- one episode ------------------------------------------------------------------------------------

    def served_names(self) -> set[str]:
        live = self.registry.live() if self.registry is not None else None
        return {self.config.model_name} | ({live} if live else set())

    def task_of(self, chat: ChatCompletionRequest) -> tuple[str, list[str], str | None]:
        """``(task, image urls, model name to echo)`` of a chat request, or a 400/404 naming the field."""
        if chat.model is not None and chat.model not in self.served_names():
            raise Refusal(404, f"The model `{chat.model}` does not exist.", param="model")
        if chat.n != 1:
            raise Refusal(400, "the agent gives one answer per request; n must be 1", param="n")
        users = [i for i, m in enumerate(chat.messages) if m.role == "user"]
        if not users:
            raise Refusal(
                400, "messages holds no user message; the last user message is the task", param="messages"
            )
        message = chat.messages[users[-1]]
        task, urls = message.text().strip(), message.image_urls()
        if not task:
            raise Refusal(
                400, "the last user message has no text; its text is the agent's task", param="messages"
            )
        if len(urls) > self.config.max_images_per_request:
            raise Refusal(
                400,
                f"{len(urls)} images in one request; this server accepts at most "
                f"{self.config.max_images_per_request}",
                param=f"messages.{users[-1]}.content",
            )
        return task, urls, chat.model

    async def load_images(self, urls: list[str], message_index: int) -> list[bytes]:
        """The request's images as checked, still-encoded bytes: the agent decodes them off the event
        loop once the episode has a slot, so a queued request holds no pixels (``image_urls``)."""
        try:
            images = [await self.images.resolve(url) for url in urls]
            checked_request_pixels(images, self.config.max_request_pixels)
        except ImageURLError as exc:
            raise Refusal(400, str(exc), param=f"messages.{message_index}.content") from None
        return [image.data for image in images]

    async def run_episode(
        self,
        ticket: Ticket,
        task: str,
        images: list[bytes],
        on_step: Callable[[Step], None] | None = None,
        trace_id: str | None = None,
    ) -> Result:
        """Wait for a slot, run the episode under the request deadline; map its failures to refusals.

        A broken verifier (``regrpo serve --verifier``) is the server's fault, not the caller's: the
        episode ran and is stored, so the caller gets its answer; the episode stays unscored, and the
        error is logged and counted (``regrpo_verifier_errors_total``).
        """
        try:
            async with ticket:
                result = await self.agent.arun(task, images, on_step=on_step, trace_id=trace_id)
        except VerifierError as exc:  # raised once the episode is stored (Agent.arun sets its trace id)
            self.metrics.verifier_errors.inc()
            stored: str = exc.trace_id  # type: ignore[attr-defined]
            logger.error("the verifier failed; episode %s is stored unscored: %s", stored, exc)
            result = Result.from_episode(await asyncio.to_thread(self.agent.store.get, stored))
        except RegrpoError as exc:
            self.metrics.episodes.labels("error").inc()
            raise episode_refusal(exc, self.config.retry_after_s) from None
        self.metrics.record_episode(result)
        return result

    async def deadline(self, work: Awaitable[Result]) -> Result:
        try:
            return await asyncio.wait_for(work, self.config.request_timeout_s)
        except TimeoutError:
            self.metrics.episodes.labels("timeout").inc()
            raise Refusal(
                504, f"the episode did not finish within {self.config.request_timeout_s:g} s"
            ) from None

    # -- adapters ---------------------------------------------------------------------------------------

    def need_registry(self) -> AdapterRegistry:
        if self.registry is None:
            raise Refusal(404, "this server has no adapter registry; start it with --registry-dir DIR")
        return self.registry

    def activate(self, version: str | None) -> None:
        """Load (once) and activate ``version`` in the policy (``None`` = base); runs in a worker thread."""
        if version is None:
            swap_to_base(self.agent.policy, unload_previous=False)
        else:
            swap_in(self.agent.policy, self.need_registry(), version, unload_previous=False)
            self.loaded.add(version)

    def unload_stale(self, keep: set[str | None]) -> None:
        for version in sorted(self.loaded - {v for v in keep if v}):
            with contextlib.suppress(AdapterError):
                self.agent.policy.unload_adapter(version)
            self.loaded.discard(version)

    def adapter_state(self) -> AdapterState:
        registry = self.need_registry()
        return AdapterState(
            live=registry.live(), active=self.agent.policy.active_adapter, previous=registry.history()
        )


def episode_refusal(exc: RegrpoError, retry_after: int) -> Refusal:
    if isinstance(exc, InputError):
        return Refusal(400, str(exc), param="messages")
    if isinstance(exc, (ModelError, AdapterError, TraceStoreError)):
        return Refusal(
            503, f"the agent's engine is unavailable: {exc}", retry_after=retry_after, reason="engine"
        )
    logger.error("episode failed with %s: %s", type(exc).__name__, exc)
    return Refusal(500, "the episode failed inside the server; see the server log")
