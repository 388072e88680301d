"""Print the results table of docs/results.md from evaluation reports, and draw its chart.

Usage: ``python scripts/results_table.py RUNS_DIR [--chart docs/results.png]`` where ``RUNS_DIR`` holds
the report folders written by ``regrpo eval --out RUNS_DIR/eval-f<rate>-s<fault seed>-<method>[-t<train
seed>]`` (the commands are in docs/results.md; no ``-t`` means training seed 0). A row pools every run
of one method at one fault rate: success is the mean over runs (each run's count in brackets, as
``t<train seed>s<fault seed>``), the other columns are over all pooled episodes.
Methods are listed in the order below; missing runs are printed as "not run".
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from regrpo.evaluation import read_report
from regrpo.evaluation.records import EvalReport, summarise

METHODS = ["base", "sft-successes", "rot-sft", "grpo", "regrpo", "regrpo-nocost"]
RATES = ["0", "0.2"]
RUN_FOLDER = re.compile(r"eval-f(?P<rate>[0-9.]+)-s(?P<seed>\d+)-(?P<method>.+?)(?:-t(?P<train>\d+))?")
Runs = dict[tuple[str, str], list[tuple[str, EvalReport]]]
"""(method, fault rate) -> [(run name ``t<train seed>s<fault seed>``, report)]."""


def _runs(root: Path) -> Runs:
    """Reports by (method, fault rate), in run-name order."""
    runs: Runs = {}
    for folder in sorted(root.iterdir()):
        match = RUN_FOLDER.fullmatch(folder.name)
        if match and (folder / "report.json").is_file():
            key = (match["method"], match["rate"])
            name = f"t{match['train'] or 0}s{match['seed']}"
            runs.setdefault(key, []).append((name, read_report(folder)))
    return {key: sorted(value, key=lambda run: run[0]) for key, value in runs.items()}


def _success(runs: list[tuple[str, EvalReport]]) -> tuple[float, float]:
    """Mean and sample sd of the runs' success rates (sd 0 for a single run)."""
    rates = [report.overall.success_rate for _, report in runs]
    return statistics.mean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0


def _solved(report: EvalReport) -> int:
    return sum(episode.correct for episode in report.episodes)


def _row(method: str, rate: str, runs: list[tuple[str, EvalReport]]) -> str:
    if not runs:
        return f"| {method} | {rate} | not run | | | | | |"
    mean, sd = _success(runs)
    per_seed = ", ".join(f"{name} {_solved(r)}/{r.overall.episodes}" for name, r in runs)
    spread = f" ± {sd:.0%}" if len(runs) > 1 else ""
    pooled = summarise([episode for _, report in runs for episode in report.episodes])
    recovery = "n/a"
    if pooled.recovery_rate is not None:
        recovery = f"{pooled.recovery_rate:.0%} ({pooled.episodes_with_failure})"
    return (
        f"| {method} | {rate} | {mean:.0%}{spread} ({per_seed}) | {recovery} | "
        f"{pooled.tool_calls_per_episode:.2f} | {pooled.tool_failure_rate:.0%} | "
        f"{pooled.reflection_tokens_per_episode:.1f} | {pooled.latency_mean_s:.0f} |"
    )


def _chart(runs: Runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.4))
    width = 0.38
    for i, rate in enumerate(RATES):
        xs = [x + (i - 0.5) * width for x in range(len(METHODS))]
        stats = [_success(runs[(m, rate)]) if (m, rate) in runs else (0.0, 0.0) for m in METHODS]
        means, errors = [100 * mean for mean, _ in stats], [100 * sd for _, sd in stats]
        axes.bar(xs, means, width, yerr=errors, capsize=3, label=f"faults {rate}")
    axes.set_xticks(range(len(METHODS)), METHODS, rotation=15)
    axes.set_ylabel("held-out task success (%)")
    axes.set_ylim(0, 100)
    axes.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--chart", type=Path)
    args = parser.parse_args()
    runs = _runs(args.runs)
    print(
        "| method | fault rate | success: mean ± sd over seeds (per seed) "
        "| recovery (episodes with a failed call) | tool calls/ep | tool-failure rate "
        "| reflection tokens/ep | s/ep |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for rate in RATES:
        for method in METHODS:
            print(_row(method, rate, runs.get((method, rate), [])))
    if args.chart:
        _chart(runs, args.chart)


if __name__ == "__main__":
    main()
