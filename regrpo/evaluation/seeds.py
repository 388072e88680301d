"""Two training methods, each run with several training seeds, on the same tasks: is B better than A?

:mod:`regrpo.evaluation.paired` compares two *runs*. A method is more than one run: the same recipe
trained with another seed lands elsewhere (this project's GRPO rounds from one warm start scored
−0.0, −3.3 and −8.3 points against it), so "ReGRPO beats GRPO" is a claim about the recipes, and its
uncertainty has two sources — which tasks were drawn, and which seeds.

Every run of both methods is evaluated on the same ``n`` tasks (same suite, split, ``--limit`` and
fault seed). For task ``t`` let ``ā_t`` and ``b̄_t`` be the share of A's and B's seeds that solved it;
the estimate is

    d = mean_t (b̄_t − ā_t)        (= B's seed-averaged success rate − A's)

**The interval: a two-way percentile bootstrap** over tasks and seeds, as rliable does for RL
results (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"): each resample
draws ``n`` tasks with replacement, and for each method as many seeds as it has, with replacement,
and recomputes ``d``. Resampling the seeds is what lets the interval widen when the seeds disagree;
with one seed per method it is the ordinary paired bootstrap over tasks. No closed form covers the
seed term, which is why this module resamples where :mod:`~regrpo.evaluation.paired` does not; the
resampling is seeded (``PairedSeeds.bootstrap_seed``), so the same reports always give the same
interval. Beside it, :attr:`SeedComparison.pairwise` holds every (A seed, B seed) difference, so a
reader sees whether the sign depends on the pairing.

**Verdict**: ``too_few_seeds`` while a method has fewer than ``min_seeds`` runs (3: issue 11's bar),
``too_few_tasks`` below the paired test's task count (:class:`~regrpo.evaluation.paired.PairedTest`,
155 for a 10-point effect), else ``better`` / ``worse`` / ``no_difference`` by the interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec
import numpy as np

from regrpo.errors import InputError
from regrpo.evaluation.paired import PairedTest, check_same_fault_seed, interval_verdict, report_outcomes
from regrpo.evaluation.records import EvalReport

__all__ = ["PairedSeeds", "SeedComparison", "SeedVerdict", "compare_seed_outcomes", "compare_seed_reports"]

SeedVerdict = Literal["better", "worse", "no_difference", "too_few_tasks", "too_few_seeds"]


class PairedSeeds(msgspec.Struct, frozen=True):
    """How a comparison across training seeds is run and read (module docstring)."""

    test: PairedTest = PairedTest()
    """Level of the interval and the tasks needed (``test.tasks_needed``)."""
    min_seeds: int = 3
    """Runs each method needs before the verdict can be more than ``too_few_seeds``."""
    resamples: int = 10_000
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        if self.min_seeds < 1 or self.resamples < 100:
            raise InputError(
                f"need min_seeds >= 1 and resamples >= 100, got {self.min_seeds} and {self.resamples}"
            )


class SeedComparison(msgspec.Struct, frozen=True):
    """Method B against method A over their seeds, on the same tasks."""

    labels: tuple[str, str]
    n_tasks: int
    seeds: tuple[int, int]
    """Runs of A and of B."""
    rates_a: list[float]
    """Success rate of each of A's runs."""
    rates_b: list[float]
    difference: float
    """B's seed-averaged success rate − A's (0.1 = 10 points)."""
    ci_low: float
    ci_high: float
    pairwise: list[list[float]]
    """``pairwise[i][j]``: B's run ``j`` − A's run ``i``."""
    verdict: SeedVerdict
    settings: PairedSeeds

    def summary(self) -> str:
        """One line: the difference, its interval, the pairwise range, the verdict."""
        a, b = self.labels
        flat = [d for row in self.pairwise for d in row]
        level = f"{self.settings.test.confidence:.0%}"
        runs = [f"{n} seed{'s' if n != 1 else ''}" for n in self.seeds]
        line = (
            f"{b} ({runs[1]}) − {a} ({runs[0]}): {100 * self.difference:+.1f} "
            f"points ({level} CI {100 * self.ci_low:+.1f} to {100 * self.ci_high:+.1f}, tasks and seeds "
            f"resampled) on {self.n_tasks} tasks; seed pairs {100 * min(flat):+.1f} to "
            f"{100 * max(flat):+.1f}; verdict: {self.verdict}"
        )
        if self.verdict == "too_few_seeds":
            line += f" (each method needs {self.settings.min_seeds})"
        elif self.verdict == "too_few_tasks":
            line += f" (the paired test needs {self.settings.test.tasks_needed} tasks)"
        return line


