"""``LoraTrainer``: train a LoRA adapter in place inside a local engine's model (``LocalPolicy``, or
``VisionPolicy`` for an image-text-to-text model).

One model copy does everything (DESIGN step 7): the policy samples rollouts with the adapter being
trained, the loss is computed on the same weights, and the KL reference is the same model with the
adapter's *starting* weights (the ``init_from`` adapter, or B = 0, i.e. the base model) copied back
in for the reference pass and the trained weights restored after, so no second model is held in
memory (a LoRA's tensors are a few MB: the copy costs far less than the forward pass).

Per-token log-probs come from one forward pass over ``prompt + completion``: the logits at position
``t-1`` score token ``t``, divided by ``temperature`` (1 by default): the distribution
``LocalPolicy`` sampled the rollout from at that temperature, whose log-probs it records
(``tests/learning`` checks the two agree).

**The system prompt is computed once, without gradient** (``detach_system_prompt=True``, the
default). Every sample starts with the same ~770-token system message; on the 2-core CPU a
forward+backward over the whole ~870-token sequence took 5.3 s, while reusing the system prompt's
keys and values (computed under the current weights, no grad) and back-propagating through the
rest took 0.85 s plus one 1.7 s prefix pass per optimizer step. Forward values are exact; the
gradient leaves out the path through the system prompt's keys and values (the task, the earlier
turns and the tool outputs keep theirs). Set it False for the exact gradient (tests do both).

Backward runs sample by sample (gradient accumulation), so memory holds one sample's graph at a time.

**Samples with images** (``TokenSample.model_inputs``, from a ``VisionPolicy``) are scored in one
forward pass over the whole prompt with the processor's pixel inputs, exactly as
``VisionPolicy.token_logprobs`` scores them (no system-prompt split: Qwen2-VL's rotary positions are
computed over the whole sequence with its images). On a ``VisionPolicy`` a new adapter's LoRA targets
the language model only (:func:`~regrpo.agent.vision.language_model_targets`: the vision tower is
left alone, as vLLM's LoRA for Qwen-VL does).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import msgspec
import torch

from regrpo.agent.local import LocalPolicy
from regrpo.agent.vision import VisionPolicy, language_model_targets, with_continuation
from regrpo.errors import AdapterError, InputError
from regrpo.learning.distributed import all_reduce_gradients
from regrpo.learning.sequences import TokenSample

__all__ = [
    "Backward",
    "LoraSettings",
    "LoraTrainer",
    "TrainablePolicy",
    "save_random_adapter",
    "warmup_cosine",
]

TrainablePolicy = LocalPolicy | VisionPolicy
"""An engine whose weights are in this process, so a LoRA in it can be trained."""


class LoraSettings(msgspec.Struct, frozen=True):
    """The LoRA adapter's shape (the reference release's text recipe: r=16, alpha=32)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    """0: rollouts (no dropout) and the loss see the same function, so on-policy ratios start at 1."""
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    vision_tower: bool = False
    """On an image-text-to-text model, also adapt the vision tower's modules named in
    ``target_modules`` (off by default, as vLLM's LoRA for Qwen-VL; Idefics3's tower has ``q_proj``,
    ``k_proj``, ``v_proj``, Qwen2-VL's names its own: ``qkv``, ``proj``, ``fc1``, ``fc2``)."""

    def peft_config(self, *, language_model_only: bool = False) -> Any:
        """The ``peft.LoraConfig``; ``language_model_only``: the target modules of an
        image-text-to-text model's language model, not of its vision tower."""
        from peft import LoraConfig

        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise InputError(f"LoRA needs rank >= 1, alpha > 0 and 0 <= dropout < 1; got {self}")
        modules = list(self.target_modules)
        targets = language_model_targets(modules) if language_model_only else modules
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )


