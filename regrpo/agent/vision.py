"""``VisionPolicy``: a transformers image-text-to-text model in this process, with LoRA adapters via peft.

The engine half of vision in the model (issue 15). It loads any model transformers' own
``AutoModelForImageTextToText`` and ``AutoProcessor`` load (Idefics3/SmolVLM and the Qwen2-VL family
among them) and takes images inside the chat, as the processor's chat templates do: a message's
``content`` is either a string or a list of parts, ``{"type": "text", "text": ...}`` and
``{"type": "image", "image": <PIL image>}``. The processor renders the chat and turns each image into
its image tokens and pixel inputs; so the prompt accounting (``Completion.prompt_tokens``) includes the
image tokens.

One pixel budget holds for every image: one larger than ``max_image_pixels`` is resized down (aspect
kept) before the processor sees it (:func:`fit_pixel_budget` returns the scale, so a caller can map
boxes back into the original image's frame).

Completions follow the same rules as :class:`~regrpo.agent.local.LocalPolicy`
(:mod:`regrpo.agent.sampling`): exactly the sampled tokens, cut after a stop string or the end of the
turn, each with its log-prob under the distribution it was sampled from; :meth:`VisionPolicy.token_logprobs`
recomputes them in one forward pass with the same images (tests/agent/test_vision_policy.py checks
they agree), and so does :class:`~regrpo.learning.lora_trainer.LoraTrainer` from the same
:meth:`VisionPolicy.encode` and :func:`with_continuation` (tests/learning/test_vision_training.py).
Calls run one at a time (no batching across calls yet, no prefix cache: a KV cache of a prompt with
images is not reused), and ``n`` samples of one call share one ``generate``.

Training with pixels: SFT and ReGRPO train a ``VisionPolicy`` (regrpo.learning); the trajectory
GRPO baseline does not (it refuses one up front).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from regrpo.agent.local import placement
from regrpo.agent.local_adapters import ACTIVE_ADAPTER, ActiveAdapter, LoraAdapters
from regrpo.agent.policy import check_sampling
from regrpo.agent.sampling import SampledRows, end_of_turn_ids, sampled_logprobs
from regrpo.errors import InputError, ModelError
from regrpo.traces.schema import Completion, Message

__all__ = ["VisionMessage", "VisionPolicy", "fit_pixel_budget", "language_model_targets", "with_continuation"]

VisionMessage = Message | Mapping[str, Any]
"""A chat message whose ``content`` is a string or a list of text and image parts (module docstring)."""


def fit_pixel_budget(image: Any, max_pixels: int) -> tuple[Any, float]:
    """``(image, scale)``: the image resized down (aspect kept) to at most ``max_pixels`` pixels, and
    the factor its sides were multiplied by (1.0 when it already fits, and it is then returned as is)."""
    width, height = image.size
    if width * height <= max_pixels:
        return image, 1.0
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return image.resize(size), size[0] / width


def language_model_targets(modules: Sequence[str]) -> str:
    """A peft ``target_modules`` regex for ``modules`` (e.g. ``q_proj``) in the language model only:
    LoRA leaves the vision tower alone, as vLLM's LoRA for Qwen-VL does by default."""
    names = "|".join(sorted(set(modules)))
    return rf"^(?!.*(?:vision|visual)).*\.(?:{names})$"


def with_continuation(inputs: Mapping[str, torch.Tensor], tokens: Sequence[int]) -> dict[str, torch.Tensor]:
    """A prompt's model inputs (:meth:`VisionPolicy.encode`) with ``tokens`` appended: the ids, and
    every other per-token input grown to match (attention mask 1; Qwen2-VL's token types 0, text).
    Image inputs (pixel values, grid sizes) stay as they are."""
    ids = inputs["input_ids"]
    prompt_tokens = int(ids.shape[1])
    continuation = torch.tensor([list(tokens)], dtype=ids.dtype, device=ids.device)
    grown = {}
    for key, value in inputs.items():
        if key != "input_ids" and value.dim() == 2 and value.shape == (1, prompt_tokens):
            value = torch.cat([value, torch.full_like(continuation, int(key == "attention_mask"))], dim=1)
        grown[key] = value
    grown["input_ids"] = torch.cat([ids, continuation], dim=1)
    return grown


