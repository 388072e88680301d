"""``regrpo serve``: the agent as an OpenAI-compatible chat endpoint (Starlette on uvicorn).

Routes (every one but ``/healthz`` needs ``Authorization: Bearer <key>`` when keys are configured):

* ``POST /v1/chat/completions`` — the last user message's text is the task, its ``image_url`` parts
  the images; the reply is a chat completion whose content is the agent's answer, plus a top-level
  ``regrpo`` object (trace id, steps, reflections, usage). ``stream=true`` sends one SSE chunk per
  agent step (the answer as ``delta.content``, other steps as ``delta.reasoning``, each with its step
  summary under ``regrpo.step``), a final chunk with the finish reason, then ``data: [DONE]``.
* ``GET /v1/models``, ``POST /v1/feedback``, ``GET /v1/adapters``, ``POST /v1/adapters/promote``,
  ``POST /v1/adapters/rollback``, ``GET /healthz``, ``GET /metrics``.

Decisions:

* Errors use the OpenAI envelope with vLLM's conventions (``shared/VLLM_CONTRACT.md`` §1): a bad
  body is a 400 naming the parameter, a non-JSON ``Content-Type`` a 400, an unknown model a 404.
  Our own bugs are logged and become a generic 500 envelope: no traceback ever reaches a client.
* Admission is decided *before* any work, by counting: at most ``max_concurrency`` episodes run and
  ``max_queue`` wait; the next request gets 429 + ``Retry-After`` at once (never an unbounded queue),
  and while shutting down (or when the engine raises ``ModelError``) 503 + ``Retry-After``.
  A streamed request is admitted before its 200 is sent, so overload is a status code, not an error
  in the middle of a stream.
* The body limit is enforced while the body is read (``Content-Length`` first, then by counting the
  chunks), before any JSON parsing, so a huge body costs at most ``max_body_bytes`` of memory.
* Streaming uses ``Agent.arun(on_step=...)``: the callback runs on the server's event loop (the
  episode is a task there), so it feeds an ``asyncio.Queue`` with no polling and no threads.
* A request timeout or a client that goes away cancels the episode task; the trace records it as
  ``error``. A model call already running in a worker thread finishes in the background (Python
  cannot stop a thread); its result is dropped.
* Promote loads the adapter into the policy and activates it *before* moving the registry's live
  pointer, so a broken adapter never becomes live; adapters other than the live one and its
  rollback target are unloaded to bound memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regrpo.agent.loop import Agent, Result
from regrpo.errors import (
    AdapterError,
    InputError,
    TraceNotFoundError,
    TraceStoreError,
)
from regrpo.learning.registry import AdapterRegistry
from regrpo.openai_wire import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    ResponseMessage,
    UsageInfo,
    random_id,
)
from regrpo.server.admission import ERROR_TYPES, Refusal, Ticket
from regrpo.server.agent_protocol import (
    AdapterInfo,
    AdapterList,
    AgentExtension,
    FeedbackRequest,
    FeedbackResponse,
    PromoteRequest,
    StepSummary,
)
from regrpo.server.agent_service import AgentService
from regrpo.server.auth import bearer_token, key_matches
from regrpo.server.background import BackgroundServer, start_in_thread
from regrpo.server.config import ServerConfig
from regrpo.server.limits import ConnectionLimits, uvicorn_config
from regrpo.server.metrics import CONTENT_TYPE
from regrpo.server.responses import InvalidBody, error_response, validation_error_response
from regrpo.traces import Answer, Step

__all__ = ["BackgroundServer", "build_agent_app", "run_agent_server", "start_in_thread"]

logger = logging.getLogger("regrpo.server")

_ROUTES = (
    "/v1/chat/completions",
    "/v1/models",
    "/v1/feedback",
    "/v1/adapters",
    "/v1/adapters/promote",
    "/v1/adapters/rollback",
    "/healthz",
    "/metrics",
)
_ADMIN_ROUTES = ("/v1/adapters/promote", "/v1/adapters/rollback")


def _service(request: Request) -> AgentService:
    service: AgentService = request.app.state.service
    return service


# -- routes -------------------------------------------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    service = _service(request)
    chat: ChatCompletionRequest = await service.parse(request, ChatCompletionRequest)
    task, urls, model = service.task_of(chat)
    message_index = max(i for i, m in enumerate(chat.messages) if m.role == "user")
    model = model or service.config.model_name
    ticket = service.gate.reserve()
    streaming = False  # once a stream response exists, it owns the ticket
    try:
        images = await service.load_images(urls, message_index)
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            stream = _stream_episode(service, ticket, task, images, model, include_usage)
            streaming = True
            return _EpisodeStream(stream, ticket, media_type="text/event-stream", headers=_SSE_HEADERS)
        result = await service.deadline(service.run_episode(ticket, task, images))
    finally:
        if not streaming:
            ticket.release()
    response = ChatCompletionResponse(
        model=model,
        choices=[
            Choice(index=0, message=ResponseMessage(content=result.answer), finish_reason=_finish(result))
        ],
        usage=_usage(result),
    )
    body = response.model_dump()
    body["regrpo"] = AgentExtension.from_result(result).model_dump()
    return JSONResponse(body)


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _EpisodeStream(StreamingResponse):
    """A streaming response that gives its admission ticket back however the stream ends."""

    def __init__(self, content: AsyncIterator[str], ticket: Ticket, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.release()


async def _stream_episode(
    service: AgentService, ticket: Ticket, task: str, images: list[bytes], model: str, include_usage: bool
) -> AsyncIterator[str]:
    """SSE frames: a role chunk, one chunk per step, a finish chunk, (usage), ``[DONE]``."""
    chunk_id, created = random_id("chatcmpl"), int(time.time())
    steps: asyncio.Queue[Step | None] = asyncio.Queue()

    def frame(delta: DeltaMessage, finish: str | None = None, extension: dict[str, Any] | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=chunk_id,
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
        )
        data = chunk.model_dump(exclude_unset=True)
        if extension is not None:
            data["regrpo"] = extension
        return f"data: {json.dumps(data)}\n\n"

    trace_id = uuid.uuid4().hex  # announced in the first chunk, before any step has run
    episode = asyncio.ensure_future(
        service.deadline(service.run_episode(ticket, task, images, steps.put_nowait, trace_id))
    )
    episode.add_done_callback(lambda _: steps.put_nowait(None))
    try:
        yield frame(DeltaMessage(role="assistant", content=""), extension={"trace_id": trace_id})
        while (step := await steps.get()) is not None:
            summary = StepSummary.from_step(step)
            if isinstance(step.action, Answer):
                delta = DeltaMessage(content=step.action.text)
            else:
                delta = DeltaMessage(reasoning=summary.describe())
            yield frame(delta, extension={"step": summary.model_dump()})
        try:
            result = episode.result()
        except Refusal as refusal:  # the 200 is already sent: the error goes in the stream (as vLLM does)
            if refusal.reason is not None:
                service.metrics.reject(refusal.status, refusal.reason)
            yield f"data: {bytes(refusal.response().body).decode()}\n\n"
        else:
            ending = AgentExtension.from_result(result, include_steps=False)
            yield frame(DeltaMessage(), _finish(result), ending.model_dump(exclude={"steps", "step"}))
            if include_usage:
                usage_chunk = ChatCompletionChunk(
                    id=chunk_id, object="chat.completion.chunk", created=created, model=model, choices=[]
                )
                usage_chunk.usage = _usage(result)
                yield f"data: {usage_chunk.model_dump_json(exclude_unset=True)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not episode.done():
            episode.cancel()  # the client went away or the response was torn down
        episode.add_done_callback(_retrieve)
        ticket.release()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background episode's outcome as seen (no 'exception never retrieved' noise)."""
    if not task.cancelled():
        task.exception()


