"""Print the results table of docs/results.md from evaluation reports, and draw its chart.

Usage: ``python scripts/results_table.py RUNS_DIR [--chart docs/results.png]`` where ``RUNS_DIR`` holds
the report folders written by ``regrpo eval --out RUNS_DIR/eval-f<rate>-<method>`` (the commands are
in docs/results.md). Methods are listed in the order below; missing runs are printed as "not run".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from regrpo.evaluation import read_report
from regrpo.evaluation.records import EvalReport

METHODS = ["base", "sft-successes", "rot-sft", "grpo", "regrpo", "regrpo-nocost"]
RATES = ["0.2", "0"]


def _row(method: str, rate: str, report: EvalReport | None) -> str:
    if report is None:
        return f"| {method} | {rate} | not run | | | | |"
    s = report.overall
    recovery = f"{s.recovery_rate:.0%} ({s.episodes_with_failure})" if s.recovery_rate is not None else "n/a"
    return (
        f"| {method} | {rate} | {s.success_rate:.0%} ({round(s.success_rate * s.episodes)}/{s.episodes}) | "
        f"{recovery} | {s.tool_calls_per_episode:.2f} | {s.reflection_tokens_per_episode:.1f} | "
        f"{s.latency_mean_s:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--chart", type=Path)
    args = parser.parse_args()
    reports: dict[tuple[str, str], EvalReport] = {}
    for rate in RATES:
        for method in METHODS:
            folder = args.runs / f"eval-f{rate}-{method}"
            if (folder / "report.json").is_file():
                reports[(method, rate)] = read_report(folder)
    print(
        "| method | fault rate | success | recovery (episodes with a failed call) | tool calls/ep "
        "| reflection tokens/ep | s/ep |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for rate in RATES:
        for method in METHODS:
            print(_row(method, rate, reports.get((method, rate))))
    if args.chart:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(8, 3.4))
        width = 0.38
        for i, rate in enumerate(RATES):
            values = [
                100 * reports[(m, rate)].overall.success_rate if (m, rate) in reports else 0 for m in METHODS
            ]
            axes.bar(
                [x + (i - 0.5) * width for x in range(len(METHODS))], values, width, label=f"faults {rate}"
            )
        axes.set_xticks(range(len(METHODS)), METHODS, rotation=15)
        axes.set_ylabel("held-out task success (%)")
        axes.set_ylim(0, 100)
        axes.legend()
        figure.savefig(args.chart, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