class VisionPolicy(LoraAdapters, SampledRows):
    """A Hugging Face image-text-to-text model as a :class:`~regrpo.agent.Policy` that takes images.

    Args:
        model: A local model folder or a hub id (``Qwen/Qwen2.5-VL-3B-Instruct`` on a machine with a
            hub; offline, :func:`regrpo.agent.vision_models.build_tiny_idefics3` makes a folder).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).
        dtype: ``"float32"``, ``"bfloat16"`` (or the ``torch.dtype``); default bfloat16 on CUDA, float32
            on CPU.
        max_image_pixels: The pixel budget of one image (width × height) before the processor.
    """

    takes_images = True
    """Engines that take image parts say so; the agent renders images as text for the others."""

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        max_image_pixels: int = 512 * 512,
    ) -> None:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if max_image_pixels < 1:
            raise InputError(f"max_image_pixels must be >= 1; got {max_image_pixels}")
        self.model_name = str(model)
        self.max_image_pixels = max_image_pixels
        self.device, chosen = placement(device, dtype)
        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read a model config from {model!r}: {exc}") from exc
        if not hasattr(config, "vision_config"):
            raise ModelError(
                f"{model!r} is a text-only model ({config.model_type}); use LocalPolicy for it, or "
                "pass an image-text-to-text model (Idefics3/SmolVLM, Qwen2-VL, ...)"
            )
        try:
            self.processor: Any = AutoProcessor.from_pretrained(model)
            loaded: Any = AutoModelForImageTextToText.from_pretrained(model, dtype=chosen)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load an image-text-to-text model from {model!r}: {exc}") from exc
        if self.processor.chat_template is None:
            raise ModelError(f"{model!r} has no chat template; regrpo needs an instruct/chat model")
        self.model: Any = loaded.to(self.device).eval()
        self.tokenizer: Any = self.processor.tokenizer
        self.active_adapter: str | None = None
        self._adapters: set[str] = set()
        self._lock = threading.Lock()
        self._prefix_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # stays empty: module doc
        self._end_ids = end_of_turn_ids(self.model.generation_config, self.tokenizer)
        self._pad_id: int = self.tokenizer.pad_token_id or next(iter(self._end_ids))

    # -- prompts ------------------------------------------------------------------------------------

    def encode(self, messages: Sequence[VisionMessage]) -> dict[str, torch.Tensor]:
        """The model inputs of the chat plus the assistant header: token ids (image tokens included) and
        the processor's pixel inputs, exactly what :meth:`generate` feeds the model."""
        chat = [self._checked_message(i, m) for i, m in enumerate(messages)]
        try:
            encoded = self.processor.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
        except (ValueError, TypeError) as exc:
            raise InputError(f"the processor cannot render this chat: {exc}") from exc
        return {key: value.to(self.device) for key, value in encoded.items()}

    def _checked_message(self, index: int, message: VisionMessage) -> dict[str, Any]:
        if isinstance(message, Message):
            return message.to_dict()
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str):
            raise InputError(f"message {index} has no string 'role'; got {role!r}")
        if isinstance(content, str):
            return {"role": role, "content": content}
        if not isinstance(content, list):
            raise InputError(
                f"message {index}: 'content' must be a string or a list of text and image parts; "
                f"got {type(content).__name__}"
            )
        return {"role": role, "content": [self._checked_part(index, part) for part in content]}

    def _checked_part(self, index: int, part: Any) -> dict[str, Any]:
        from PIL import Image

        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            return {"type": "text", "text": part["text"]}
        if kind == "image":
            image = part.get("image")
            if not isinstance(image, Image.Image):
                raise InputError(
                    f"message {index}: an image part needs a PIL image under 'image'; got "
                    f"{type(image).__name__} (open files with PIL.Image.open first)"
                )
            fitted, _ = fit_pixel_budget(image.convert("RGB"), self.max_image_pixels)
            return {"type": "image", "image": fitted}
        raise InputError(
            f"message {index}: a content part must be {{'type': 'text', 'text': str}} or "
            f"{{'type': 'image', 'image': PIL.Image}}; got {part!r:.80}"
        )

    # -- sampling -----------------------------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[VisionMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        adapter: str | None | ActiveAdapter = ACTIVE_ADAPTER,
        seed: int | None = None,
    ) -> list[Completion]:
        """Sample ``n`` completions of the chat (see :class:`~regrpo.agent.Policy`). ``adapter`` names
        the LoRA adapter to decode with (``None``: the base model; default: the active one); ``seed``
        makes a sampled call repeatable."""
        check_sampling(n, temperature, max_new_tokens)
        inputs = self.encode(messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        rows = n if temperature > 0 else 1  # greedy rows are all the same: decode one, copy it
        # only a seeded call runs under its own random state: forking every call would restore the
        # global state after it, so unseeded calls in a row would all draw the same samples
        seeded = torch.random.fork_rng(devices=self._rng_devices()) if seed is not None else nullcontext()
        with self._lock, torch.inference_mode(), seeded:
            self._use_adapter(adapter)  # unloaded meanwhile: AdapterError, for this call alone
            if seed is not None:
                torch.manual_seed(seed)
            try:
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=rows,
                    **self._generate_arguments(temperature, stop),
                )
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"generation failed: {exc}") from exc
            adapter = self.active_adapter
        generated = out.sequences[:, prompt_tokens:]  # (rows, new_tokens)
        logprobs = sampled_logprobs(out.logits, generated, temperature)
        completions = [
            self._completion(generated[i].tolist(), logprobs[i].tolist(), stop, prompt_tokens, adapter)
            for i in range(rows)
        ]
        return completions if rows == n else completions * n

    async def agenerate(
        self,
        messages: Sequence[VisionMessage],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        adapter: str | None | ActiveAdapter = ACTIVE_ADAPTER,
        seed: int | None = None,
    ) -> list[Completion]:
        """:meth:`generate` in a worker thread."""
        return await asyncio.to_thread(
            self.generate,
            messages,
            n=n,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            stop=stop,
            adapter=adapter,
            seed=seed,
        )

    def _rng_devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    # -- scoring ------------------------------------------------------------------------------------

    def token_logprobs(
        self,
        messages: Sequence[VisionMessage],
        tokens: Sequence[int],
        *,
        temperature: float = 1.0,
        grad: bool = False,
    ) -> torch.Tensor:
        """Log-probs of ``tokens`` after the chat at ``temperature``, in one forward pass with the
        chat's images (with ``grad``, differentiable: a LoRA step can follow)."""
        if not tokens:
            raise InputError("token_logprobs needs at least one token to score")
        if temperature <= 0:
            raise InputError(f"token_logprobs needs temperature > 0; got {temperature}")
        prompt = self.encode(messages)
        prompt_tokens = int(prompt["input_ids"].shape[1])
        inputs = with_continuation(prompt, tokens)
        with torch.set_grad_enabled(grad):
            logits = self.model(**inputs).logits[0, prompt_tokens - 1 : -1].float()
            logprobs = (logits / temperature).log_softmax(-1)
            chosen = inputs["input_ids"][0, prompt_tokens:]
            return logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)

    def top_logprobs(
        self,
        messages: Sequence[VisionMessage],
        tokens: Sequence[int],
        k: int,
        *,
        adapter: str | None | ActiveAdapter = ACTIVE_ADAPTER,
    ) -> list[list[tuple[int, float]]]:
        """The ``k`` most likely ``(token id, log-prob)`` at each of ``tokens``' positions after the
        chat, under ``adapter`` (default: the active one): one forward pass with the chat's images, of
        the raw distribution (temperature 1), as ``LocalPolicy.top_logprobs``."""
        if not tokens:
            return []
        prompt = self.encode(messages)
        prompt_tokens = int(prompt["input_ids"].shape[1])
        with self._lock, torch.inference_mode():
            self._use_adapter(adapter)
            logits = self.model(**with_continuation(prompt, tokens)).logits[0, prompt_tokens - 1 : -1].float()
        values, indices = logits.log_softmax(-1).topk(k, dim=-1)
        return [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(indices, values, strict=True)]

    def __repr__(self) -> str:
        return (
            f"VisionPolicy({self.model_name!r}, device={self.device.type!r}, adapter={self.active_adapter!r})"
        )
