"""Small vision-language models built offline, for tests, examples and CPU experiments.

No pretrained VLM weights are reachable from this project's package registries (docs/decisions.md,
"Vision in the model"), so :func:`build_tiny_idefics3` assembles an Idefics3 model from a config:
SmolLM2's real tokenizer (the ``<image>`` tokens the processor needs are added to it), a ChatML chat
template that renders image parts, and randomly initialised weights (a 2-layer text model and a
1-layer vision tower, about 6 M parameters). It is saved as an ordinary Hugging Face folder, so
:class:`~regrpo.agent.vision.VisionPolicy` loads it exactly as it loads a hub model such as
``Qwen/Qwen2.5-VL-3B-Instruct``: it exercises every code path, and knows nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regrpo.agent.model_files import DEFAULT_MODEL, resolve_model_dir

__all__ = ["CHATML_WITH_IMAGES", "build_tiny_idefics3"]

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

    Every image is resized to ``image_size`` pixels on its longest side and becomes 4 image tokens
    (8-pixel patches, pixel shuffle by 2). ``seed`` fixes the weights.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    folder = Path(folder)
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
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "pad_token_id": tokenizer.pad_token_id,
        },
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
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
