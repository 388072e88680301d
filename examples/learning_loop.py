"""The learning loop in one script, with tiny budgets: data → SFT warm start → ReGRPO → gate → hot-swap.

Run: ``python examples/learning_loop.py`` (offline, about three minutes on a 2-core CPU). Real tools,
the real SmolLM2-135M; the budgets are far too small to make the model better, the point is the API.
The full-size commands are ``regrpo train data|sft|regrpo|grpo`` and ``regrpo trainer``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from regrpo import TraceStore
from regrpo.agent.local import LocalPolicy
from regrpo.evaluation import EvalOptions
from regrpo.learning.data_engine import build_dataset
from regrpo.learning.gate import evaluate_and_gate
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.learning.regrpo import ReGRPOConfig, train_regrpo
from regrpo.learning.sft import SFTConfig, train_sft
from regrpo.tasks.suite import builtin_suite

work = Path(tempfile.mkdtemp(prefix="regrpo-learning-"))
count_tasks = [t for t in builtin_suite(12) if t.category == "count"]
# held-out tasks come from held-out variants (phrasings, layouts) that training never sees
train_task = next(t for t in count_tasks if t.variant == "train")
held_out_task = next(t for t in count_tasks if t.variant == "holdout")

# 1. The data engine: the reference solution run for real, plus near-misses that really failed.
data = build_dataset([train_task], near_misses_per_step=2, progress=False)
print("data:", data.counts.sft_kinds, "error types:", data.counts.error_types)
target = next(e for e in data.sft_examples if e.kind == "rot").messages[-1].content
print("an RoT target turn:", target[:160], "...")

# 2. Warm start (SFT) on those examples, then 3. one small ReGRPO round on the branch points.
policy = LocalPolicy()
train_sft(policy, data.sft_examples, SFTConfig(epochs=1, batch_size=4), work / "sft", progress=False)
failures = [p for p in data.branch_points if p.failed]
config = ReGRPOConfig(group_size=2, max_new_tokens=64, max_rollouts=4)
report = train_regrpo(policy, failures, config, work / "regrpo", init_from=work / "sft", progress=False)
print(f"ReGRPO: {report.rollouts} rollouts, {report.skipped_zero_variance} zero-variance groups skipped")

# 4. Commit to the registry, and let the gate decide on a held-out task (hot-swapped if it wins).
#    The default rule is a paired test that needs ~155 held-out tasks to call a difference, so on
#    one task it refuses and says why; GateConfig(rule="any_improvement") is the demo's opt-out.
registry = AdapterRegistry(work / "registry")
folder = registry.begin()
shutil.copytree(work / "regrpo", folder, dirs_exist_ok=True)
version = registry.commit(folder, AdapterMeta(base_model=policy.model_name, notes="example")).version
with TraceStore(work / "eval.sqlite") as store:
    options = EvalOptions(max_steps=2, max_new_tokens=48)
    decision = evaluate_and_gate(policy, registry, version, [held_out_task], store=store, options=options)
print(f"gate {version}: promoted={decision.promoted} ({decision.reason}); live={registry.live()}")
print("active adapter now:", policy.active_adapter)
