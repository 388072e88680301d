"""``regrpo serve-model``: an OpenAI-compatible model server over a local engine, speaking vLLM's dialect.

The engine is a ``LocalPolicy`` (text) or a ``VisionPolicy`` (an image-text-to-text model: requests
may then carry ``image_url`` parts, as vLLM's multimodal chat takes them; :mod:`regrpo.server.chat_parts`).

It is the embedded model server where no vLLM can run (CPU machines, CI) and the contract double the
``OpenAIPolicy`` tests talk to. It implements these parts of ``shared/VLLM_CONTRACT.md`` (vLLM 0.33.0),
which was **checked against vLLM's source, not against a live vLLM** (vLLM needs a CUDA GPU):

* §1: ``--api-key`` Bearer check on every ``/v1`` route (401 ``{"error": "Unauthorized"}``; ``/health``,
  ``/version`` and ``/tokenize`` open); ``Content-Type: application/json`` required on JSON POSTs; the
  ``{"error": {message, type, param, code}}`` envelope; pydantic errors as 400 "Bad Request" with a
  dotted ``param``; error text sanitised of paths; unknown routes as FastAPI's ``{"detail": ...}``.
* §2.2–2.5: ``POST /v1/load_lora_adapter`` (steps 1–7, the disk checks of §7.3 in order, plain-text 200
  without a Content-Type, ``load_inplace`` keeping the int id, a failed in-place load leaving the old
  adapter active), ``POST /v1/unload_lora_adapter``, adapter selection by ``model``, 404 with
  ``param: "model"`` for unknown names, ``GET /v1/models`` with ``root``/``parent``/``max_model_len``.
* §4: ``POST /v1/chat/completions`` with ``n``, ``temperature``, ``seed``, ``max_tokens`` /
  ``max_completion_tokens``, ``stop`` (+ ``include_stop_str_in_output``, ``stop_reason``), ``logprobs``
  / ``top_logprobs`` (cap 20), ``return_token_ids``, ``return_tokens_as_token_ids``, ``stream`` (+
  ``stream_options.include_usage``); the §4.3 combination checks; the 0.33 response shape.
* ``GET /health``, ``GET /version`` (answers ``0.33.0``: the contract version this server implements,
  so ``OpenAIPolicy`` picks in-place hot-swap), and vLLM's ``POST /tokenize`` (not in the checked
  contract: shape from vLLM's public API, unverified) so clients can count tokens exactly.

Not implemented, each answered with a 400 naming the parameter rather than silently ignored:
``top_p`` ≠ 1, ``top_k``, penalties, ``logit_bias``, ``stop_token_ids``, ``prompt_logprobs``,
tool calling (as vLLM without ``--tool-call-parser``), and image parts for a text-only model.
Not emulated: dev-mode routes (sleep, pause, weight transfer), LoRA resolvers, vLLM's bugs B1–B3.

Decisions:

* Log-probs are ``LocalPolicy``'s: raw logits before temperature, like vLLM's default
  ``--logprobs-mode raw_logprobs``. ``top_logprobs`` come from one extra forward pass over prompt +
  completion (``LocalPolicy.generate`` returns only the sampled token's log-prob), ordered as vLLM
  orders them: the sampled token first, then by rank.
* Concurrent requests share forward passes: each worker thread (``anyio.to_thread``) calls
  ``LocalPolicy.generate`` naming its adapter, and the policy coalesces the calls for one adapter and
  one temperature into a batch (calls for another adapter wait for the next batch, a seeded call runs
  alone), so a completion is always the named adapter's. The server's lock guards only which
  adapters are resident; a request whose adapter another request's load evicted before it ran reads
  it back once more. The server owns its policy: do not share it with an agent.
* An adapter is loaded into peft under an internal name (``lora_<app>_<int_id>_<k>``), so an in-place
  reload loads the new weights next to the old ones and drops the old ones only on success.
* ``max_loras`` bounds the adapters resident in the model; past it the least recently used one is
  dropped from memory and re-read from its path on its next request (vLLM's CPU LRU cache does the
  same; its registration, like vLLM's, stays). ``unload`` frees memory here, where vLLM keeps the
  tensors (B4): no client can tell the difference.
* Without ``max_tokens`` a request may fill the context (vLLM's default); prompt + completion above
  ``max_model_len`` is a 400.
* ``seed`` seeds a forked torch RNG, so a seeded request neither reads nor disturbs the global one.
* ``stream`` sends the frames once generation has finished (``LocalPolicy`` does not stream tokens):
  the frame sequence is vLLM's, the latency is not.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from regrpo.agent.image_parts import takes_images
from regrpo.errors import AdapterError, ModelError
from regrpo.openai_wire import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaMessage,
    LoadLoRAAdapterRequest,
    ModelCard,
    ModelList,
    ResponseMessage,
    TokenizeRequest,
    TokenizeResponse,
    TokenLogprob,
    TopLogprob,
    UnloadLoRAAdapterRequest,
    UsageInfo,
    random_id,
)
from regrpo.server.chat_parts import fetch_images, image_chat, text_chat
from regrpo.server.config import ServerConfig
from regrpo.server.image_urls import EncodedImage, ImageResolver, ImageURLError
from regrpo.server.limits import ConnectionLimits, uvicorn_config
from regrpo.server.lora_slots import Lora, LoraSlots
from regrpo.server.model_http import BearerAuth, handled, http_error, parse_body, shown
from regrpo.server.responses import MAX_ERROR_ITEMS, MAX_JSON_VALUES, RequestError
from regrpo.traces.schema import Completion

T = TypeVar("T", bound=BaseModel)

if TYPE_CHECKING:
    from regrpo.agent.local import LocalPolicy
    from regrpo.agent.vision import VisionPolicy

__all__ = ["CONTRACT_VERSION", "MAX_LOGPROBS", "build_model_app", "run_model_server", "running_server"]

CONTRACT_VERSION = "0.33.0"
"""The vLLM release whose serving contract this server implements (answered on ``GET /version``)."""
MAX_LOGPROBS = 20
"""vLLM's default ``--max-logprobs``: the largest ``top_logprobs`` a request may ask for."""


