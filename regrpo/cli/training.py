"""``regrpo train data|sft|regrpo|grpo`` and ``regrpo trainer``: learning data, adapters, the daemon.

Each subcommand is a thin wrapper over ``regrpo.learning``: ``data`` runs the data engine on the
training split of a suite (and, with ``--store``, mines that trace store's failed episodes);
``sft`` warm-starts an adapter; ``regrpo`` and ``grpo`` run an RL round, usually from the warm start
(``--init``). Every trainer writes a plain PEFT folder to ``--out`` plus ``train_report.json``; with
``--registry`` the folder is also committed there as the next version (not promoted: promotion is
the eval gate's job, ``regrpo adapters gate``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from regrpo.agent.local import LocalPolicy
from regrpo.cli.common import chosen_tools, model_options, store_options, tool_options
from regrpo.cli.evaluation import select_tasks, suite_selection_options
from regrpo.errors import InputError
from regrpo.learning.budget import DEFAULT_TARGET_TOKENS
from regrpo.learning.lora_trainer import LoraSettings, TrainablePolicy
from regrpo.traces import open_store

__all__ = ["register"]


def _policy(args: argparse.Namespace, console: Console) -> LocalPolicy:
    console.print(f"loading {args.model} ...")
    return LocalPolicy(args.model, cache_dir=args.cache_dir, dtype=args.dtype)


def _trainable(args: argparse.Namespace, console: Console) -> TrainablePolicy:
    """What SFT and ReGRPO train: a ``VisionPolicy`` for a vision model folder, else ``_policy``."""
    from regrpo.agent.model_files import is_vision_model_folder

    if not is_vision_model_folder(args.model):
        return _policy(args, console)
    from regrpo.agent.vision import VisionPolicy

    console.print(f"loading {args.model} (image-text-to-text) ...")
    return VisionPolicy(args.model, dtype=args.dtype)


def _finish(args: argparse.Namespace, console: Console, report: msgspec.Struct, kind: str) -> int:
    """Write ``train_report.json`` next to the adapter; commit to the registry when asked."""
    out = Path(args.out)
    (out / "train_report.json").write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    console.print(f"adapter: {out} ({kind}) · report: {out / 'train_report.json'}")
    if args.registry:
        import shutil

        from regrpo.learning.registry import AdapterMeta, AdapterRegistry

        registry = AdapterRegistry(args.registry)
        folder = registry.begin()
        try:
            shutil.copytree(out, folder, dirs_exist_ok=True)
            meta = registry.commit(
                folder,
                AdapterMeta(
                    base_model=args.model,
                    config=msgspec.to_builtins(report)["config"] | {"method": kind},
                    notes=f"regrpo train {kind} --out {out}",
                ),
            )
        except BaseException:
            registry.discard(folder)
            raise
        console.print(f"committed as {meta.version} in {args.registry} (not promoted)")
    return 0


def cmd_data(args: argparse.Namespace, console: Console) -> int:
    from regrpo.learning.data_engine import DataEngineConfig, build_dataset
    from regrpo.tools import Toolbox

    if args.no_suite and not args.traces:
        raise InputError("--no-suite leaves nothing to build from; add --traces to mine --store")
    tools = chosen_tools(args)
    tasks = [] if args.no_suite else select_tasks(args)
    config = DataEngineConfig(
        near_misses_per_step=args.near_misses,
        faults_per_step=args.faults,
        seed=args.data_seed,
        target_tokens=args.target_tokens,
        rot_continuations=args.rot_continuations,
    )
    toolbox = Toolbox(tools) if tools is not None else None
    store = open_store(args.store) if args.traces else None
    try:
        dataset = build_dataset(
            tasks, config=config, store=store, image_dir=Path(args.out) / "images", toolbox=toolbox
        )
    finally:
        if store is not None:
            store.close()
    dataset.save(args.out)
    counts = dataset.counts
    console.print_json(json.dumps(msgspec.to_builtins(counts)))
    for label, lengths in (("all targets", counts.target_tokens), ("RoT targets", counts.rot_target_tokens)):
        shown = " ".join(f"{key} {value}" for key, value in lengths.items())
        console.print(f"target tokens, {label}: {shown} (budget {counts.target_token_budget})")
    console.print(
        f"{len(dataset.sft_examples)} SFT examples, {len(dataset.branch_points)} branch points from "
        f"{len(tasks)} tasks → {args.out}"
    )
    return 0


def _lora(args: argparse.Namespace) -> LoraSettings:
    return LoraSettings(rank=args.rank, alpha=args.alpha)


def cmd_sft(args: argparse.Namespace, console: Console) -> int:
    from regrpo.learning.data_engine import Dataset
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.sft import SFTConfig, train_sft

    place = init_from_environment()  # under torchrun: one rank of a data-parallel job
    data = Dataset.load(args.data)
    config = SFTConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lora=_lora(args),
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        max_rot_examples=args.max_rot,
        seed=args.train_seed,
    )
    report = train_sft(_trainable(args, console), data.sft_examples, config, args.out, init_from=args.init)
    if not place.main:
        return 0  # rank 0 reports and writes
    console.print(
        f"SFT: {report.steps} steps on {place.world} rank(s), loss {report.losses[0]:.3f} → "
        f"{report.losses[-1]:.3f}"
    )
    return _finish(args, console, report, "sft")


def _rl_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``regrpo train regrpo`` and ``regrpo train grpo`` share, as config fields."""
    return {
        "group_size": args.group_size,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "beta": args.beta,
        "learning_rate": args.lr,
        "epochs": args.epochs,
        "max_rollouts": args.max_rollouts,
        "lora": _lora(args),
        "seed": args.train_seed,
    }


