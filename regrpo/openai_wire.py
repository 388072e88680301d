"""The OpenAI chat wire format, declared once for both servers and the client (``OpenAIPolicy``).

It sits below the agent layer (it imports nothing from ``regrpo``), so the client in
``regrpo.agent.openai_policy`` reads responses with it without importing ``regrpo.server``; the
servers' error helpers are in :mod:`regrpo.server.responses`.

One pydantic model per wire object, fields in the OpenAI API reference's order, vLLM's extensions
marked ``# vLLM extension``. Shapes follow vLLM 0.33.0 as written down in ``shared/VLLM_CONTRACT.md``
(§1 error envelope, §2 LoRA bodies, §2.5 model cards, §4 chat), which was checked against vLLM's
source, not a live server. Both ``regrpo serve`` (the agent endpoint) and ``regrpo serve-model`` (the
model server) parse requests with these classes, and ``OpenAIPolicy`` reads responses with them.

Decisions:

* Request models allow unknown fields (``extra="allow"``), as vLLM's ``OpenAIBaseModel`` does: a client
  sending a parameter we do not know is not an error. The LoRA bodies ignore unknown fields, as
  vLLM's plain pydantic models do (this is how ``load_inplace`` degrades on old servers).
* Responses are dumped with every field, nulls included (vLLM returns ``JSONResponse(model_dump())``);
  stream chunks are dumped with ``exclude_unset=True`` (vLLM does that for SSE frames).
* A body that fails validation is a 400 whose ``param`` is the dotted location (``body.lora_path``)
  and whose message lists the errors without the offending input or any traceback (vLLM's
  ``exception_handling/handlers/validation.py``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "ContentPart",
    "DeltaMessage",
    "ErrorInfo",
    "ErrorResponse",
    "ImageUrl",
    "ImageUrlContentPart",
    "LoadLoRAAdapterRequest",
    "ModelCard",
    "ModelList",
    "ModelPermission",
    "ResponseMessage",
    "StreamOptions",
    "TextContentPart",
    "TokenLogprob",
    "TokenizeRequest",
    "TokenizeResponse",
    "TopLogprob",
    "UnloadLoRAAdapterRequest",
    "UsageInfo",
    "random_id",
]


def random_id(prefix: str) -> str:
    """An id like vLLM's: ``chatcmpl-<32 hex>``, ``modelperm-<32 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


class _Request(BaseModel):
    """Base of request bodies: unknown fields are accepted (vLLM's ``OpenAIBaseModel``)."""

    model_config = ConfigDict(extra="allow")


# -- chat request ---------------------------------------------------------------------------------


class TextContentPart(BaseModel):
    """``{"type": "text", "text": ...}``."""

    type: Literal["text"] = "text"
    text: str


class ImageUrl(BaseModel):
    """The ``image_url`` object of an image part: an ``http(s)://``, ``data:`` or ``file://`` URL."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlContentPart(BaseModel):
    """``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}``."""

    type: Literal["image_url"] = "image_url"
    image_url: ImageUrl
    uuid: str | None = None  # vLLM extension: caller-provided media cache key


ContentPart = Annotated[TextContentPart | ImageUrlContentPart, Field(discriminator="type")]


class ChatMessage(_Request):
    """One message of a chat request. ``content`` is a string, a list of parts, or null."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text: the string content, or its text parts joined with newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if isinstance(part, TextContentPart))

    def image_urls(self) -> list[str]:
        """URLs of the message's image parts, in order."""
        if not isinstance(self.content, list):
            return []
        return [part.image_url.url for part in self.content if isinstance(part, ImageUrlContentPart)]