def save_random_adapter(
    model: torch.nn.Module, folder: str | os.PathLike[str], lora: LoraSettings | None = None, *, seed: int = 0
) -> None:
    """Save a LoRA for ``model`` whose B matrices are random (N(0, 0.02²)), not zero.

    A freshly initialised LoRA changes nothing (B = 0); benchmarks and tests of loading and swapping
    need adapters that do. ``model`` itself is not touched: a private copy is wrapped.
    """
    from peft import get_peft_model

    torch.manual_seed(seed)
    wrapped = get_peft_model(copy.deepcopy(model), (lora or LoraSettings()).peft_config())
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)
    wrapped.save_pretrained(str(folder))


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``floor`` at ``total_steps``.

    Returns ``scale(step)`` for ``LoraTrainer(lr_scale=...)``; ``step`` counts steps already done.
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps or not 0 <= floor <= 1:
        raise InputError(
            f"need total_steps >= 1, 0 <= warmup_steps < total_steps, 0 <= floor <= 1; got "
            f"{total_steps}, {warmup_steps}, {floor}"
        )

    def scale(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return scale


LossOfSample = Callable[[int, torch.Tensor], torch.Tensor]
"""``loss_of(i, token_logprobs)``: sample ``i``'s share of the loss from its completion's log-probs."""


class Backward(NamedTuple):
    """What :meth:`LoraTrainer.backward` accumulated."""

    loss: float
    """The summed loss of the samples."""
    logprobs: list[torch.Tensor]
    """Each sample's per-token log-probs (detached)."""
    entropy: float
    """Mean per-token entropy of the trained distribution over the samples' completion tokens (nats)."""


class TrainerSettings(Protocol):
    """The fields every training config (``SFTConfig``, ``ReGRPOConfig``, ``GRPOConfig``) shares."""

    @property
    def lora(self) -> LoraSettings: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def detach_system_prompt(self) -> bool: ...
    @property
    def seed(self) -> int: ...


class LoraTrainer:
    """A trainable adapter inside ``policy`` plus its optimizer.

    Args:
        policy: The local engine (``LocalPolicy`` or ``VisionPolicy``); the adapter is added to its
            model and made active.
        lora: The adapter's shape (ignored when ``init_from`` is given: its config is used).
        learning_rate: AdamW learning rate.
        name: The adapter's name inside the policy.
        init_from: A PEFT adapter folder to start from (e.g. the SFT warm start), else B = 0.
        grad_clip: Max global gradient norm per optimizer step.
        detach_system_prompt: Reuse the system prompt's keys/values without gradient (module docstring).
        seed: Seeds LoRA's initialisation.
        temperature: Score tokens under ``softmax(logits / temperature)``: the rollouts' sampling
            temperature, so the policy ratio is exact (SFT: 1).
        lr_scale: ``lr_scale(steps_done)`` multiplies ``learning_rate`` for the next step (a schedule,
            e.g. :func:`warmup_cosine`); ``None``: constant.
    """

    def __init__(
        self,
        policy: TrainablePolicy,
        lora: LoraSettings | None = None,
        *,
        learning_rate: float = 1e-4,
        name: str = "trainee",
        init_from: str | os.PathLike[str] | None = None,
        grad_clip: float = 1.0,
        detach_system_prompt: bool = True,
        seed: int = 0,
        temperature: float = 1.0,
        lr_scale: Callable[[int], float] | None = None,
    ) -> None:
        if not isinstance(policy, (LocalPolicy, VisionPolicy)):
            raise InputError(
                "training needs a LocalPolicy or VisionPolicy (weights in this process), got "
                f"{type(policy).__name__}"
            )
        if learning_rate <= 0 or grad_clip <= 0 or temperature <= 0:
            raise InputError(
                "learning_rate, grad_clip and temperature must be > 0, got "
                f"{learning_rate}, {grad_clip} and {temperature}"
            )
        self.temperature = temperature
        self.policy = policy
        self.name = name
        self.grad_clip = grad_clip
        self.detach_system_prompt = detach_system_prompt
        self.lora = lora or LoraSettings()
        config = self._config(init_from)
        self._previous = policy.active_adapter  # serving resumes with it after close()
        torch.manual_seed(seed)
        random.seed(seed)
        policy.add_trainable_adapter(name, config)
        if init_from is not None:
            self._load_weights(Path(init_from))
        self.parameters = [p for p in policy.model.parameters() if p.requires_grad]
        # the KL reference: the weights this run starts from (module docstring)
        self._reference_weights = [p.detach().clone() for p in self.parameters]
        self.base_learning_rate = learning_rate
        self.lr_scale = lr_scale
        first = learning_rate * (lr_scale(0) if lr_scale is not None else 1.0)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=first, weight_decay=0.0)
        self.steps = 0
        self._prefixes: dict[tuple[bool, tuple[int, ...]], Any] = {}  # (reference?, ids) -> KV cache
        self._entropy_sum, self._entropy_tokens = 0.0, 0  # of the current backward() call

    @classmethod
    def for_config(
        cls,
        policy: TrainablePolicy,
        config: TrainerSettings,
        init_from: str | os.PathLike[str] | None,
        *,
        temperature: float = 1.0,
        lr_scale: Callable[[int], float] | None = None,
    ) -> LoraTrainer:
        """A trainer set up from a training config's shared fields (RL passes its sampling temperature)."""
        return cls(
            policy,
            config.lora,
            learning_rate=config.learning_rate,
            init_from=init_from,
            detach_system_prompt=config.detach_system_prompt,
            seed=config.seed,
            temperature=temperature,
            lr_scale=lr_scale,
        )

    # -- set-up --------------------------------------------------------------------------------------

    def _config(self, init_from: str | os.PathLike[str] | None) -> Any:
        if init_from is None:
            vision = isinstance(self.policy, VisionPolicy)
            return self.lora.peft_config(language_model_only=vision and not self.lora.vision_tower)
        from peft import LoraConfig

        folder = Path(init_from)
        if not (folder / "adapter_config.json").is_file():
            raise AdapterError(f"{str(folder)!r} is not a PEFT adapter folder (no adapter_config.json)")
        config = LoraConfig.from_pretrained(str(folder))
        config.inference_mode = False
        return config

    def _load_weights(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            raise AdapterError(f"{str(folder)!r} has no adapter_model.safetensors to start from")
        result = set_peft_model_state_dict(self.policy.model, load_file(str(weights)), adapter_name=self.name)
        missing = [k for k in getattr(result, "missing_keys", []) if f".{self.name}." in k]
        if missing:
            raise AdapterError(f"adapter in {str(folder)!r} lacks {len(missing)} tensors, e.g. {missing[0]}")
        self.policy.weights_changed()

    # -- log-probs -----------------------------------------------------------------------------------

    def _prefix_cache(self, ids: list[int], reference: bool) -> Any:
        """A private copy of the KV cache of ``ids`` (no gradient) under the current or reference weights."""
        from transformers import DynamicCache

        key = (reference, tuple(ids))
        if key not in self._prefixes:
            cache = DynamicCache(config=self.policy.model.config)
            with torch.no_grad(), self._weights(reference):
                self.policy.model(
                    torch.tensor([ids], device=self.policy.device), past_key_values=cache, use_cache=True
                )
            self._prefixes[key] = cache
        return copy.deepcopy(self._prefixes[key])

    @contextlib.contextmanager
    def _weights(self, reference: bool) -> Iterator[None]:
        """Run the block under the reference (starting) weights, or the current ones."""
        if not reference:
            yield
            return
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.parameters]
            for parameter, start in zip(self.parameters, self._reference_weights, strict=True):
                parameter.copy_(start)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, current in zip(self.parameters, trained, strict=True):
                    parameter.copy_(current)

    def _token_logprobs(self, sample: TokenSample, reference: bool) -> torch.Tensor:
        """log π(completion token t | prefix) for every completion token, shape ``(len(completion),)``."""
        if sample.model_inputs is not None:
            return self._scored(sample, self._image_logits(sample, sample.model_inputs, reference))
        ids = sample.prompt_ids + sample.completion_ids
        split = sample.system_tokens if self.detach_system_prompt else 0
        split = min(
            split, len(sample.prompt_ids) - 1
        )  # the last prompt token's logits score the first target
        device = self.policy.device
        past = self._prefix_cache(ids[:split], reference) if split > 0 else None
        targets = len(sample.completion_ids)
        with self._weights(reference):
            # the LM head runs only where it scores a completion token: the last prompt position and
            # every completion position but the last (logits_to_keep keeps the final targets + 1)
            logits = self.policy.model(
                input_ids=torch.tensor([ids[split:]], device=device),
                past_key_values=past,
                use_cache=past is not None,
                logits_to_keep=targets + 1,
            ).logits[0, :-1]  # (completion tokens, vocab): row t scores completion token t
        return self._scored(sample, logits)

    def _image_logits(
        self, sample: TokenSample, model_inputs: Mapping[str, torch.Tensor], reference: bool
    ) -> torch.Tensor:
        """The logits scoring each completion token of a sample with images (module docstring)."""
        device = self.policy.device
        prompt = {key: value.to(device) for key, value in model_inputs.items()}
        prompt["input_ids"] = torch.tensor([sample.prompt_ids], device=device)
        inputs = with_continuation(prompt, sample.completion_ids)
        targets = len(sample.completion_ids)
        with self._weights(reference):
            return self.policy.model(**inputs, logits_to_keep=targets + 1).logits[0, :-1]

    def _scored(self, sample: TokenSample, logits: torch.Tensor) -> torch.Tensor:
        """The completion tokens' log-probs from the logits that score them (and the entropy tally)."""
        device = self.policy.device
        scores = (logits.float() / self.temperature).log_softmax(-1)
        with torch.no_grad():  # telemetry only: mean per-token entropy of loss-carrying tokens
            entropy = -(scores.exp() * scores).sum(-1)
            if sample.weights is not None:
                entropy = entropy[torch.tensor(sample.mask(), device=device)]
            self._entropy_sum += float(entropy.sum())
            self._entropy_tokens += int(entropy.shape[0])
        chosen = torch.tensor(sample.completion_ids, device=device)
        return scores.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)

    def logprobs(self, samples: Sequence[TokenSample], *, reference: bool = False) -> list[torch.Tensor]:
        """Per-token log-probs of each sample's completion, without gradient (reference: starting weights)."""
        with torch.no_grad():
            return [self._token_logprobs(sample, reference).detach() for sample in samples]

    def backward(self, samples: Sequence[TokenSample], loss_of: LossOfSample) -> Backward:
        """Accumulate gradients of ``Σ_i loss_of(i, logprobs_i)``, one sample at a time."""
        total = 0.0
        seen = []
        self._entropy_sum, self._entropy_tokens = 0.0, 0
        for index, sample in enumerate(samples):
            token_logprobs = self._token_logprobs(sample, reference=False)
            loss = loss_of(index, token_logprobs)
            if loss.requires_grad:
                loss.backward()
            total += float(loss.detach())
            seen.append(token_logprobs.detach())
        entropy = self._entropy_sum / max(1, self._entropy_tokens)
        return Backward(total, seen, entropy)

    def step(self) -> float:
        """Sum the accumulated gradients over ranks (data-parallel runs), clip, apply and clear them.

        Returns the gradient norm before clipping.
        """
        all_reduce_gradients(self.parameters)
        norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.lr_scale is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_learning_rate * self.lr_scale(self.steps)
        self._prefixes = {
            key: cache for key, cache in self._prefixes.items() if key[0]
        }  # reference stays valid
        self.policy.weights_changed()
        return norm

    @property
    def learning_rate(self) -> float:
        """The learning rate the next optimizer step will use."""
        return float(self.optimizer.param_groups[0]["lr"])

    # -- output --------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the adapter as a plain PEFT folder (adapter_config.json + adapter_model.safetensors)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.policy.model, adapter_name=self.name)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()},
            str(target / "adapter_model.safetensors"),
        )
        config = copy.deepcopy(self.policy.model.peft_config[self.name])
        config.inference_mode = True
        config.save_pretrained(str(target))
        return target

    def close(self) -> None:
        """Take the adapter out of the policy and re-activate the adapter that was active before."""
        self.optimizer.zero_grad(set_to_none=True)
        self._prefixes.clear()
        self.policy.unload_adapter(self.name)
        self.policy.activate_adapter(self._previous)

    def __enter__(self) -> LoraTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
