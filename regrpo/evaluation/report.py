"""Write an evaluation report (JSON + Markdown + PNG charts), read it back, and compare two reports.

``write_report(report, out_dir)`` produces:

- ``report.json``: the whole :class:`~regrpo.evaluation.records.EvalReport` (settings, summaries,
  every episode with its trace id), readable with :func:`read_report`;
- ``report.md``: the summary table by category, then the settings;
- ``success_by_category.png`` and ``episode_costs.png`` (tool calls and reflection tokens per episode).

``write_comparison(a, b, out_dir)`` puts two reports side by side (``comparison.md`` with deltas,
then the paired test of success on the tasks both ran, :mod:`regrpo.evaluation.paired`;
``comparison.png``). Files are written to a temporary name and renamed, so a crash mid-write never
leaves a truncated report that looks complete. Charts use matplotlib's non-interactive Agg backend
(no display on servers and CI).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from regrpo.errors import InputError
from regrpo.evaluation.paired import PairedComparison, compare_reports
from regrpo.evaluation.records import EvalReport, GroupSummary

__all__ = [
    "comparison_markdown",
    "read_report",
    "report_markdown",
    "report_rows",
    "write_comparison",
    "write_learning_curve",
    "write_report",
]

# (column title, how to read it off a summary, how to print it)
_COLUMNS: list[tuple[str, Callable[[GroupSummary], float | None], str]] = [
    ("episodes", lambda s: s.episodes, "{:.0f}"),
    ("success", lambda s: s.success_rate, "{:.0%}"),
    ("tool calls/ep", lambda s: s.tool_calls_per_episode, "{:.2f}"),
    ("tool-failure rate", lambda s: s.tool_failure_rate, "{:.0%}"),
    ("recovery", lambda s: s.recovery_rate, "{:.0%}"),
    ("reflections/ep", lambda s: s.reflections_per_episode, "{:.2f}"),
    ("reflection tokens/ep", lambda s: s.reflection_tokens_per_episode, "{:.1f}"),
    ("p50 latency s", lambda s: s.latency_p50_s, "{:.2f}"),
]


def _cell(value: float | None, form: str) -> str:
    return "n/a" if value is None else form.format(value)


def report_rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """The summary table as text: headers, then one row per category and a final ``all`` row."""
    headers = ["category", *(title for title, _, _ in _COLUMNS)]
    groups = [*report.by_category.items(), ("all", report.overall)]
    rows = [[name, *(_cell(read(summary), form) for _, read, form in _COLUMNS)] for name, summary in groups]
    return headers, rows


def report_markdown(report: EvalReport) -> str:
    """The report as Markdown: a summary table (one row per category, then all) and the settings."""
    headers, rows = report_rows(report)
    lines = [
        f"# Evaluation: {report.label}",
        "",
        f"Model `{report.model}`, adapter `{report.adapter or 'none'}`, {report.overall.episodes} episodes.",
        "",
        "| " + " | ".join(headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    lines += [
        "",
        "Recovery: episodes with a failed tool call that still ended correct.",
        "",
        "## Settings",
        "",
    ]
    lines += [f"- `{key}`: `{value}`" for key, value in sorted(report.settings.items())]
    return "\n".join(lines) + "\n"


def _paired_lines(a: EvalReport, b: EvalReport) -> list[str]:
    """The paired test of ``b − a`` success as Markdown bullets, or why the two reports do not pair."""
    try:
        paired: PairedComparison = compare_reports(a, b)
    except InputError as exc:
        return [f"- not available: {exc}"]
    level = f"{paired.test.confidence:.0%}"
    lines = [
        f"- success {paired.rate_a:.1%} → {paired.rate_b:.1%} on {paired.n_tasks} paired tasks: "
        f"**{100 * paired.difference:+.1f} points** ({level} CI {100 * paired.ci_low:+.1f} to "
        f"{100 * paired.ci_high:+.1f}; Newcombe)",
        f"- discordant tasks: {paired.b_only} solved only by {b.label}, {paired.a_only} only by {a.label}",
        f"- exact McNemar p = {paired.p_value:.3g}",
        f"- verdict: **{paired.verdict}**",
    ]
    if paired.verdict == "too_few_tasks":
        lines.append(
            f"- a paired test needs {paired.tasks_needed} tasks to detect "
            f"{100 * paired.test.effect:.0f} points at power {paired.test.power:.0%}; "
            "no difference is called on fewer"
        )
    return lines


def comparison_markdown(a: EvalReport, b: EvalReport) -> str:
    """Two reports side by side (each metric per category as ``a → b (delta)``), then the paired test."""
    lines = [
        f"# Comparison: {a.label} → {b.label}",
        "",
        "| category | metric | " + f"{a.label} | {b.label} | change |",
        "|---|---|---:|---:|---:|",
    ]
    names = sorted(set(a.by_category) | set(b.by_category))
    for name in [*names, "all"]:
        left = a.overall if name == "all" else a.by_category.get(name)
        right = b.overall if name == "all" else b.by_category.get(name)
        for title, read, form in _COLUMNS[1:]:
            x = read(left) if left else None
            y = read(right) if right else None
            change = "n/a" if x is None or y is None else ("+" if y >= x else "") + form.format(y - x)
            lines.append(f"| {name} | {title} | {_cell(x, form)} | {_cell(y, form)} | {change} |")
    lines += [
        "",
        f"## Paired comparison of success ({b.label} − {a.label}, same tasks)",
        "",
        *_paired_lines(a, b),
    ]
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out_dir: str | Path) -> Path:
    """Write ``report.json``, ``report.md`` and the charts into ``out_dir`` (created); return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "report.json", msgspec.json.format(msgspec.json.encode(report), indent=2))
    _write_atomic(out / "report.md", report_markdown(report).encode())
    _success_chart([report], out / "success_by_category.png")
    _cost_chart(report, out / "episode_costs.png")
    return out