def cmd_regrpo(args: argparse.Namespace, console: Console) -> int:
    from regrpo.learning.data_engine import Dataset
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.regrpo import ReGRPOConfig, train_regrpo

    place = init_from_environment()  # under torchrun: one rank of a data-parallel job
    tools = chosen_tools(args)  # a wrong --tool fails before anything loads
    data = Dataset.load(args.data)
    points = data.branch_points
    if args.failures_only:
        points = [p for p in points if p.failed]
    config = ReGRPOConfig(
        eta=args.eta,
        needless_reflection_penalty=args.needless_penalty,
        diagnosis_weight=args.diagnosis_weight,
        outcome_max_steps=args.outcome_max_steps,
        outcome_weight=args.outcome_weight,
        kl_on_skipped=not args.no_kl_anchors,
        taken_turn=not args.no_taken_turn,
        stratify=args.stratify,
        max_staleness=args.max_staleness,
        **_rl_settings(args),
    )
    sampler = None
    if args.sample_url:
        from regrpo.agent.openai_policy import OpenAIPolicy

        if not args.sample_model:
            raise InputError("--sample-url needs --sample-model: the name the server serves --init under")
        sampler = OpenAIPolicy(args.sample_url, args.sample_model, api_key=args.sample_key)
    report = train_regrpo(
        _trainable(args, console), points, config, args.out, init_from=args.init, tools=tools, sampler=sampler
    )
    if not place.main:
        return 0  # rank 0 reports and writes
    _print_rl(console, report, place.world)
    if sampler is not None:
        console.print(
            f"sampled on {args.sample_url} ({args.sample_model}): {report.stale_dropped} samples from "
            f"another version dropped{'; stopped at --max-staleness' if report.stopped_for_staleness else ''}"
        )
    return _finish(args, console, report, "regrpo")


def cmd_grpo(args: argparse.Namespace, console: Console) -> int:
    from regrpo.learning.distributed import init_from_environment
    from regrpo.learning.grpo import GRPOConfig, train_grpo

    place = init_from_environment()  # under torchrun: one rank of a data-parallel job
    tasks = select_tasks(args)
    config = GRPOConfig(
        max_steps=args.max_steps, tool_cost=args.tool_cost, fault_rate=args.fault_rate, **_rl_settings(args)
    )
    with open_store(args.store) as store:
        report = train_grpo(_policy(args, console), tasks, config, args.out, store=store, init_from=args.init)
    if not place.main:
        return 0  # rank 0 reports and writes
    _print_rl(console, report, place.world)
    return _finish(args, console, report, report.method)


def _add_outcome_options(parser: argparse.ArgumentParser) -> None:
    """ReGRPO's outcome term (``ReGRPOConfig.outcome_max_steps`` / ``outcome_weight``)."""
    parser.add_argument(
        "--outcome-max-steps",
        type=int,
        default=0,
        help="roll each continuation out to an answer within this many episode turns and add the "
        "verifier's score of it to its reward (0: off; it multiplies the round's generation)",
    )
    parser.add_argument("--outcome-weight", type=float, default=1.0, help="weight of the outcome term")


