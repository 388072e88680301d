"""Small vision-language models built offline, for tests, examples and CPU experiments.

No pretrained VLM weights are reachable from this project's package registries (docs/decisions.md,
"Vision in the model"), so these assemble one of each family :class:`~regrpo.agent.vision.VisionPolicy`
is tested with from a config: SmolLM2's real tokenizer (with the image tokens the family's processor
needs added), a ChatML chat template that renders image parts, and randomly initialised weights (a
2-layer text model and a 1-layer vision tower, about 6 M parameters).

* :func:`build_tiny_idefics3` (Idefics3/SmolVLM): every image is resized to a fixed size, so it is
  always the same number of image tokens.
* :func:`build_tiny_qwen2_vl` (Qwen2-VL, the Qwen2.5-VL layout): the image tokens grow with the
  image's pixels (one per 28 × 28 pixels), so the pixel budget decides the prompt's length.
* :func:`build_smollm2_idefics3`: SmolLM2-135M-Instruct's **real** language weights inside an
  Idefics3, with a freshly initialised vision tower and connector: a model that writes what SmolLM2
  writes (text prompts score the same), with images going through vision weights that know nothing.

Each is saved as an ordinary Hugging Face folder, so ``VisionPolicy`` loads it exactly as it loads a
hub model such as ``Qwen/Qwen2.5-VL-3B-Instruct``: it exercises every code path, and knows nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regrpo.agent.model_files import DEFAULT_MODEL, resolve_model_dir

__all__ = ["CHATML_WITH_IMAGES", "build_smollm2_idefics3", "build_tiny_idefics3", "build_tiny_qwen2_vl"]

CHATML_WITH_IMAGES = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""SmolLM2's ChatML, with ``{"type": "image"}`` parts rendered as the processor's ``<image>`` token."""


def build_tiny_idefics3(folder: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """Save a randomly initialised Idefics3 with SmolLM2's tokenizer to ``folder`` and return it.

    Every image is resized to ``image_size`` pixels on its longest side and becomes
    ``(image_size / 16)²`` image tokens (8-pixel patches, pixel shuffle by 2; 4 at the default).
    ``seed`` fixes the weights.
    """
    from transformers import Idefics3ForConditionalGeneration

    config, processor, tokenizer = _idefics3_parts(_text_sizes, image_size)
    return _saved(Idefics3ForConditionalGeneration, config, processor, tokenizer, folder, seed)


def build_smollm2_idefics3(
    folder: str | Path, *, image_size: int = 64, seed: int = 0, cache_dir: str | Path | None = None
) -> Path:
    """Save SmolLM2-135M-Instruct's language weights inside an Idefics3 to ``folder`` and return it.

    The language model (embeddings, 30 layers, final norm, the tied head) is SmolLM2's, copied
    exactly; the embeddings of the three image tokens the processor adds are the mean embedding. The
    vision tower and connector are randomly initialised under ``seed`` (images become
    ``(image_size / 16)²`` tokens, 16 at the default). About 0.6 GB on disk in float32.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Idefics3ForConditionalGeneration

    source = resolve_model_dir(DEFAULT_MODEL, Path(cache_dir) if cache_dir is not None else None)

    def smollm2_sizes(tokenizer: Any) -> dict[str, Any]:
        text = AutoConfig.from_pretrained(source).to_dict()
        return {**text, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}

    config, processor, tokenizer = _idefics3_parts(smollm2_sizes, image_size)
    config.tie_word_embeddings = False  # the head is saved as its own copy of the embeddings
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model: Any = Idefics3ForConditionalGeneration(config)
    language: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    weights = language.model.state_dict()
    known = weights["embed_tokens.weight"]
    added = known.mean(0, keepdim=True).expand(len(tokenizer) - known.shape[0], -1)
    weights["embed_tokens.weight"] = torch.cat([known, added])
    model.model.text_model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        model.lm_head.weight.copy_(weights["embed_tokens.weight"])
    _set_generation(model, tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def _idefics3_parts(text_sizes: Any, image_size: int) -> tuple[Any, Any, Any]:
    """The Idefics3 config, processor and tokenizer both Idefics3 builders share (SmolLM2's tokenizer)."""
    from transformers import AutoTokenizer, Idefics3Config, Idefics3ImageProcessor, Idefics3Processor

    tokenizer: Any = AutoTokenizer.from_pretrained(resolve_model_dir(DEFAULT_MODEL, None))
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=False,
    )
    patches = (image_size // 8) ** 2
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=patches // 4,
        chat_template=CHATML_WITH_IMAGES,
    )  # adds <image>, <fake_token_around_image> and <end_of_utterance> to the tokenizer
    config = Idefics3Config(
        text_config={**text_sizes(tokenizer), "model_type": "llama"},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    return config, processor, tokenizer


def build_tiny_qwen2_vl(folder: str | Path, *, seed: int = 0) -> Path:
    """Save a randomly initialised Qwen2-VL with SmolLM2's tokenizer to ``folder`` and return it.

    Images keep their size (between 28 × 28 and 448 × 448 pixels, the processor's own limits here) and
    become one image token per 28 × 28 pixels. ``seed`` fixes the weights.
    """
    from transformers import (
        AutoTokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer: Any = AutoTokenizer.from_pretrained(resolve_model_dir(DEFAULT_MODEL, None))
    marks = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": marks})
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=448 * 448),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHATML_WITH_IMAGES.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    ids = dict(zip(marks, tokenizer.convert_tokens_to_ids(marks), strict=True))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2VLConfig(
        text_config={
            **_text_sizes(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": end,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return _saved(Qwen2VLForConditionalGeneration, config, processor, tokenizer, folder, seed)


def _text_sizes(tokenizer: Any) -> dict[str, int]:
    """The tiny language model's shape, over the whole (extended) vocabulary."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _saved(
    model_class: Any, config: Any, processor: Any, tokenizer: Any, folder: str | Path, seed: int
) -> Path:
    """Initialise ``model_class(config)`` under ``seed``, end turns at ``<|im_end|>``, save it all."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config)
    _set_generation(model, tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def _set_generation(model: Any, tokenizer: Any) -> None:
    """End turns at ``<|im_end|>``, as SmolLM2's chat does."""
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
