"""``OpenAIPolicy``: a :class:`~regrpo.agent.Policy` over an OpenAI-compatible server (vLLM, serve-model).

The agent gets the same ``Completion`` records it gets from ``LocalPolicy``: text, generated token ids,
per-token log-probs, finish reason and prompt length. Each request asks for ``logprobs=true`` and
vLLM's ``return_token_ids`` and ``include_stop_str_in_output`` extensions, so the text keeps the stop
string (as ``LocalPolicy``'s does) and the ids are the sampled ones, not a re-tokenisation. Log-probs
are what the server computes; vLLM's default ``--logprobs-mode raw_logprobs`` matches
``LocalPolicy`` (raw logits, before temperature). The wire format is ``regrpo.openai_wire``.

Decisions:

* HTTP is async (httpx); ``agenerate`` is what the agent loop calls. Each call opens its own
  ``httpx.AsyncClient``: a pooled client is bound to the event loop that created it, and this policy
  is used from several loops (``Agent.run`` in a helper thread, ``run_many``, sync ``generate``).
  The lost keep-alive costs about a millisecond next to a generation.
* Retries (tenacity) only on 429, 503 and connection failures, honouring ``Retry-After``; other
  HTTP errors become a ``ModelError`` (``AdapterError`` for adapter routes) carrying the server's
  message. A read timeout is not retried: the server may still be generating.
* ``count_tokens`` uses, in order: the ``tokenizer`` given (exact), the server's ``POST /tokenize``
  (vLLM and serve-model have it; it is outside the checked contract), else ``ceil(chars / 4)`` with a
  warning. Trace fields that count tokens (``reflection_tokens``, the action split of the
  confidence) equal ``LocalPolicy``'s only in the first two cases. ``count_tokens`` is synchronous
  (the ``Policy`` protocol), so the ``/tokenize`` call blocks the caller's event loop for one round
  trip: never run the model server on the same event loop as an agent using it without a ``tokenizer``.
* Adapters are chosen by the request's ``model`` field. With ``vllm=True`` loading a name that is
  already loaded is a hot swap, following the contract's recommendation (§2.6):
  - *in place* (``GET /version`` ≥ 0.33): ``load_inplace: true`` under the stable name;
  - *versioned* (older, unknown, or a server without ``load_inplace``): load ``<name>-v<k>``, send new
    requests there, and unload the previous version once its in-flight requests finish.
  A reload from the path already loaded is staged into a fresh sibling folder first (copy into a
  temporary folder, then an atomic rename), because vLLM caches by (name, path) and would serve stale
  prefixes (bug B2). Callers should still write each round to a new folder; this is a safety net.
  With ``vllm=False`` the server must already serve the adapter under its name (``--lora-modules``).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from regrpo.agent.image_parts import wire_messages
from regrpo.agent.policy import ChatMessage, as_chat, check_sampling
from regrpo.errors import AdapterError, ModelError, ModelUnreachableError, RegrpoError
from regrpo.openai_wire import (
    ChatCompletionResponse,
    Choice,
)
from regrpo.traces.schema import Completion

__all__ = ["OpenAIPolicy"]

HotSwap = Literal["auto", "inplace", "versioned"]
T = TypeVar("T")

_RETRY_STATUS = (429, 503)
_CONNECTION_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
_BACKOFF_S = (0.25, 8.0)  # first wait and cap of the exponential back-off when there is no Retry-After
_MAX_RETRY_AFTER_S = 60.0


class _Retryable(Exception):
    """A 429/503 or a dropped connection: worth another attempt after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), capped; ``None`` if absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, _Retryable) and exc.retry_after is not None:
        return exc.retry_after
    first, cap = _BACKOFF_S
    return float(min(first * 2 ** (state.attempt_number - 1), cap))


