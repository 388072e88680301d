"""How long an in-process adapter hot-swap takes: from disk, from memory, and activate-only.

LoRA r=16 on every attention and MLP projection (q, k, v, o, gate, up, down) of SmolLM2-135M, with
random non-zero B so the adapter really changes outputs. Steady state, as in a running server: one
adapter is live and active, and each timed swap brings in another one:

* from disk:      ``load_adapter(name, folder)`` + ``activate_adapter(name)``
* from memory:    ``load_adapter_weights(name, config, tensors)`` + ``activate_adapter(name)``
* in place:       ``replace_adapter_weights(active, new_name, tensors)``: the active adapter's LoRA
                  tensors overwritten and renamed (what ``swap_in`` does in a learning loop's steady
                  state); "from disk" includes reading ``adapter_model.safetensors``
* activate-only:  ``activate_adapter`` between two adapters already loaded
* first adapter:  ``load_adapter`` + activate into a model with no adapter yet (peft wraps the model)

Between timed swaps the new adapter is deactivated and unloaded (untimed), so every repeat starts
from the same state. The adapters live in a temporary folder that is deleted at the end; the script
prints a table and writes nothing else. The issue's target is <= 100 ms per swap.

    .venv/bin/python benchmarks/hotswap.py                 # about a minute on a 2-core CPU
    .venv/bin/python benchmarks/hotswap.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from regrpo.agent.local import LocalPolicy
from regrpo.learning.lora_trainer import LoraSettings, save_random_adapter


def timed(swap: Callable[[int], None], reset: Callable[[int], None], repeats: int) -> list[float]:
    """Milliseconds of ``swap(i)`` for each repeat; ``reset(i)`` (untimed) undoes it."""
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        swap(i)
        times.append((time.perf_counter() - started) * 1000)
        reset(i)
    return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from peft import LoraConfig
    from safetensors.torch import load_file

    policy = LocalPolicy()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="regrpo-hotswap-") as tmp:
        live_dir, candidate_dir = Path(tmp) / "live", Path(tmp) / "candidate"
        save_random_adapter(policy.model, live_dir, seed=1)
        save_random_adapter(policy.model, candidate_dir, seed=2)
        # "in memory" = tensors a trainer in this process holds; read once, outside the timing
        config = LoraConfig.from_pretrained(str(candidate_dir))
        tensors = load_file(str(candidate_dir / "adapter_model.safetensors"))
        n_parameters = sum(t.numel() for t in tensors.values())

        def cold_load(i: int) -> None:
            policy.load_adapter(f"c{i}", str(candidate_dir))
            policy.activate_adapter(f"c{i}")

        def cold_reset(i: int) -> None:
            policy.unload_adapter(f"c{i}")  # the last adapter: back to the plain model

        rows: dict[str, list[float]] = {
            "from disk, first adapter": timed(cold_load, cold_reset, args.repeats)
        }

        policy.load_adapter("live", str(live_dir))
        policy.activate_adapter("live")

        def reset(i: int) -> None:
            policy.activate_adapter("live")
            policy.unload_adapter(f"c{i}")

        def from_disk(i: int) -> None:
            policy.load_adapter(f"c{i}", str(candidate_dir))
            policy.activate_adapter(f"c{i}")

        def from_memory(i: int) -> None:
            policy.load_adapter_weights(f"c{i}", config, tensors)
            policy.activate_adapter(f"c{i}")

        rows["from disk"] = timed(from_disk, reset, args.repeats)
        rows["from memory"] = timed(from_memory, reset, args.repeats)

        # in place: the active adapter's tensors are overwritten and it is renamed (no new layers);
        # each repeat swaps the other adapter's weights in, so there is nothing to reset
        sources = [tensors, load_file(str(live_dir / "adapter_model.safetensors"))]
        folders = [candidate_dir, live_dir]
        names = ["live"] + [f"p{i}" for i in range(2 * args.repeats + 2)]

        def in_place_memory(i: int) -> None:
            policy.replace_adapter_weights(names[i], names[i + 1], sources[i % 2])

        def in_place_disk(i: int) -> None:
            j = i + args.repeats
            policy.replace_adapter_weights(
                names[j], names[j + 1], load_file(str(folders[j % 2] / "adapter_model.safetensors"))
            )

        rows["from memory, in place"] = timed(in_place_memory, lambda i: None, args.repeats)
        rows["from disk, in place"] = timed(in_place_disk, lambda i: None, args.repeats)
        policy.load_adapter("other", str(candidate_dir))
        pair = ["other", str(policy.active_adapter)]
        rows["activate only"] = timed(
            lambda i: policy.activate_adapter(pair[i % 2]), lambda i: None, args.repeats
        )

    disk = statistics.median(rows["from disk"])
    print(
        f"LoRA r=16 on {', '.join(LoraSettings().target_modules)}: {n_parameters / 1e6:.2f} M parameters; "
        f"{policy.model_name} on {policy.device.type}, {torch.get_num_threads()} threads; "
        f"{args.repeats} repeats"
    )
    print(f"{'swap':<26} {'median ms':>10} {'p90 ms':>8} {'vs from disk':>13}")
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"{name:<26} {median:>10.1f} {p90(values):>8.1f} {median / disk:>12.2f}x")


if __name__ == "__main__":
    main()