def write_comparison(a: EvalReport, b: EvalReport, out_dir: str | Path) -> Path:
    """Write ``comparison.md`` and ``comparison.png`` (success by category); return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "comparison.md", comparison_markdown(a, b).encode())
    _success_chart([a, b], out / "comparison.png")
    return out


def read_report(path: str | Path) -> EvalReport:
    """Read a ``report.json`` (or the folder holding one) written by :func:`write_report`."""
    file = Path(path)
    if file.is_dir():
        file = file / "report.json"
    if not file.is_file():
        raise InputError(
            f"no evaluation report at {str(file)!r}: pass a report.json or the folder holding one"
        )
    try:
        return msgspec.json.decode(file.read_bytes(), type=EvalReport)
    except msgspec.DecodeError as exc:
        raise InputError(f"{str(file)!r} is not an evaluation report written by regrpo: {exc}") from exc


def _replace_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write`` on a temporary file beside ``path`` (same suffix), then rename it over ``path``."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)  # only still there when write or rename failed


def _write_atomic(path: Path, data: bytes) -> None:
    _replace_atomically(path, lambda temp: Path(temp).write_bytes(data))


def _figure():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:  # type: ignore[no-untyped-def]
    _replace_atomically(path, lambda temp: figure.savefig(temp, dpi=120, bbox_inches="tight"))


def _success_chart(reports: list[EvalReport], path: Path) -> None:
    plt = _figure()
    names = sorted({name for report in reports for name in report.by_category}) + ["all"]
    width = 0.8 / len(reports)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 3.6))
    for i, report in enumerate(reports):
        summaries = [report.overall if name == "all" else report.by_category.get(name) for name in names]
        values = [summary.success_rate if summary else 0.0 for summary in summaries]
        positions = [x + (i - (len(reports) - 1) / 2) * width for x in range(len(names))]
        axes.bar(positions, [100 * v for v in values], width=width, label=report.label)
    axes.set_xticks(range(len(names)), names, rotation=20)
    axes.set_ylabel("task success (%)")
    axes.set_ylim(0, 100)
    axes.legend()
    axes.set_title("Success by category")
    _save(figure, path)
    plt.close(figure)


def _cost_chart(report: EvalReport, path: Path) -> None:
    plt = _figure()
    figure, (calls, tokens) = plt.subplots(1, 2, figsize=(9, 3.2))
    tool_calls = [e.tool_calls for e in report.episodes]
    calls.hist(tool_calls, bins=range(0, max(tool_calls, default=0) + 2))
    calls.set_xlabel("tool calls per episode")
    calls.set_ylabel("episodes")
    tokens.hist([e.reflection_tokens for e in report.episodes], bins=10)
    tokens.set_xlabel("reflection tokens per episode")
    figure.suptitle(report.label)
    _save(figure, path)
    plt.close(figure)


def write_learning_curve(stages: Sequence[tuple[str, float]], path: str | Path, *, title: str = "") -> Path:
    """A line chart of task success (%) over learning stages (``[("base", 0.0), ("v0001", 0.5), ...]``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    plt = _figure()
    figure, axes = plt.subplots(figsize=(max(5.0, 1.4 * len(stages)), 3.4))
    axes.plot(range(len(stages)), [100 * value for _, value in stages], marker="o")
    axes.set_xticks(range(len(stages)), [name for name, _ in stages], rotation=15)
    axes.set_ylabel("task success (%)")
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.set_title(title or "Learning curve (held-out tasks)")
    _save(figure, target)
    plt.close(figure)
    return target