def cmd_trainer(args: argparse.Namespace, console: Console) -> int:
    """The background trainer: watch the store, train on new failures, gate, promote, hot-swap."""
    import threading

    from regrpo.evaluation.runner import EvalOptions
    from regrpo.learning.daemon import DaemonConfig, TrainerDaemon
    from regrpo.learning.gate import GateConfig
    from regrpo.learning.online import ReGRPORound
    from regrpo.learning.registry import AdapterRegistry
    from regrpo.learning.regrpo import ReGRPOConfig
    from regrpo.tasks.suite import builtin_suite, split
    from regrpo.tasks.task_file import load_task_file

    serving = _serving_engine(args)  # first: a wrong --serve-url is refused before anything is built
    sampler = _engine_sampler(args)
    tools = chosen_tools(args)  # and a wrong --tool or gate rule
    gate = GateConfig(margin=args.margin, rule=args.gate_rule)
    config = ReGRPOConfig(  # and bad round settings, before the model loads
        group_size=args.group_size,
        max_rollouts=args.max_rollouts,
        seed=args.train_seed,
        outcome_max_steps=args.outcome_max_steps,
        outcome_weight=args.outcome_weight,
    )
    if args.no_suite and not args.eval_set:
        raise InputError(
            "--no-suite leaves the gate without tasks: give it yours with --eval-set FILE (its held-out "
            "tasks otherwise come from the built-in suite)"
        )
    train_tasks: list[Any] = []
    held_out: list[Any] = []
    if not args.no_suite:
        train_tasks, held_out = split(
            builtin_suite(
                n=args.tasks, seed=args.seed, cache_dir=args.cache_dir, holdout_fraction=args.holdout_fraction
            ),
            args.holdout_fraction,
            args.seed,
        )
    gate_tasks: list[Any] = load_task_file(args.eval_set) if args.eval_set else held_out
    policy = _policy(args, console)
    registry = AdapterRegistry(args.registry)
    with open_store(args.store) as store:
        round_ = ReGRPORound(
            policy, registry, train_tasks, store, config, warm_start=args.init, sampler=sampler, tools=tools
        )
        daemon = TrainerDaemon(
            store,
            registry,
            policy,
            round_,
            gate_tasks,
            config=DaemonConfig(min_new_failures=args.min_new_failures, feedback_wait_s=args.feedback_wait_s),
            gate=gate,
            options=EvalOptions(
                max_steps=args.max_steps,
                max_new_tokens=args.max_new_tokens,
                concurrency=args.gate_concurrency,
            ),
            serving=serving,
            tools=tools,
        )
        if args.once:
            daemon.start()
            report = daemon.run_once()
            console.print_json(msgspec.json.encode(report).decode())
            return 0 if report.status != "failed" else 1
        console.print(
            f"watching {args.store} every {args.poll_s:.0f} s; registry {args.registry} (Ctrl-C stops)"
        )
        stop = threading.Event()
        try:
            daemon.run_forever(args.poll_s, stop)
        except KeyboardInterrupt:
            stop.set()
    return 0


def _serving_engine(args: argparse.Namespace) -> Any:
    """The ``--serve-url`` engine to promote into (``None``: swap the trainer's own policy)."""
    if not args.serve_url:
        return None
    from regrpo.learning.serving_engine import RegrpoServeEngine, VllmEngine

    if args.serve_kind == "regrpo":
        if len(args.serve_url) > 1:
            raise InputError(
                "--serve-kind regrpo takes one --serve-url (a `regrpo serve` in front of several replicas "
                "pushes to each itself: its --base-url is repeatable); several are for --serve-kind vllm"
            )
        return RegrpoServeEngine(args.serve_url[0], args.serve_key)
    return VllmEngine(
        args.serve_url, args.serve_model or args.model, args.served_name, admin_key=args.serve_key
    )


def _engine_sampler(args: argparse.Namespace) -> Any:
    """``--sample-on-engine``: the first ``--serve-url`` replica under ``--served-name``, to sample on."""
    if not args.sample_on_engine:
        return None
    if not args.serve_url or args.serve_kind != "vllm":
        raise InputError(
            "--sample-on-engine samples on the engine the trainer promotes into: it needs --serve-url "
            "with --serve-kind vllm (vLLM or regrpo serve-model, serving the live version as --served-name)"
        )
    from regrpo.agent.openai_policy import OpenAIPolicy

    return OpenAIPolicy(args.serve_url[0], args.served_name, api_key=args.serve_key)


def _print_rl(console: Console, report: Any, world: int) -> None:
    console.print(
        f"{report.method}: {report.groups} groups ({report.skipped_zero_variance} skipped, zero variance), "
        f"{report.rollouts} rollouts, {report.steps} optimizer steps on {world} rank(s), "
        f"{report.seconds:.0f} s"
    )