@dataclass
class _Generated:
    prompt_ids: list[int]
    completions: list[Completion]
    top: list[list[list[tuple[int, float]]]] = field(default_factory=list)
    """Per choice, per token: the top ``k`` ``(token id, log-prob)`` pairs, best first."""


class _ModelService:
    """The server's state and handlers; one per app."""

    def __init__(
        self,
        policy: LocalPolicy | VisionPolicy,
        *,
        served_model_name: str | Sequence[str] | None,
        max_loras: int,
        max_lora_rank: int,
        max_model_len: int | None,
        max_n: int,
        max_body_bytes: int,
        max_json_values: int,
        max_error_items: int,
        lora_roots: Sequence[str | Path],
        images: ServerConfig,
    ) -> None:
        limits = {
            "max_n": max_n,
            "max_body_bytes": max_body_bytes,
            "max_json_values": max_json_values,
            "max_error_items": max_error_items,
        }
        if min(limits.values()) < 1:
            raise ValueError(f"each limit must be at least 1, got {limits}")
        self.policy = policy
        self.images = ImageResolver(images) if takes_images(policy) else None
        names = [served_model_name] if isinstance(served_model_name, str) else served_model_name
        self.base_names = list(names or [policy.model_name])
        self.slots = LoraSlots(policy, max_loras, max_lora_rank, lora_roots)
        self.max_n, self.max_body_bytes, self.max_json_values = max_n, max_body_bytes, max_json_values
        self.max_error_items = max_error_items
        self.max_model_len = max_model_len or int(
            getattr(policy.model.config.get_text_config(), "max_position_embeddings", 2048)
        )

    # -- routes -----------------------------------------------------------------------------------

    async def _parse(self, request: Request, model: type[T]) -> T:
        return await parse_body(
            request, model, self.max_body_bytes, self.max_json_values, self.max_error_items
        )

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": CONTRACT_VERSION})

    async def models(self, request: Request) -> Response:
        cards = [
            ModelCard(id=name, root=self.policy.model_name, max_model_len=self.max_model_len)
            for name in self.base_names
        ]
        cards += [
            ModelCard(id=lora.name, root=lora.path, parent=self.base_names[0])
            for lora in self.slots.registered.values()
        ]
        return JSONResponse(ModelList(data=cards).model_dump())

    async def tokenize(self, request: Request) -> Response:
        body = await self._parse(request, TokenizeRequest)
        if body.model:
            self._resolve(body.model)

        def tokenized() -> tuple[list[int], list[str] | None]:  # off the event loop: prompts can be long
            ids = list(
                self.policy.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
            )
            return ids, (self.policy.tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None)

        tokens, strs = await anyio.to_thread.run_sync(tokenized)
        reply = TokenizeResponse(
            count=len(tokens), max_model_len=self.max_model_len, tokens=tokens, token_strs=strs
        )
        return JSONResponse(reply.model_dump())

    async def chat(self, request: Request) -> Response:
        body = await self._parse(request, ChatCompletionRequest)
        lora = self._resolve(body.model)
        self._check_supported(body)
        images = None
        if self.images is not None:
            try:
                images = await fetch_images(body, self.images)
            except ImageURLError as exc:
                raise RequestError(400, str(exc), "BadRequestError", "messages") from exc
        generated = await anyio.to_thread.run_sync(self._generate, body, lora, images)
        model = body.model or self.base_names[0]
        if body.stream:
            return StreamingResponse(self._stream(body, model, generated), media_type="text/event-stream")
        return JSONResponse(self._response(body, model, generated).model_dump())

    async def load_lora(self, request: Request) -> Response:
        body = await self._parse(request, LoadLoRAAdapterRequest)
        name, path = body.lora_name, body.lora_path
        if not name or not path:
            raise RequestError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.base_names:
            raise RequestError(
                400, f"The lora adapter '{name}' conflicts with a served base model.", "InvalidUserInput"
            )
        async with self.slots.name_locks.setdefault(name, anyio.Lock()):  # vLLM serialises loads per name
            old = self.slots.registered.get(name)
            if old is not None and not body.load_inplace:
                raise RequestError(
                    400,
                    f"The lora adapter '{name}' has already been loaded. If you want to load the adapter "
                    "in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            lora = self.slots.new(name, path, old)
            await anyio.to_thread.run_sync(self.slots.load, lora, old)
            self.slots.registered[name] = lora
        return Response(f"Success: LoRA adapter '{name}' added successfully.", status_code=200)

    async def unload_lora(self, request: Request) -> Response:
        body = await self._parse(request, UnloadLoRAAdapterRequest)
        name = body.lora_name
        if not name:
            raise RequestError(
                400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput"
            )
        lora = self.slots.registered.pop(name, None)
        if lora is None:
            raise RequestError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        await anyio.to_thread.run_sync(self.slots.evict, lora.peft_name)
        return Response(f"Success: LoRA adapter '{name}' removed successfully.", status_code=200)

    def preload(self, name: str, path: str) -> None:
        """Serve the adapter at ``path`` as ``name`` from start-up (vLLM's ``--lora-modules name=path``)."""
        if name in self.base_names:
            raise AdapterError(f"adapter name {name!r} is the base model's served name; pick another")
        lora = self.slots.new(name, path, None, trusted=True)
        try:
            self.slots.load(lora, None)
        except RequestError as exc:
            raise AdapterError(f"cannot serve adapter {name!r} from {path!r}: {exc.message}") from exc
        self.slots.registered[name] = lora

    # -- request checks ---------------------------------------------------------------------------

    def _resolve(self, model: str | None) -> Lora | None:
        """The adapter a request's ``model`` names (``None`` = base), or a 404 (contract §2.4)."""
        if not model or model in self.base_names:
            return None
        if model in self.slots.registered:
            return self.slots.registered[model]
        raise RequestError(
            404,
            f"The model `{shown(model)}` does not exist. Valid aliases: {', '.join(self.base_names)}.",
            "NotFoundError",
            "model",
        )

    def _check_supported(self, body: ChatCompletionRequest) -> None:
        if body.n > self.max_n:
            raise RequestError(
                400,
                f"n={body.n} is over this server's limit of {self.max_n} (--max-n).",
                "BadRequestError",
                "n",
            )
        top = body.top_logprobs or 0
        if body.logprobs and (top > MAX_LOGPROBS or top == -1):
            raise RequestError(
                400,
                f"Requested sample logprobs of {top}, which is greater than max allowed: {MAX_LOGPROBS}",
                "BadRequestError",
            )
        if body.tools and body.tool_choice in (None, "auto"):
            raise RequestError(
                400,
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
                "BadRequestError",
            )
        if body.tool_choice not in (None, "none", "auto"):
            raise RequestError(
                400, "tool_choice other than 'none' requires --tool-call-parser to be set", "BadRequestError"
            )
        unsupported = {
            "top_p": body.top_p not in (None, 1.0),
            "top_k": body.top_k not in (None, 0, -1),
            "frequency_penalty": bool(body.frequency_penalty),
            "presence_penalty": bool(body.presence_penalty),
            "logit_bias": bool(body.logit_bias),
            "stop_token_ids": bool(body.stop_token_ids),
            "prompt_logprobs": body.prompt_logprobs is not None,
            "skip_special_tokens": not body.skip_special_tokens,
        }
        for param, bad in unsupported.items():
            if bad:
                raise RequestError(
                    400,
                    f"`{param}` is not supported by regrpo serve-model; leave it unset.",
                    "BadRequestError",
                    param,
                )
        if self.images is None and any(message.image_urls() for message in body.messages):
            raise RequestError(
                400,
                f"{self.policy.model_name} is a text-only model: image_url parts are not accepted.",
                "BadRequestError",
                "messages",
            )

    # -- engine work (worker thread) --------------------------------------------------------------

    def _generate(
        self, body: ChatCompletionRequest, lora: Lora | None, images: list[list[EncodedImage]] | None
    ) -> _Generated:
        chat = image_chat(body, images) if images is not None else text_chat(body)
        prompt = self._prompt_ids(chat)
        limit = body.completion_limit() or self.max_model_len - len(prompt)
        if len(prompt) + limit > self.max_model_len or limit < 1:
            raise RequestError(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {len(prompt) + limit} tokens ({len(prompt)} in the messages, {limit} in "
                "the completion). Please reduce the length of the messages or completion.",
                "BadRequestError",
            )
        adapter = lora.peft_name if lora is not None else None
        temperature = 1.0 if body.temperature is None else body.temperature
        try:
            for attempt in range(2):
                self.slots.keep_resident(lora)
                try:
                    # concurrent requests coalesce into batches, one adapter per batch (LocalPolicy)
                    completions = self.policy.generate(
                        chat,
                        n=body.n,
                        temperature=temperature,
                        max_new_tokens=limit,
                        stop=body.stop_strings(),
                        adapter=adapter,
                        seed=body.seed,
                    )
                    break
                except AdapterError:
                    if attempt:  # evicted again by other requests' adapters before this one ran
                        raise
            generated = _Generated(prompt, completions)
            if body.logprobs and body.top_logprobs:
                generated.top = [
                    self._top_logprobs(prompt, chat, c.token_ids, body.top_logprobs, adapter)
                    for c in completions
                ]
        except (ModelError, AdapterError) as exc:
            raise RequestError(500, str(exc), "InternalServerError") from exc
        return generated

    def _prompt_ids(self, chat: list[dict[str, Any]]) -> list[int]:
        """The prompt's token ids as the engine feeds them (an image's tokens included)."""
        from regrpo.agent.local import LocalPolicy

        if isinstance(self.policy, LocalPolicy):
            return self.policy.encode_chat(chat)
        return [int(i) for i in self.policy.encode(chat)["input_ids"][0].tolist()]

    def _top_logprobs(
        self, prompt: list[int], chat: list[dict[str, Any]], tokens: list[int], k: int, adapter: str | None
    ) -> list[list[tuple[int, float]]]:
        from regrpo.agent.local import LocalPolicy

        if isinstance(self.policy, LocalPolicy):
            return self.policy.top_logprobs(prompt, tokens, k, adapter=adapter)
        return self.policy.top_logprobs(chat, tokens, k, adapter=adapter)

    # -- responses --------------------------------------------------------------------------------

    def _choice_parts(
        self, body: ChatCompletionRequest, index: int, generated: _Generated
    ) -> tuple[str, str | None, ChoiceLogprobs | None]:
        """``(text, stop_reason, logprobs)`` of one choice, as vLLM would return them."""
        completion = generated.completions[index]
        text, stop_reason = completion.text, None
        matched = [s for s in body.stop_strings() if s and s in text]
        if completion.finish_reason == "stop" and matched:
            stop_reason = min(matched, key=text.find)  # the first stop string in the text ends it
            end = text.find(stop_reason) + (len(stop_reason) if body.include_stop_str_in_output else 0)
            text = text[:end]
        logprobs = None
        if body.logprobs:
            top = generated.top[index] if generated.top else [[] for _ in completion.token_ids]
            entries = []
            for token_id, logprob, alternatives in zip(
                completion.token_ids, completion.logprobs, top, strict=True
            ):
                token = self._token_text(token_id, body)
                ranked = [(token_id, logprob)] + [(t, lp) for t, lp in alternatives if t != token_id]
                entries.append(
                    TokenLogprob(
                        token=token,
                        logprob=max(logprob, -9999.0),
                        bytes=list(token.encode()),
                        top_logprobs=[
                            TopLogprob(
                                token=(t := self._token_text(i, body)),
                                logprob=max(lp, -9999.0),
                                bytes=list(t.encode()),
                            )
                            for i, lp in ranked[: body.top_logprobs or 0]
                        ],
                    )
                )
            logprobs = ChoiceLogprobs(content=entries)
        return text, stop_reason, logprobs

    def _token_text(self, token_id: int, body: ChatCompletionRequest) -> str:
        if body.return_tokens_as_token_ids:
            return f"token_id:{token_id}"
        return str(self.policy.tokenizer.decode([token_id]))

    def _response(
        self, body: ChatCompletionRequest, model: str, generated: _Generated
    ) -> ChatCompletionResponse:
        choices = []
        for index, completion in enumerate(generated.completions):
            text, stop_reason, logprobs = self._choice_parts(body, index, generated)
            choices.append(
                Choice(
                    index=index,
                    message=ResponseMessage(content=text),
                    logprobs=logprobs,
                    finish_reason=completion.finish_reason,
                    stop_reason=stop_reason,
                    token_ids=list(completion.token_ids) if body.return_token_ids else None,
                )
            )
        return ChatCompletionResponse(
            model=model,
            choices=choices,
            usage=_usage(generated),
            prompt_token_ids=generated.prompt_ids if body.return_token_ids else None,
        )

    async def _stream(
        self, body: ChatCompletionRequest, model: str, generated: _Generated
    ) -> AsyncIterator[str]:
        """The SSE frames of contract §4.5: role chunk, content chunk (with finish), usage, ``[DONE]``."""
        chunk_id, created = random_id("chatcmpl"), int(time.time())

        def frame(choices: list[ChunkChoice], **extra: Any) -> str:
            chunk = ChatCompletionChunk(
                id=chunk_id,
                object="chat.completion.chunk",
                created=created,
                model=model,
                choices=choices,
                **extra,
            )
            return f"data: {json.dumps(chunk.model_dump(exclude_unset=True))}\n\n"

        for index in range(len(generated.completions)):
            first = ChunkChoice(
                index=index,
                delta=DeltaMessage(role="assistant", content=""),
                logprobs=None,
                finish_reason=None,
            )
            extra = {"prompt_token_ids": generated.prompt_ids} if body.return_token_ids and index == 0 else {}
            yield frame([first], **extra)
        for index, completion in enumerate(generated.completions):
            text, stop_reason, logprobs = self._choice_parts(body, index, generated)
            choice = ChunkChoice(
                index=index,
                delta=DeltaMessage(content=text),
                logprobs=logprobs,
                finish_reason=completion.finish_reason,
                stop_reason=stop_reason,
            )
            if body.return_token_ids:
                choice.token_ids = list(completion.token_ids)
            yield frame([choice])
        if body.stream_options is not None and body.stream_options.include_usage:
            yield frame([], usage=_usage(generated))
        yield "data: [DONE]\n\n"


def _usage(generated: _Generated) -> UsageInfo:
    completion_tokens = sum(len(c.token_ids) for c in generated.completions)
    prompt_tokens = len(generated.prompt_ids)
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def build_model_app(
    policy: LocalPolicy | VisionPolicy,
    *,
    served_model_name: str | Sequence[str] | None = None,
    api_key: str | None = None,
    max_loras: int = 4,
    max_lora_rank: int = 64,
    max_model_len: int | None = None,
    lora_modules: Mapping[str, str] | None = None,
    max_n: int = 16,
    max_body_bytes: int = 20 * 1024 * 1024,
    max_json_values: int = MAX_JSON_VALUES,
    max_error_items: int = MAX_ERROR_ITEMS,
    lora_roots: Sequence[str | Path] = (),
    images: ServerConfig | None = None,
) -> Starlette:
    """An OpenAI/vLLM-compatible Starlette app serving ``policy`` (see the module docstring).

    Args:
        policy: The engine; the app owns it from now on (it switches its adapters per request).
        served_model_name: Name(s) clients use for the base model (default ``policy.model_name``).
        api_key: When set, every ``/v1`` route needs ``Authorization: Bearer <api_key>``.
        max_loras: Adapters resident in memory at once (least recently used ones are re-read on use).
        max_lora_rank: Largest adapter rank accepted, one of vLLM's values (1, 8, 16, ..., 512).
        max_model_len: Context length (default: the model's ``max_position_embeddings``).
        lora_modules: Adapters served from start-up, ``{name: folder}`` (vLLM's ``--lora-modules``);
            ``regrpo serve-model`` passes the shipped warm start here as ``warm-start``. A folder that
            cannot be loaded is an :class:`~regrpo.errors.AdapterError` now, not a 500 later.
        max_n: Most samples one request may ask for (``n``); more is a 400 (vLLM has no bound: a
            client asking ``n=64`` would hold the engine for every other request).
        max_body_bytes: Largest request body read; a bigger one is a 413 before it is buffered.
        max_json_values: Most JSON values a body may hold, counted before it is parsed (a 400).
        max_error_items: Most errors a validation 400 lists.
        lora_roots: Folders adapters may be loaded from (``--lora-root``; empty: any local folder,
            as vLLM; :mod:`~regrpo.server.lora_slots`).
        images: For an engine that takes images: where ``image_url`` parts may come from and how
            large they may be (default ``ServerConfig()``: ``data:`` URLs only, its size limits).
    """
    service = _ModelService(
        policy,
        served_model_name=served_model_name,
        max_loras=max_loras,
        max_lora_rank=max_lora_rank,
        max_model_len=max_model_len,
        max_n=max_n,
        max_body_bytes=max_body_bytes,
        max_json_values=max_json_values,
        max_error_items=max_error_items,
        lora_roots=lora_roots,
        images=images or ServerConfig(),
    )
    for name, path in (lora_modules or {}).items():
        service.preload(name, path)
    routes = [
        Route("/health", handled(service.health), methods=["GET"]),
        Route("/version", handled(service.version), methods=["GET"]),
        Route("/tokenize", handled(service.tokenize), methods=["POST"]),
        Route("/v1/models", handled(service.models), methods=["GET"]),
        Route("/v1/chat/completions", handled(service.chat), methods=["POST"]),
        Route("/v1/load_lora_adapter", handled(service.load_lora), methods=["POST"]),
        Route("/v1/unload_lora_adapter", handled(service.unload_lora), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.state.service = service
    return app


def run_model_server(
    policy: LocalPolicy | VisionPolicy,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    limits: ConnectionLimits | None = None,
    **options: Any,
) -> None:
    """Serve ``build_model_app(policy, **options)`` with uvicorn until interrupted, under ``limits``."""
    import uvicorn

    app = build_model_app(policy, **options)
    uvicorn.Server(uvicorn_config(app, host, port, limits or ConnectionLimits(), log_level="info")).run()


@contextlib.contextmanager
def running_server(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` on a real socket in a background thread for the ``with`` block; yields its base URL.

    A thin wrapper over :func:`regrpo.server.background.start_in_thread` (``port=0``: a free port; it
    waits on uvicorn's own start-up event, not a sleep).
    """
    from regrpo.server.background import start_in_thread

    with start_in_thread(app, host, port) as server:
        yield server.url