class StreamOptions(BaseModel):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False  # vLLM extension


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions`` body (the fields regrpo uses, plus vLLM's common extras)."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)  # deprecated by OpenAI, still honoured
    n: int = Field(default=1, ge=1)
    presence_penalty: float | None = 0.0
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # vLLM: torch.long bounds
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: int | None = 0
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None
    # vLLM extensions
    top_k: int | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None
    return_token_ids: bool | None = None
    return_tokens_as_token_ids: bool | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    request_id: str | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> ChatCompletionRequest:
        # The same rules and messages as vLLM's ChatCompletionRequest validators (contract §4.3, §4.5).
        if self.top_logprobs is not None and self.top_logprobs != 0 and not self.logprobs:
            raise ValueError("when using `top_logprobs`, `logprobs` must be set to true.")
        if self.top_logprobs is not None and self.top_logprobs < -1:
            raise ValueError("`top_logprobs` must be a positive value or -1.")
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        if self.prompt_logprobs is not None and self.stream:
            raise ValueError("`prompt_logprobs` are not available when `stream=True`.")
        return self

    def stop_strings(self) -> list[str]:
        """``stop`` as a list (OpenAI allows one string or a list)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def completion_limit(self) -> int | None:
        """The requested completion length: ``max_completion_tokens``, else ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


# -- chat response --------------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(BaseModel):
    """Log-prob of one generated token and, when asked for, its top alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class ResponseMessage(BaseModel):
    """The assistant message of a choice (vLLM 0.33 shape; ``tool_calls`` omitted when empty)."""

    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None  # vLLM extension

    @model_serializer(mode="wrap")
    def _omit_empty_tool_calls(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not data.get("tool_calls"):
            data.pop("tool_calls", None)
        return data


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None  # vLLM extension: the matched stop string or token id
    token_ids: list[int] | None = None  # vLLM extension (return_token_ids)
    routed_experts: Any = None  # vLLM extension
    weight_versions: Any = None  # vLLM extension (0.33)


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    # vLLM extensions
    prompt_logprobs: list[dict[str, Any] | None] | None = None
    prompt_token_ids: list[int] | None = None
    prompt_text: str | None = None
    kv_transfer_params: dict[str, Any] | None = None
    ec_transfer_params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


# -- streaming ------------------------------------------------------------------------------------


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None  # vLLM extension
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # vLLM extension
    token_ids: list[int] | None = None  # vLLM extension (return_token_ids)


class ChatCompletionChunk(BaseModel):
    """One SSE frame of a streamed chat completion (dump with ``exclude_unset=True``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None
    prompt_token_ids: list[int] | None = None  # vLLM extension (first chunk, return_token_ids)


# -- models ---------------------------------------------------------------------------------------


class ModelPermission(BaseModel):
    id: str = Field(default_factory=lambda: random_id("modelperm"))
    object: Literal["model_permission"] = "model_permission"
    created: int = Field(default_factory=lambda: int(time.time()))
    allow_create_engine: bool = False
    allow_sampling: bool = True
    allow_logprobs: bool = True
    allow_search_indices: bool = False
    allow_view: bool = True
    allow_fine_tuning: bool = False
    organization: str = "*"
    group: str | None = None
    is_blocking: bool = False


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``: a base model, or a LoRA adapter (``root`` = its path)."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "vllm"
    root: str | None = None  # vLLM extension: model path, or the adapter's lora_path as given
    parent: str | None = None  # vLLM extension: the base model an adapter belongs to
    max_model_len: int | None = None  # vLLM extension: null on adapter cards
    permission: list[ModelPermission] = Field(default_factory=lambda: [ModelPermission()])


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


# -- LoRA and tokenizer (vLLM extensions) ---------------------------------------------------------


class LoadLoRAAdapterRequest(BaseModel):
    """``POST /v1/load_lora_adapter`` body (vLLM extension; unknown fields ignored)."""

    lora_name: str
    lora_path: str
    load_inplace: bool = False  # vLLM >= 0.15
    is_3d_lora_weight: bool = False  # vLLM >= 0.28, MoE only; accepted and ignored here


class UnloadLoRAAdapterRequest(BaseModel):
    """``POST /v1/unload_lora_adapter`` body (vLLM extension; ``lora_int_id`` accepted and ignored)."""

    lora_name: str
    lora_int_id: int | None = None


class TokenizeRequest(_Request):
    """``POST /tokenize`` body (vLLM's completion form; not part of the checked contract)."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


# -- errors ---------------------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """The OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}``; status == code."""

    error: ErrorInfo