def _finish(result: Result) -> str:
    return "stop" if result.status == "answered" else "length"


def _usage(result: Result) -> UsageInfo:
    u = result.usage
    return UsageInfo(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
    )


async def list_models(request: Request) -> Response:
    service = _service(request)
    cards = [ModelCard(id=service.config.model_name, owned_by="regrpo", root=service.agent.policy.model_name)]
    if service.registry is not None and (live := service.registry.live()) is not None:
        cards.append(
            ModelCard(
                id=live,
                owned_by="regrpo",
                root=live,  # the version, not its folder: a listing must not show the server's file system
                parent=service.config.model_name,
            )
        )
    return JSONResponse(ModelList(data=cards).model_dump())


async def feedback(request: Request) -> Response:
    service = _service(request)
    body: FeedbackRequest = await service.parse(request, FeedbackRequest)
    if body.reward is None and body.answer is None:
        raise Refusal(400, "feedback needs a reward, a reference answer, or both", param="reward")
    store = service.agent.store

    def record_feedback() -> tuple[Any, Any]:  # store reads and writes run off the event loop
        episode = store.get_header(body.trace_id)
        return episode, service.agent.feedback(body.trace_id, reward=body.reward, answer=body.answer)

    try:
        episode, record = await asyncio.to_thread(record_feedback)
    except TraceNotFoundError:
        raise Refusal(404, f"no episode with trace id {body.trace_id!r}", param="trace_id") from None
    except InputError as exc:
        raise Refusal(400, str(exc)) from None
    except TraceStoreError as exc:
        raise Refusal(
            503,
            f"the trace store is unavailable: {exc}",
            retry_after=service.config.retry_after_s,
            reason="store",
        ) from None
    out = FeedbackResponse(
        trace_id=body.trace_id,
        reward=record.reward,
        answer=record.answer,
        created_at=record.created_at,
        episode_answer=episode.answer,
    )
    return JSONResponse(out.model_dump())