def compare_seed_outcomes(
    a_runs: Sequence[Mapping[str, bool]],
    b_runs: Sequence[Mapping[str, bool]],
    settings: PairedSeeds | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> SeedComparison:
    """Compare ``{task_id: solved}`` runs of two methods; every run must hold the same tasks."""
    settings = settings or PairedSeeds()
    if not a_runs or not b_runs:
        raise InputError(f"each method needs at least one run, got {len(a_runs)} and {len(b_runs)}")
    tasks = sorted(a_runs[0])
    for label, runs in zip(labels, (a_runs, b_runs), strict=True):
        for index, run in enumerate(runs):
            if sorted(run) != tasks:
                raise InputError(
                    f"run {index + 1} of {label!r} holds {len(run)} tasks, not the {len(tasks)} of "
                    f"{labels[0]!r}'s first run; every run needs the same tasks (suite, split, --limit)"
                )
    if not tasks:
        raise InputError("the runs hold no task")
    a = np.array([[run[t] for t in tasks] for run in a_runs], dtype=float)  # seeds × tasks
    b = np.array([[run[t] for t in tasks] for run in b_runs], dtype=float)
    difference = float(b.mean() - a.mean())
    rng = np.random.default_rng(settings.bootstrap_seed)
    picked_tasks = rng.integers(0, len(tasks), size=(settings.resamples, len(tasks)))
    picked_a = rng.integers(0, len(a), size=(settings.resamples, len(a)))
    picked_b = rng.integers(0, len(b), size=(settings.resamples, len(b)))
    # per resample: the drawn seeds' mean success on each drawn task, B − A, averaged over tasks
    per_task_a = a[picked_a].mean(axis=1)  # resamples × tasks
    per_task_b = b[picked_b].mean(axis=1)
    rows = np.arange(settings.resamples)[:, None]
    draws = (per_task_b[rows, picked_tasks] - per_task_a[rows, picked_tasks]).mean(axis=1)
    tail = (1.0 - settings.test.confidence) / 2
    low, high = (float(q) for q in np.quantile(draws, [tail, 1.0 - tail]))
    verdict: SeedVerdict = (
        "too_few_seeds"
        if min(len(a), len(b)) < settings.min_seeds
        else interval_verdict(len(tasks), settings.test.tasks_needed, low, high)
    )
    return SeedComparison(
        labels=labels,
        n_tasks=len(tasks),
        seeds=(len(a), len(b)),
        rates_a=[float(r) for r in a.mean(axis=1)],
        rates_b=[float(r) for r in b.mean(axis=1)],
        difference=difference,
        ci_low=low,
        ci_high=high,
        pairwise=[[float(rb - ra) for rb in b.mean(axis=1)] for ra in a.mean(axis=1)],
        verdict=verdict,
        settings=settings,
    )


def compare_seed_reports(
    a_reports: Sequence[EvalReport],
    b_reports: Sequence[EvalReport],
    settings: PairedSeeds | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> SeedComparison:
    """:func:`compare_seed_outcomes` on evaluation reports; their faults must come from one seed."""
    reports = [*a_reports, *b_reports]
    for report in reports[1:]:
        check_same_fault_seed(reports[0], report)
    return compare_seed_outcomes(
        [report_outcomes(r) for r in a_reports], [report_outcomes(r) for r in b_reports], settings, labels
    )