def _trainer_options(lr: float, epochs: int = 1) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False, parents=[model_options()])
    options.add_argument("--out", type=Path, required=True, help="folder to write the adapter to")
    options.add_argument("--init", type=Path, help="adapter folder to start from (e.g. the SFT warm start)")
    options.add_argument("--registry", type=Path, help="also commit the adapter to this registry")
    options.add_argument("--lr", type=float, default=lr, help="learning rate")
    options.add_argument("--epochs", type=int, default=epochs)
    options.add_argument("--rank", type=int, default=16, help="LoRA rank")
    options.add_argument("--alpha", type=int, default=32, help="LoRA alpha")
    options.add_argument("--train-seed", type=int, default=0)
    return options


def _rl_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--group-size", type=int, default=5, help="G: samples per group")
    options.add_argument("--temperature", type=float, default=1.0)
    options.add_argument("--beta", type=float, default=0.04, help="KL weight")
    options.add_argument("--max-rollouts", type=int, help="stop after this many sampled model turns")
    return options


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` (with ``data``, ``sft``, ``regrpo``, ``grpo``) to the ``regrpo`` parser."""
    train = commands.add_parser("train", help="build learning data and train LoRA adapters")
    kinds = train.add_subparsers(dest="train_command", required=True)

    data = kinds.add_parser(
        "data",
        parents=[suite_selection_options(48, split="train"), store_options(), tool_options()],
        help="RoT SFT examples and branch points from a suite's reference solutions and near-misses",
    )
    data.add_argument("--out", type=Path, required=True, help="dataset folder")
    data.add_argument("--near-misses", type=int, default=2, help="near-misses kept per reference step")
    data.add_argument(
        "--faults", type=int, default=1, help="reference calls re-run under a transient fault, per step"
    )
    data.add_argument(
        "--target-tokens",
        type=int,
        default=DEFAULT_TARGET_TOKENS,
        help="token budget every SFT target must fit (fails if one does not)",
    )
    data.add_argument("--data-seed", type=int, default=0, help="seeds the perturbations and faults")
    data.add_argument("--traces", action="store_true", help="also mine --store's failed episodes")
    data.add_argument(
        "--rot-continuations",
        action="store_true",
        help="RoT examples go on after the fix through the answer, and train those turns too",
    )
    data.add_argument(
        "--no-suite", action="store_true", help="only --store's episodes (your traffic), no built-in suite"
    )
    data.set_defaults(handler=cmd_data)

    sft = kinds.add_parser(
        "sft", parents=[_trainer_options(2e-4, epochs=2)], help="warm-start a LoRA adapter (SFT)"
    )
    sft.add_argument("--data", type=Path, required=True, help="dataset folder from `regrpo train data`")
    sft.add_argument("--batch-size", type=int, default=8)
    sft.add_argument("--kinds", default="reference,rot", help="'reference' = SFT on successes only")
    sft.add_argument(
        "--max-rot", type=int, help="train on at most this many RoT examples, balanced over error types"
    )
    sft.set_defaults(handler=cmd_sft)

    regrpo = kinds.add_parser(
        "regrpo", parents=[_trainer_options(2e-5), _rl_options(), tool_options()], help="a ReGRPO round"
    )
    regrpo.add_argument("--data", type=Path, required=True, help="dataset folder from `regrpo train data`")
    regrpo.add_argument("--max-new-tokens", type=int, default=128)
    regrpo.add_argument("--eta", type=float, default=0.1, help="reflection cost per 100 reflection tokens")
    regrpo.add_argument("--needless-penalty", type=float, default=0.1, help="penalty for needless reflection")
    regrpo.add_argument("--diagnosis-weight", type=float, default=0.25)
    regrpo.add_argument("--failures-only", action="store_true", help="skip clean branch points")
    _add_outcome_options(regrpo)
    regrpo.add_argument(
        "--stratify",
        action="store_true",
        help="visit points round-robin over (target tool, source) strata, so a capped round sees each",
    )
    regrpo.add_argument(
        "--no-taken-turn",
        action="store_true",
        help="sample traffic points' groups only (default: the turn the served model really took "
        "there joins its group, scored by where its episode ended)",
    )
    regrpo.add_argument(
        "--no-kl-anchors",
        action="store_true",
        help="leave skipped groups out of the loss (default: they enter at advantage 0, "
        "so their KL term holds them)",
    )
    regrpo.add_argument(
        "--sample-url",
        help="sample the groups on this OpenAI-compatible server (vLLM, regrpo serve-model) serving --init; "
        "this process only scores and trains",
    )
    regrpo.add_argument("--sample-model", help="the model name that server serves --init under")
    regrpo.add_argument("--sample-key", help="Bearer key for --sample-url")
    regrpo.add_argument(
        "--max-staleness",
        type=int,
        default=8,
        help="with --sample-url: optimizer steps past the served version before sampling stops",
    )
    regrpo.set_defaults(handler=cmd_regrpo)

    grpo = kinds.add_parser(
        "grpo",
        parents=[_trainer_options(2e-5), _rl_options(), suite_selection_options(48, split="train")],
        help="the trajectory-level GRPO baseline",
    )
    grpo.add_argument(
        "--max-steps", type=int, default=6, help="turns per rollout episode (as `regrpo eval` and `serve`)"
    )
    grpo.add_argument("--max-new-tokens", type=int, default=128)
    grpo.add_argument("--tool-cost", action="store_true", help="OTC-GRPO's tool-call reward")
    grpo.add_argument("--fault-rate", type=float, default=0.0, help="injected tool faults during rollouts")
    grpo.set_defaults(handler=cmd_grpo)

    trainer = commands.add_parser(
        "trainer",
        parents=[model_options(), tool_options()],
        help="background trainer: learn from new failures in the store, gate, promote, hot-swap",
    )
    trainer.add_argument("--registry", type=Path, required=True, help="adapter registry folder")
    trainer.add_argument("--init", type=Path, help="warm-start adapter used while the base model is live")
    trainer.add_argument("--min-new-failures", type=int, default=8, help="failed episodes that start a round")
    trainer.add_argument(
        "--feedback-wait-s",
        type=float,
        default=0.0,
        help="seconds the trainer waits after a traffic episode answered for feedback naming a wrong answer",
    )
    trainer.add_argument("--poll-s", type=float, default=60.0, help="seconds between polls of the store")
    trainer.add_argument("--once", action="store_true", help="poll once, print what happened, exit")
    trainer.add_argument(
        "--tasks",
        type=int,
        default=640,
        help="built-in suite size, train and held-out (640 holds out 160; the gate's paired test needs 155)",
    )
    trainer.add_argument(
        "--no-suite",
        action="store_true",
        help="learn only from the store's traffic: no built-in suite tasks (their near-misses fill a round "
        "otherwise); needs --eval-set",
    )
    trainer.add_argument(
        "--eval-set",
        type=Path,
        help="the gate's tasks: a task file (JSONL, docs/task_suite.md), not the suite's held-out split",
    )
    trainer.add_argument(
        "--serve-url",
        action="append",
        help="promote into this serving engine (verified there before a version counts as live); "
        "repeat for each data-parallel vLLM replica: the swap is pushed to and verified on every one",
    )
    trainer.add_argument(
        "--serve-kind",
        choices=("regrpo", "vllm"),
        default="regrpo",
        help="regrpo: a `regrpo serve --registry-dir` on this registry; vllm: vLLM's LoRA routes",
    )
    trainer.add_argument(
        "--serve-key", help="the engine's admin key (regrpo serve --admin-key, vLLM --api-key)"
    )
    trainer.add_argument("--serve-model", help="vllm: the base model's name there (default: --model)")
    trainer.add_argument(
        "--served-name", default="regrpo-live", help="vllm: the adapter name clients send as model"
    )
    trainer.add_argument(
        "--sample-on-engine",
        action="store_true",
        help="vllm: sample each round's groups on the engine (n=G, its token ids) while it serves the live "
        "version; this process only scores and trains",
    )
    trainer.add_argument("--seed", type=int, default=0, help="suite and split seed")
    trainer.add_argument("--holdout-fraction", type=float, default=0.25, help="share held out for the gate")
    trainer.add_argument(
        "--margin", type=float, default=0.0, help="success the paired CI's lower bound must beat live by"
    )
    trainer.add_argument(
        "--gate-rule",
        choices=("paired_ci", "any_improvement"),
        default="paired_ci",
        help="paired_ci: the paired test's CI must clear --margin (needs 155 tasks); any_improvement: a "
        "point gain is enough — NOT a statistical test, for task sets too small to test anything",
    )
    trainer.add_argument("--group-size", type=int, default=5)
    trainer.add_argument("--max-rollouts", type=int, default=80, help="sampled continuations per round")
    trainer.add_argument(
        "--max-steps",
        type=int,
        default=6,
        help="gate evaluation: turns per episode (as served; at 4 a retry leaves no turn to answer)",
    )
    trainer.add_argument("--max-new-tokens", type=int, default=128, help="gate evaluation: tokens per turn")
    trainer.add_argument(
        "--gate-concurrency", type=int, default=1, help="gate evaluation: episodes in flight at once"
    )
    trainer.add_argument("--train-seed", type=int, default=0)
    _add_outcome_options(trainer)
    trainer.set_defaults(handler=cmd_trainer)