async def list_adapters(request: Request) -> Response:
    service = _service(request)
    registry = service.need_registry()
    live = registry.live()
    data = [AdapterInfo.from_meta(meta, live) for meta in registry.list()]
    listing = AdapterList(live=live, active=service.agent.policy.active_adapter, data=data)
    return JSONResponse(listing.model_dump())


async def promote_adapter(request: Request) -> Response:
    service = _service(request)
    registry = service.need_registry()
    body: PromoteRequest = await service.parse(request, PromoteRequest)
    async with service.admin_lock:
        try:
            registry.get(body.version)
        except AdapterError as exc:
            raise Refusal(404, str(exc), param="version") from None
        try:
            await asyncio.to_thread(service.activate, body.version)
        except AdapterError as exc:
            raise Refusal(400, f"cannot load adapter {body.version}: {exc}", param="version") from None
        previous = registry.live()
        registry.promote(body.version)
        service.unload_stale({body.version, previous})
        return JSONResponse(service.adapter_state().model_dump())


async def rollback_adapter(request: Request) -> Response:
    service = _service(request)
    registry = service.need_registry()
    async with service.admin_lock:
        history, leaving = registry.history(), registry.live()
        target = history[-1] if history else None
        try:
            await asyncio.to_thread(service.activate, target)
        except AdapterError as exc:
            raise Refusal(400, f"cannot roll back to {target}: {exc}") from None
        registry.rollback()
        # ``leaving`` stays loaded, so promoting it again after a mistaken rollback is instant
        service.unload_stale({target, leaving, *registry.history()[-1:]})
        return JSONResponse(service.adapter_state().model_dump())


async def healthz(request: Request) -> Response:
    service = _service(request)
    gate = service.gate
    body = {
        "status": "shutting_down" if gate.closed else "ok",
        "model": service.config.model_name,
        "adapter": service.agent.policy.active_adapter,
        "running": gate.running,
        "queued": gate.waiting,
        **service.config.extra,
    }
    if gate.closed:
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(service.config.retry_after_s)})
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.render(), media_type=CONTENT_TYPE)


# -- errors, auth, accounting ------------------------------------------------------------------------------


async def _on_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    if exc.reason is not None:
        _service(request).metrics.reject(exc.status, exc.reason)
    return exc.response()