def _error_text(response: httpx.Response) -> str:
    """The server's own error message: the OpenAI envelope, vLLM's 401 body, FastAPI's detail, or raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind = f" ({error['type']})" if error.get("type") else ""
        return f"{error.get('message', '')}{kind}"
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return response.text.strip()


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as pool:  # a notebook or a server: use a private loop
        return pool.submit(asyncio.run, main()).result()


def _parse_version(text: str) -> tuple[int, int]:
    match = re.match(r"\s*v?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _fresh_copy(path: str) -> str:
    """Copy an adapter folder next to itself under a new name: temp folder, then an atomic rename."""
    source = Path(path)
    if not source.is_dir():
        raise AdapterError(
            f"{path!r} was already loaded under this name and is not a local folder to copy: write each "
            "round's adapter to a new folder (a server caches by path and would serve stale prefixes)"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}-", dir=source.parent))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    target = source.parent / f"{source.name}-reload-{staging.name.rsplit('-', 1)[-1]}"
    os.rename(staging, target)
    return str(target)


class OpenAIPolicy:
    """A chat model behind an OpenAI-compatible HTTP server.

    Args:
        base_url: The server, with or without the ``/v1`` suffix (``http://localhost:8000``).
        model: The served base model name (what ``GET /v1/models`` lists); recorded in traces.
        api_key: Sent as ``Authorization: Bearer <api_key>``.
        vllm: Drive vLLM's dynamic LoRA endpoints (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``);
            ``regrpo serve-model`` has them too.
        timeout_s: Per-request timeout in seconds (a generation must finish within it).
        max_retries: Extra attempts after a 429, a 503 or a connection failure.
        tokenizer: A Hugging Face tokenizer object, or a local tokenizer folder, for exact ``count_tokens``.
        hot_swap: How a reload of a loaded adapter is done with ``vllm=True`` (see the module docstring);
            ``"auto"`` asks ``GET /version``.
        images: The served model takes images (a vLLM serving Qwen2.5-VL, say): the agent then shows it
            each message's images, sent as ``image_url`` parts with PNG ``data:`` URLs
            (:func:`regrpo.agent.image_parts.wire_messages`).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        vllm: bool = False,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        tokenizer: Any = None,
        hot_swap: HotSwap = "auto",
        images: bool = False,
    ) -> None:
        if max_retries < 0 or timeout_s <= 0:
            raise ValueError(f"need max_retries >= 0 and timeout_s > 0, got {max_retries}, {timeout_s}")
        root = base_url.rstrip("/")
        self.base_url = root.removesuffix("/v1")
        self.model_name = model
        self.takes_images = images
        self.active_adapter: str | None = None
        self.vllm, self.timeout_s, self.max_retries, self.hot_swap = vllm, timeout_s, max_retries, hot_swap
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._tokenizer = tokenizer
        self._tokenize_route = True  # False once the server showed it has no /tokenize
        self._token_counts: dict[str, int] = {}
        self._state = threading.Lock()
        self._served: dict[str, str] = {}  # adapter name -> model name sent to the server
        self._paths: dict[str, str] = {}  # adapter name -> path it was last loaded from
        self._versions: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()  # served name -> requests running
        self._retiring: set[str] = set()  # old versioned names to unload once idle
        self._mode: Literal["inplace", "versioned"] | None = None if hot_swap == "auto" else hot_swap

    # -- HTTP -------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request with retries on 429/503/connection errors; other statuses are returned."""
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self.timeout_s
        ) as client:
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.max_retries + 1),
                    retry=retry_if_exception_type(_Retryable),
                    wait=_wait,
                    reraise=True,
                ):
                    with attempt:
                        try:
                            response = await client.request(method, path, json=body)
                        except _CONNECTION_ERRORS as exc:
                            raise _Retryable(f"cannot reach {self.base_url}: {exc!r}") from exc
                        if response.status_code in _RETRY_STATUS:
                            raise _Retryable(
                                f"HTTP {response.status_code}: {_error_text(response)}",
                                _retry_after(response),
                            )
                        return response
            except _Retryable as exc:
                unreachable = isinstance(exc.__cause__, _CONNECTION_ERRORS)
                raise (ModelUnreachableError if unreachable else ModelError)(
                    f"{method} {self.base_url}{path} failed after {self.max_retries + 1} attempts: {exc}"
                ) from exc
            except httpx.HTTPError as exc:
                raise ModelError(f"{method} {self.base_url}{path} failed: {exc!r}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _fail(
        self, response: httpx.Response, what: str, error: type[RegrpoError] = ModelError
    ) -> RegrpoError:
        return error(
            f"{what} failed: {self.base_url} answered HTTP {response.status_code}: {_error_text(response)}"
        )

    # -- sampling ---------------------------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Completion]:
        return _run_sync(
            lambda: self.agenerate(
                messages, n=n, temperature=temperature, max_new_tokens=max_new_tokens, stop=stop
            )
        )

    async def agenerate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
    ) -> list[Completion]:
        """Sample ``n`` completions (greedy when ``temperature == 0``); see ``Policy.generate``."""
        check_sampling(n, temperature, max_new_tokens)
        adapter, served = self._serving()
        body: dict[str, Any] = {
            "model": served,
            "messages": wire_messages(as_chat(messages)),
            "n": n,
            "temperature": temperature,
            "max_tokens": max_new_tokens,
            "logprobs": True,
            "return_token_ids": True,  # vLLM extension: the sampled ids, not a re-tokenisation
            "include_stop_str_in_output": True,  # vLLM extension: keep the stop string, as LocalPolicy does
        }
        if stop:
            body["stop"] = list(stop)
        with self._state:
            self._in_flight[served] += 1
        try:
            response = await self._request("POST", "/v1/chat/completions", body)
        finally:
            with self._state:
                self._in_flight[served] -= 1
            await self._unload_idle_versions()
        if response.status_code != 200:
            raise self._fail(response, f"chat completion with model {served!r}")
        try:
            parsed = ChatCompletionResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise ModelError(f"{self.base_url} returned a chat completion regrpo cannot read: {exc}") from exc
        prompt_tokens = parsed.usage.prompt_tokens or len(parsed.prompt_token_ids or [])
        return [
            self._completion(choice, prompt_tokens, adapter)
            for choice in sorted(parsed.choices, key=lambda c: c.index)
        ]

    def _completion(self, choice: Choice, prompt_tokens: int, adapter: str | None) -> Completion:
        if choice.finish_reason == "abort":
            raise ModelError(
                f"{self.base_url} aborted the generation (paused or shutting down); try again later"
            )
        text = choice.message.content or ""
        if isinstance(choice.stop_reason, str) and not text.endswith(choice.stop_reason):
            text += choice.stop_reason  # the server ignored include_stop_str_in_output
        logprobs = [entry.logprob for entry in (choice.logprobs.content or [])] if choice.logprobs else []
        token_ids = list(choice.token_ids or [])
        if token_ids and logprobs and len(token_ids) != len(logprobs):
            raise ModelError(
                f"{self.base_url} returned {len(token_ids)} token ids but {len(logprobs)} log-probs "
                "for one choice"
            )
        return Completion(
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=prompt_tokens,
            adapter=adapter,
        )

    # -- tokens -----------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``: local tokenizer, else the server's ``/tokenize``, else an estimate."""
        if self._tokenizer is not None:
            if isinstance(self._tokenizer, str | Path):
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer)
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        if text in self._token_counts:
            return self._token_counts[text]
        count = self._server_count(text) if self._tokenize_route else None
        if count is None:
            return math.ceil(len(text) / 4)
        if len(self._token_counts) > 4096:
            self._token_counts.clear()
        self._token_counts[text] = count
        return count

    def _server_count(self, text: str) -> int | None:
        body = {"model": self.model_name, "prompt": text, "add_special_tokens": False}
        try:
            response = httpx.post(
                f"{self.base_url}/tokenize", json=body, headers=self._headers, timeout=self.timeout_s
            )
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            return int(response.json()["count"])
        self._tokenize_route = response is None or response.status_code not in (404, 405)
        warnings.warn(
            f"{self.base_url} cannot count tokens (no /tokenize); estimating 4 characters per token. "
            "Pass OpenAIPolicy(tokenizer=...) for exact counts.",
            stacklevel=3,
        )
        return None

    # -- adapters ---------------------------------------------------------------------------------

    def _serving(self) -> tuple[str | None, str]:
        """The active adapter and the model name the server knows it by, read together."""
        with self._state:
            adapter = self.active_adapter
            return adapter, self._served[adapter] if adapter else self.model_name

    def served_model(self) -> str:
        """The model name requests are sent with now: the active adapter's served name, or the base's."""
        return self._serving()[1]

    def listed_models(self) -> set[str]:
        """The model ids the server lists on ``GET /v1/models`` (base model and loaded adapters)."""

        async def listing() -> httpx.Response:
            return await self._request("GET", "/v1/models")

        response = _run_sync(listing)
        if response.status_code != 200:
            raise self._fail(response, "listing models")
        return {str(card.get("id")) for card in response.json().get("data", [])}

    def load_adapter(self, name: str, path: str) -> None:
        """Make adapter ``name`` available (not activated); with ``vllm=True`` a known name is hot-swapped."""
        _run_sync(lambda: self.aload_adapter(name, path))

    async def aload_adapter(self, name: str, path: str) -> None:
        """Async :meth:`load_adapter`."""
        if not name or name == self.model_name:
            raise AdapterError(
                f"adapter name {name!r} must be non-empty and differ from the base model's name"
            )
        if not self.vllm:
            response = await self._request("GET", "/v1/models")
            if response.status_code != 200:
                raise self._fail(response, "listing models", AdapterError)
            if name not in {card.get("id") for card in response.json().get("data", [])}:
                raise AdapterError(
                    f"{self.base_url} does not serve a model named {name!r}: start the server with it "
                    f"(vLLM: --lora-modules {name}={path}) or use OpenAIPolicy(vllm=True) to load it"
                )
            with self._state:
                self._served[name] = name
            return
        local = Path(path).expanduser()
        path = str(local.resolve()) if local.exists() else path
        if self._paths.get(name) == path:
            path = _fresh_copy(path)
        if await self._hot_swap_mode() == "inplace" and await self._load_inplace(name, path):
            return
        await self._load_versioned(name, path)

    async def _hot_swap_mode(self) -> Literal["inplace", "versioned"]:
        if self._mode is None:
            try:
                response = await self._request("GET", "/version")
                version = (
                    _parse_version(str(response.json().get("version", "")))
                    if response.status_code == 200
                    else (0, 0)
                )
            except (ModelError, ValueError, AttributeError):
                version = (0, 0)
            self._mode = "inplace" if version >= (0, 33) else "versioned"  # contract §6: B1 fixed in 0.33
        return self._mode

    async def _load_inplace(self, name: str, path: str) -> bool:
        """Mode A; ``False`` when the server turns out not to know ``load_inplace`` (then use Mode B)."""
        body = {"lora_name": name, "lora_path": path, "load_inplace": True}
        response = await self._request("POST", "/v1/load_lora_adapter", body)
        if (
            response.status_code == 400
            and "already been loaded" in response.text
            and "load_inplace" not in response.text
        ):
            self._mode = "versioned"  # vLLM < 0.15 ignores load_inplace (contract §2.2 step 4)
            return False
        if response.status_code != 200:
            raise self._fail(response, f"loading adapter {name!r} from {path!r}", AdapterError)
        with self._state:
            self._served[name], self._paths[name] = name, path
        return True

    async def _load_versioned(self, name: str, path: str) -> None:
        """Mode B: load ``<name>-v<k>``, point new requests at it, retire the previous version."""
        with self._state:
            self._versions[name] += 1
            versioned = f"{name}-v{self._versions[name]}"
        response = await self._request(
            "POST", "/v1/load_lora_adapter", {"lora_name": versioned, "lora_path": path}
        )
        if response.status_code != 200:
            raise self._fail(
                response, f"loading adapter {name!r} (as {versioned!r}) from {path!r}", AdapterError
            )
        with self._state:
            previous = self._served.get(name)
            self._served[name], self._paths[name] = versioned, path
            if previous is not None:
                self._retiring.add(previous)
        await self._unload_idle_versions()

    async def _unload_idle_versions(self) -> None:
        with self._state:
            idle = [served for served in self._retiring if self._in_flight[served] == 0]
            self._retiring.difference_update(idle)
        for served in idle:
            response = await self._request("POST", "/v1/unload_lora_adapter", {"lora_name": served})
            if response.status_code not in (200, 404):
                raise self._fail(response, f"unloading old adapter version {served!r}", AdapterError)

    def activate_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._served:
            known = ", ".join(sorted(self._served)) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {known})")
        self.active_adapter = name

    def unload_adapter(self, name: str) -> None:
        _run_sync(lambda: self.aunload_adapter(name))

    async def aunload_adapter(self, name: str) -> None:
        """Async :meth:`unload_adapter`."""
        with self._state:
            served = self._served.pop(name, None)
            self._paths.pop(name, None)
        if served is None:
            raise AdapterError(f"no adapter named {name!r} is loaded")
        if self.active_adapter == name:
            self.active_adapter = None
        if self.vllm:
            with self._state:
                self._retiring.add(served)
            await self._unload_idle_versions()

    def served_name(self, adapter: str) -> str:
        """The model name the server knows a loaded adapter by (``<name>-v<k>`` for versioned loads)."""
        with self._state:
            if adapter not in self._served:
                raise AdapterError(f"no adapter named {adapter!r} is loaded")
            return self._served[adapter]

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters."""
        return sorted(self._served)

    def __repr__(self) -> str:
        return f"OpenAIPolicy({self.base_url!r}, {self.model_name!r}, adapter={self.active_adapter!r})"
