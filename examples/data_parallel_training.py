"""Data-parallel RL with torchrun: one GRPO round on two ranks, with a tiny budget.

Run: ``python examples/data_parallel_training.py`` (offline, about a minute on a 2-core CPU). It
launches ``torchrun --nproc-per-node 2 -m regrpo.cli train grpo ...`` (the gloo backend on CPUs,
nccl on GPUs): each rank runs its share of the tasks and of ``--max-rollouts`` with the real
SmolLM2 from the shipped warm start, the ranks step together, and rank 0 alone writes the adapter
and the report. ``train sft`` and ``train regrpo`` run under torchrun the same way. On two CPU
cores two ranks are not faster than one; the point is the same command on a machine with GPUs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from regrpo.agent.adapters import WARM_START_DIR

work = Path(tempfile.mkdtemp(prefix="regrpo-ddp-"))
with socket.socket() as probe:  # a free port for the ranks' rendezvous (0 does not work there)
    probe.bind(("127.0.0.1", 0))
    port = str(probe.getsockname()[1])
command = [
    sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
    "-m", "regrpo.cli", "train", "grpo",
    "--tasks", "24", "--split", "train", "--categories", "expression", "--limit", "2",
    "--init", str(WARM_START_DIR), "--group-size", "2", "--max-steps", "3", "--max-new-tokens", "64",
    "--max-rollouts", "12", "--store", str(work / "traces.sqlite"), "--out", str(work / "grpo"),
]  # fmt: skip
print("$", " ".join(command[1:]))
subprocess.run(command, check=True)

report = json.loads((work / "grpo" / "train_report.json").read_text())
print(
    f"one report for both ranks: {report['groups']} groups, {report['rollouts']} rollouts "
    f"({report['skipped_zero_variance']} groups without reward spread), {report['steps']} optimizer steps"
)
assert report["rollouts"] <= 12 + 2 * 2 and (work / "grpo" / "adapter_model.safetensors").is_file()
