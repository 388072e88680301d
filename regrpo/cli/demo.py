"""``regrpo demo``: the loop closing on a laptop CPU, in under ten minutes.

1. **Base.** The base model runs a few held-out tasks of the built-in suite (tool faults injected at
   ``--fault-rate``); every episode goes to the trace store and is scored through feedback.
2. **Warm start.** The RoT SFT adapter shipped with regrpo (trained by ``regrpo train sft`` on the
   suite's *training* split; provenance in ``regrpo/data/adapters/warm-start/PROVENANCE.md``) is
   committed to a fresh registry and put through the eval gate against the base model's numbers:
   promoted and hot-swapped into the running policy only if it solves more held-out tasks.
3. **Traffic.** The live agent works a few *training* tasks, with faults; its failures land in the store.
4. **Online round.** ReGRPO learns from exactly those failures (their branch points, then executed
   near-misses of the same tasks), starting from the live adapter; the new version is gated the same
   way and hot-swapped in if it beats the live one.
5. A learning-curve PNG (held-out success per stage) and the registry's history are printed.

The warm start exists because a useful one cannot be trained in minutes on two CPU cores
(``regrpo train sft`` took about 40 minutes there, docs/results.md); everything after it is live.

The demo's gate opts out of statistics: ten minutes on two cores buys 2 held-out tasks, and the
gate's default paired test needs 155 (:mod:`regrpo.learning.gate`), so it would refuse every
candidate. The demo gates with ``GateConfig(rule="any_improvement")`` (promote on any point
improvement) and every gate line says plainly that such a promotion is not statistically significant.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from regrpo.cli.common import agent_options, make_policy
from regrpo.cli.evaluation import episode_table, select_tasks, suite_selection_options, summary_table
from regrpo.errors import InputError
from regrpo.evaluation import EvalOptions, evaluate, write_report
from regrpo.evaluation.report import write_learning_curve
from regrpo.paths import default_cache_dir
from regrpo.traces import TraceStore, open_store

__all__ = ["WARM_START", "gate_line", "register"]

WARM_START = Path(__file__).resolve().parent.parent / "data" / "adapters" / "warm-start"
"""The shipped RoT SFT warm start (a PEFT folder)."""


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from regrpo.agent.local import LocalPolicy

    started = time.perf_counter()
    held_out = select_tasks(args)
    options = EvalOptions(
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        fault_rate=args.fault_rate,
        fault_seed=args.fault_seed,
    )
    policy = make_policy(args, console)
    out = Path(args.out)
    with open_store(args.store) as store:
        console.rule("1 · base model on held-out tasks")
        base = evaluate(policy, held_out, store=store, options=options, label="base")
        write_report(base, out / "base")
        console.print(episode_table(base))
        console.print(summary_table(base))
        if args.no_learn:
            return 0
        if not isinstance(policy, LocalPolicy):
            raise InputError(
                "the learning part of the demo trains in this process; drop --base-url or add --no-learn"
            )
        curve = _learn(args, console, policy, store, held_out, options, base, out)
    chart = write_learning_curve(curve, out / "learning_curve.png")
    console.print(
        f"learning curve: {chart} · registry: {out / 'registry'} · traces: {args.store} · "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    return 0


def gate_line(version: str, decision: Any) -> str:
    """The line the demo prints for one gate decision (a :class:`~regrpo.learning.gate.GateDecision`)."""
    verdict = "[green]promoted and hot-swapped[/]" if decision.promoted else "[yellow]refused[/]"
    caveat = "" if decision.significant else " · [bold]not statistically significant[/]"
    return f"gate {version}: {verdict}{caveat} ({escape(decision.reason)})"


def _learn(
    args: argparse.Namespace,
    console: Console,
    policy: Any,
    store: TraceStore,
    held_out: list[Any],
    options: EvalOptions,
    base: Any,
    out: Path,
) -> list[tuple[str, float]]:
    from regrpo.learning.gate import GateConfig, GateDecision, evaluate_and_gate, record_metrics
    from regrpo.learning.online import ReGRPORound
    from regrpo.learning.registry import AdapterMeta, AdapterRegistry
    from regrpo.learning.regrpo import ReGRPOConfig
    from regrpo.tasks.suite import builtin_suite, split

    warm_start = Path(args.warm_start)
    if not (warm_start / "adapter_config.json").is_file():
        raise InputError(f"{str(warm_start)!r} is not a PEFT adapter folder; pass --warm-start DIR")
    shutil.rmtree(out / "registry", ignore_errors=True)  # the demo's own registry starts empty each run
    registry = AdapterRegistry(out / "registry")
    record_metrics(registry, None, policy.model_name, held_out, options, base)
    curve = [("base", base.overall.success_rate)]
    # the explicit opt-out: 2 held-out tasks cannot pass a paired test (see the module docstring)
    point_rule = GateConfig(rule="any_improvement")

    def gate(version: str) -> GateDecision:
        decision = evaluate_and_gate(
            policy, registry, version, held_out, store=store, options=options, config=point_rule
        )
        console.print(gate_line(version, decision))
        curve.append((version, decision.candidate_metrics["success_rate"]))
        return decision

    console.rule("2 · warm start (RoT SFT, shipped) through the eval gate")
    folder = registry.begin()
    shutil.copytree(warm_start, folder, dirs_exist_ok=True)
    meta = AdapterMeta(base_model=policy.model_name, notes=f"RoT SFT warm start from {warm_start}")
    gate(registry.commit(folder, meta).version)

    console.rule("3 · the live agent works training tasks (its failures are the next round's data)")
    train, _ = split(
        builtin_suite(
            n=args.tasks, seed=args.seed, cache_dir=args.cache_dir, holdout_fraction=args.holdout_fraction
        ),
        args.holdout_fraction,
    )
    traffic = [t for t in train if t.category in {t.category for t in held_out}][: args.traffic]
    since = time.time()
    report = evaluate(policy, traffic, store=store, options=options, label=f"traffic ({registry.live()})")
    console.print(summary_table(report))
    failed = store.trace_ids(since=since, failures_only=True)
    console.print(f"{len(failed)} of {len(traffic)} episodes had a failed step")

    console.rule("4 · online ReGRPO round on those failures, then the gate")
    config = ReGRPOConfig(group_size=args.group_size, max_rollouts=args.rollouts, seed=args.seed)
    round_ = ReGRPORound(
        policy,
        registry,
        traffic,
        store,
        config,
        warm_start=warm_start,
        max_points=max(1, args.rollouts // args.group_size),
        progress=True,
    )
    folder = registry.begin()
    try:
        details = round_(failed, folder)
        meta = AdapterMeta(base_model=policy.model_name, parent=registry.live(), config=details)
        version = registry.commit(folder, meta).version
    except BaseException:
        registry.discard(folder)
        raise
    rl = details["report"]
    console.print(
        f"ReGRPO: {details['branch_points']} branch points ({details['from_traces']} from the new failures), "
        f"{rl['rollouts']} rollouts, {rl['skipped_zero_variance']} groups skipped (zero variance), "
        f"{rl['steps']} optimizer steps, {rl['seconds']:.0f} s"
    )
    gate(version)
    live = registry.live()
    console.print(f"live now: {live or 'base model'} · policy's active adapter: {policy.active_adapter}")
    return curve


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``regrpo`` parser."""
    demo = commands.add_parser(
        "demo",
        parents=[agent_options(4, 112), suite_selection_options(48, split="holdout")],
        help="watch the agent learn: base → warm start → online ReGRPO round, gated and hot-swapped",
    )
    demo.set_defaults(limit=2, categories="expression,count", fault_rate=0.2)
    demo.add_argument(
        "--fault-rate", type=float, help="probability a tool call is made to fail (default 0.2)"
    )
    demo.add_argument("--fault-seed", type=int, default=0)
    demo.add_argument("--warm-start", type=Path, default=WARM_START, help="RoT SFT adapter to start from")
    demo.add_argument("--traffic", type=int, default=2, help="training tasks the live agent works")
    demo.add_argument("--group-size", type=int, default=4, help="ReGRPO's G")
    demo.add_argument("--rollouts", type=int, default=8, help="sampled continuations in the online round")
    demo.add_argument("--no-learn", action="store_true", help="only evaluate the base model")
    demo.add_argument(
        "--out", type=Path, default=default_cache_dir() / "reports" / "demo", help="output folder"
    )
    demo.set_defaults(handler=cmd_demo)
