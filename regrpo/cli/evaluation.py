"""``regrpo eval`` (measure an agent on a task set) and ``regrpo compare`` (two reports side by side).

The task-selection options and the tables live here too; ``regrpo demo`` (cli/demo.py) reuses them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from regrpo.cli.common import (
    adapter_options,
    agent_options,
    chosen_adapter,
    chosen_tools,
    confidence_trigger_option,
    make_policy,
    store_options,
    tool_options,
)
from regrpo.errors import InputError
from regrpo.evaluation import EvalOptions, EvalReport, evaluate, read_report, write_comparison, write_report
from regrpo.evaluation.paired import PairedComparison, compare_reports
from regrpo.evaluation.report import report_rows
from regrpo.evaluation.seeds import compare_seed_reports
from regrpo.paths import default_cache_dir
from regrpo.traces import open_store

__all__ = ["register"]


def summary_table(report: EvalReport) -> Table:
    """The report's summary (one row per category, then all) as a rich table."""
    headers, rows = report_rows(report)
    table = Table(title=f"{report.label} · {report.model} · adapter {report.adapter or 'none'}")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    return table


def episode_table(report: EvalReport) -> Table:
    """One row per episode: what the agent answered against what was expected."""
    table = Table(title="episodes")
    for column in (
        "task",
        "category",
        "status",
        "steps",
        "tools",
        "fails",
        "refl.",
        "answer",
        "expected",
        "ok",
    ):
        table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=24)
    for e in report.episodes:
        table.add_row(
            e.task_id,
            e.category,
            e.status,
            str(e.steps),
            str(e.tool_calls),
            str(e.tool_failures),
            str(e.reflections),
            (e.answer or "—")[:24],
            e.expected[:24],
            "✓" if e.correct else "✗",
        )
    return table


def select_tasks(args: argparse.Namespace) -> list[Any]:
    """The tasks that :func:`suite_selection_options` chose: suite, split, categories, limit."""
    from regrpo.tasks.gta import load_gta
    from regrpo.tasks.suite import builtin_suite, load_suite, split
    from regrpo.tasks.task_file import load_task_file

    tasks: list[Any]
    task_file = bool(args.suite) and Path(args.suite).expanduser().is_file()
    if args.suite and args.suite.startswith("gta:"):
        tasks = load_gta(args.suite.removeprefix("gta:"), objective_only=True)
    elif task_file:
        if args.split != "all":
            raise InputError(
                f"--split {args.split} splits the built-in suite; a task file is used whole "
                "(pass --split all)"
            )
        tasks = load_task_file(args.suite)
    elif args.suite:
        tasks = load_suite(args.suite)
    else:
        tasks = builtin_suite(
            n=args.tasks, seed=args.seed, cache_dir=args.cache_dir, holdout_fraction=args.holdout_fraction
        )
    if args.categories:
        wanted = {c.strip() for c in args.categories.split(",") if c.strip()}
        known = {t.category for t in tasks}
        if unknown := wanted - known:
            raise InputError(f"unknown categories {sorted(unknown)}; this suite has {sorted(known)}")
        tasks = [t for t in tasks if t.category in wanted]
    if args.split != "all":
        train, held_out = split(tasks, args.holdout_fraction, seed=args.seed)  # type: ignore[arg-type]
        tasks = train if args.split == "train" else held_out
    return tasks[: args.limit] if args.limit else tasks


def _evaluate(args: argparse.Namespace, console: Console, label: str) -> EvalReport:
    tasks = select_tasks(args)
    options = EvalOptions(
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        concurrency=args.concurrency,
        fault_rate=args.fault_rate,
        fault_seed=args.fault_seed,
        reflect=not args.no_reflect,
        confidence_trigger=args.confidence_trigger,
    )
    adapter = chosen_adapter(args)  # before the model loads: a bad --adapter or --tool fails fast
    tools = chosen_tools(args)
    policy = make_policy(args, console)
    with open_store(args.store) as store:
        report = evaluate(
            policy, tasks, store=store, options=options, tools=tools, adapter=adapter, label=label
        )
    write_report(report, args.out)
    return report


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    report = _evaluate(args, console, args.label or "eval")
    console.print(summary_table(report))
    console.print(
        f"report: {Path(args.out) / 'report.md'} (and report.json, charts) · traces in {args.store}"
    )
    return 0


def paired_lines(paired: PairedComparison) -> list[str]:
    """The paired test of ``after − before`` success: difference and CI, discordant tasks, p, verdict."""
    before, after = paired.labels
    level = f"{paired.test.confidence:.0%}"
    verdict: str = paired.verdict
    if verdict == "too_few_tasks":
        verdict += (
            f" (a paired test needs {paired.tasks_needed} tasks to detect {100 * paired.test.effect:.0f} "
            f"points at power {paired.test.power:.0%})"
        )
    return [
        f"paired on {paired.n_tasks} tasks: success {paired.rate_a:.1%} → {paired.rate_b:.1%}, "
        f"{100 * paired.difference:+.1f} points ({level} CI {100 * paired.ci_low:+.1f} to "
        f"{100 * paired.ci_high:+.1f})",
        f"discordant tasks: {paired.b_only} solved only by {after}, {paired.a_only} only by {before} · "
        f"exact McNemar p = {paired.p_value:.3g}",
        f"verdict: {verdict}",
    ]


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    before, after = _runs(args.before), _runs(args.after)
    if len(before) > 1 or len(after) > 1:
        return _compare_seeds(before, after, args.out, console)
    a, b = read_report(before[0]), read_report(after[0])
    if a.label == b.label:  # e.g. both "eval": name the sides by their folders, as the seed comparison does
        a = msgspec.structs.replace(a, label=_run_name(before[0]))
        b = msgspec.structs.replace(b, label=_run_name(after[0]))
    out = write_comparison(a, b, args.out)
    console.print(summary_table(a))
    console.print(summary_table(b))
    try:
        paired = compare_reports(a, b)
    except InputError as exc:  # different task sets: the side-by-side tables still stand
        console.print(f"[yellow]no paired comparison:[/] {escape(str(exc))}")
    else:
        for line in paired_lines(paired):
            console.print(escape(line))
    console.print(f"comparison: {out / 'comparison.md'} and {out / 'comparison.png'}")
    return 0