async def _on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidBody)
    return validation_error_response(exc.error, max_items=exc.max_items)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Not Found" if exc.status_code == 404 else str(exc.detail)
    response = error_response(exc.status_code, message, ERROR_TYPES.get(exc.status_code, "Error"))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _on_bug(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; see the server log", "InternalServerError")


class _Guard:
    """Outermost ASGI layer: API-key check and request metrics (route, status, latency, in flight)."""

    def __init__(self, app: ASGIApp, service: AgentService) -> None:
        self.app, self.service = app, service
        self.keys = [key.encode() for key in service.config.api_keys]
        self.admin_keys = [key.encode() for key in service.config.admin_keys]

    def authorized(self, scope: Scope) -> bool:
        # admin keys open every route; with admin keys set, the API keys no longer open the admin routes
        if scope["path"] == "/healthz":
            return True
        if self.admin_keys and scope["path"] in _ADMIN_ROUTES:
            keys = self.admin_keys
        elif not self.keys:
            return True  # no API keys: open (loopback use), admin routes aside
        else:
            keys = self.keys + self.admin_keys
        return key_matches(bearer_token(scope), keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.service.metrics
        route = scope["path"] if scope["path"] in _ROUTES else "other"
        method = scope["method"] if scope["method"] in ("GET", "POST") else "other"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            if self.authorized(scope):
                await self.app(scope, receive, send_status)
            else:
                response = error_response(401, "Incorrect or missing API key", "AuthenticationError")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send_status)
        finally:
            m.in_flight.dec()
            m.requests.labels(route, method, str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - started)


# -- building and running --------------------------------------------------------------------------------


def build_agent_app(
    agent: Agent,
    config: ServerConfig | None = None,
    *,
    registry: AdapterRegistry | None = None,
    image_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The ASGI app of ``regrpo serve`` for ``agent``.

    Args:
        agent: The agent every request runs (shared; episodes are independent).
        config: Limits and switches (default: :class:`ServerConfig()`).
        registry: Adapter registry for the admin routes (default: one at ``config.registry_dir``, if set).
            At start-up the registry's live adapter is loaded and activated in the agent's policy.
        image_transport: httpx transport for http(s) image fetches (tests; default: the network).
    """
    config = config or ServerConfig()
    if registry is None and config.registry_dir is not None:
        registry = AdapterRegistry(config.registry_dir)
    service = AgentService(agent, config, registry, image_transport)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if registry is not None and (live := registry.live()) is not None:
            await asyncio.to_thread(service.activate, live)
        yield
        service.gate.closed = True  # requests still arriving on open connections get 503

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/v1/adapters", list_adapters, methods=["GET"]),
        Route("/v1/adapters/promote", promote_adapter, methods=["POST"]),
        Route("/v1/adapters/rollback", rollback_adapter, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            Refusal: _on_refusal,
            InvalidBody: _on_invalid,
            HTTPException: _on_http_exception,
            Exception: _on_bug,
        },
    )
    app.state.service = service
    app.add_middleware(_GuardMiddleware, service=service)
    return app


class _GuardMiddleware(_Guard):
    """``_Guard`` in the form ``Starlette.add_middleware`` builds (``cls(app, **options)``)."""

    def __init__(self, app: ASGIApp, service: AgentService) -> None:
        super().__init__(app, service)


def _warn_if_open(config: ServerConfig, host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not config.api_keys and not loopback:
        logger.warning("regrpo serve on %s without API keys: anyone who can reach it can run the agent", host)


def run_agent_server(
    agent: Agent,
    config: ServerConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    registry: AdapterRegistry | None = None,
    log_level: str = "info",
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve ``agent`` with uvicorn until interrupted (``regrpo serve``), under connection ``limits``."""
    config = config or ServerConfig()
    _warn_if_open(config, host)
    app = build_agent_app(agent, config, registry=registry)
    uvicorn.Server(uvicorn_config(app, host, port, limits or ConnectionLimits(), log_level=log_level)).run()