def _runs(argument: str) -> list[str]:
    """The report folders one side of ``regrpo compare`` names: one, or several seeds comma-separated."""
    runs = [part.strip() for part in argument.split(",") if part.strip()]
    if not runs:
        raise InputError(f"no report named in {argument!r}: pass a report folder, or several comma-separated")
    return runs


def _compare_seeds(before: list[str], after: list[str], out: Path, console: Console) -> int:
    """Two methods over their training seeds (:mod:`regrpo.evaluation.seeds`); writes seeds.json."""
    a_reports, b_reports = [read_report(r) for r in before], [read_report(r) for r in after]
    names = ([_run_name(r) for r in before], [_run_name(r) for r in after])
    labels = (_method_label(names[0]), _method_label(names[1]))
    compared = compare_seed_reports(a_reports, b_reports, labels=labels)
    for label, runs, rates in zip(labels, names, (compared.rates_a, compared.rates_b), strict=True):
        shown = ", ".join(f"{run} {rate:.1%}" for run, rate in zip(runs, rates, strict=True))
        console.print(escape(f"{label}: {shown}"))
    console.print(escape(compared.summary()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_bytes(msgspec.json.format(msgspec.json.encode(compared)))
    console.print(f"comparison: {out / 'seeds.json'}")
    return 0


def _run_name(path: str) -> str:
    """A run's name: its report's folder (evaluation labels are often all ``eval``)."""
    folder = Path(path) if not path.endswith(".json") else Path(path).parent
    return folder.resolve().name


def _method_label(names: list[str]) -> str:
    """A method's label: its first run's name, and how many more runs there are."""
    return names[0] + (f" +{len(names) - 1}" if len(names) > 1 else "")


def suite_selection_options(tasks: int, split: str = "all") -> argparse.ArgumentParser:
    """``--suite``, ``--tasks``, ``--seed``, ``--categories``, ``--split``, ``--limit``: which tasks."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--suite",
        help="a suite folder, a task file (JSONL: docs/task_suite.md, 'Your own tasks'), or gta:PATH for "
        "a GTA dataset.json (default: the built-in suite, made once)",
    )
    options.add_argument("--tasks", type=int, default=tasks, help="size of the built-in suite to generate")
    options.add_argument("--seed", type=int, default=0, help="seed of the built-in suite (and of the split)")
    options.add_argument("--categories", help="comma-separated categories to keep")
    options.add_argument(
        "--split",
        choices=("all", "train", "holdout"),
        default=split,
        help="which part of the seeded per-category split to use (training reads train, gates read holdout)",
    )
    options.add_argument(
        "--holdout-fraction", type=float, default=0.25, help="share of each category held out"
    )
    options.add_argument("--limit", type=int, help="use only the first N tasks")
    return options


def _suite_options(tasks: int, max_steps: int, max_new_tokens: int, out: Path) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(
        add_help=False,
        parents=[
            agent_options(max_steps, max_new_tokens),
            adapter_options(),
            tool_options(),
            suite_selection_options(tasks),
        ],
    )
    options.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability a tool call is made to fail"
    )
    options.add_argument("--fault-seed", type=int, default=0)
    options.add_argument("--concurrency", type=int, default=2, help="episodes in flight at once")
    options.add_argument("--no-reflect", action="store_true", help="plain retries, no Reflection-of-Thought")
    confidence_trigger_option(options)
    options.add_argument("--out", type=Path, default=out, help="report folder")
    return options


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``eval`` and ``compare`` to the ``regrpo`` parser."""
    reports = default_cache_dir() / "reports"
    evaluation = commands.add_parser(
        "eval", parents=[_suite_options(48, 6, 128, reports / "eval")], help="measure an agent on a task set"
    )
    evaluation.add_argument("--label", help="name of this run in reports and comparisons")
    evaluation.set_defaults(handler=cmd_eval)

    compare = commands.add_parser("compare", parents=[store_options()], help="compare two evaluation reports")
    compare.add_argument(
        "before",
        help="report.json (or its folder) of the first run; several comma-separated: one method's seeds",
    )
    compare.add_argument(
        "after",
        help="report.json (or its folder) of the second run; several comma-separated: the other method's "
        "seeds, compared over tasks and seeds (docs/results.md)",
    )
    compare.add_argument("--out", type=Path, default=reports / "comparison")
    compare.set_defaults(handler=cmd_compare)
