"""Paired comparison of two evaluations on the same tasks: is B's success rate really different from A's?

Both runs solved (or failed) the *same* tasks, so each task gives a pair of 0/1 outcomes and only the
discordant tasks (solved by one run and not the other) carry information about the difference:

    d = p_B − p_A = (b − c) / n        b = tasks only B solved, c = tasks only A solved, n = tasks

The test (why these, and not a paired bootstrap):

- **p-value: exact McNemar.** Under "no difference" each discordant task is a fair coin, so
  ``b ~ Binomial(b + c, 1/2)``; two-sided ``p = min(1, 2 · P(X ≤ min(b, c)))``. Exact, so valid at the
  small counts an agent evaluation has (the χ² version is not).
- **95 % CI of d: Newcombe's square-and-add interval for paired proportions** (Newcombe 1998, Stat.
  Med. 17:2635, method 10; Fagerland, Lydersen & Laake 2017, §8.5): the Wilson score intervals of
  ``p_A`` and ``p_B`` combined with their estimated correlation φ. It stays inside [−1, 1], has
  near-nominal coverage down to a few dozen pairs, and does not collapse to zero width when no task is
  discordant (the Wald interval does). Both are closed-form and deterministic: no resampling seed, and
  every number is checkable by hand (the tests do). A paired bootstrap is approximate at small n and
  its interval moves with the seed.

The two are different procedures and can disagree at the boundary (on Cavo et al.'s table the CI is
[−0.119, −0.005] while McNemar's p is 0.052); the verdict follows the CI, which is what a gate with a
margin needs; the p-value is reported beside it.

**Threshold rule.** A test is sized before it is run: :class:`PairedTest` names the smallest
difference worth detecting (``effect``, default 10 points), the power (0.8), the level (95 %) and the
expected share of discordant tasks (``discordant_rate``, default 0.2: two adapters of one base model
disagree on about one task in five). :func:`min_tasks_for` turns that into the number of tasks
(Connor 1987's sample size for McNemar's test; 155 for the defaults). With fewer paired tasks the
verdict is ``too_few_tasks`` whatever the interval says: an underpowered "significant" result mostly
overstates the effect (the winner's curse), and a non-significant one says nothing.

``compare_reports(a, b)`` pairs two :class:`~regrpo.evaluation.records.EvalReport` by task id (and
refuses reports whose tool faults were drawn from different seeds); ``compare_outcomes`` does the same
for plain ``{task_id: solved}`` mappings (the gate's cached outcomes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Literal

import msgspec

from regrpo.errors import InputError
from regrpo.evaluation.records import EvalReport

__all__ = [
    "PairedComparison",
    "PairedTest",
    "Verdict",
    "check_same_fault_seed",
    "compare_outcomes",
    "compare_reports",
    "interval_verdict",
    "mcnemar_exact_p",
    "min_tasks_for",
    "newcombe_paired_ci",
    "report_outcomes",
    "wilson_interval",
]

Verdict = Literal["better", "worse", "no_difference", "too_few_tasks"]
"""B against A: CI above 0, CI below 0, CI holds 0, or fewer paired tasks than the test needs."""


def _z(confidence: float) -> float:
    """The two-sided normal quantile: 1.96 for 95 %."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def min_tasks_for(
    effect: float, power: float = 0.8, alpha: float = 0.05, discordant_rate: float = 0.2
) -> int:
    """Paired tasks a two-sided McNemar test at level ``alpha`` needs to detect ``effect`` with ``power``.

    Connor (1987, Biometrics 43:207): with ψ the share of discordant tasks and δ the difference in
    success rate (points / 100), ``n = (z_{1−α/2} √ψ + z_{1−β} √(ψ − δ²))² / δ²``. ψ ≥ δ always (every
    task that separates the runs is discordant), so ``effect ≤ discordant_rate`` is required.
    """
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise InputError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    if not 0.0 < effect <= discordant_rate <= 1.0:
        raise InputError(
            f"need 0 < effect <= discordant_rate <= 1 (a difference needs at least that many discordant "
            f"tasks), got effect={effect}, discordant_rate={discordant_rate}"
        )
    z_alpha, z_beta = _z(1.0 - alpha), NormalDist().inv_cdf(power)
    root = z_alpha * math.sqrt(discordant_rate) + z_beta * math.sqrt(discordant_rate - effect**2)
    return math.ceil(root**2 / effect**2 - 1e-9)  # the tolerance keeps an exact integer from rounding up


class PairedTest(msgspec.Struct, frozen=True):
    """How a paired comparison is sized and read (see the module docstring's threshold rule)."""

    confidence: float = 0.95
    """Level of the interval; the test's alpha is ``1 − confidence``."""
    effect: float = 0.10
    """Smallest difference in success rate worth detecting (0.10 = 10 points)."""
    power: float = 0.8
    """Probability of detecting ``effect`` when it is real."""
    discordant_rate: float = 0.2
    """Assumed share of tasks one run solves and the other does not (sets the tasks needed)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise InputError(f"confidence must be in (0, 1), got {self.confidence}")
        min_tasks_for(self.effect, self.power, 1.0 - self.confidence, self.discordant_rate)  # checks the rest

    @property
    def tasks_needed(self) -> int:
        """Paired tasks below which the verdict is ``too_few_tasks`` (155 for the defaults)."""
        return min_tasks_for(self.effect, self.power, 1.0 - self.confidence, self.discordant_rate)


class PairedComparison(msgspec.Struct, frozen=True):
    """B against A on the same tasks: the difference ``rate_b − rate_a``, its CI, the test and the verdict."""

    labels: tuple[str, str]
    """Names of A and B (report labels, or the live and candidate versions)."""
    n_tasks: int
    rate_a: float
    rate_b: float
    difference: float
    """``rate_b − rate_a`` (0.1 = B solves 10 points more)."""
    ci_low: float
    ci_high: float
    b_only: int
    """Discordant tasks B solved and A did not."""
    a_only: int
    """Discordant tasks A solved and B did not."""
    p_value: float
    """Exact two-sided McNemar p-value."""
    tasks_needed: int
    verdict: Verdict
    test: PairedTest

    def summary(self) -> str:
        """One line: difference, CI, discordant pairs, p-value, verdict."""
        a, b = self.labels
        level = f"{self.test.confidence:.0%}"
        line = (
            f"{b} − {a}: {100 * self.difference:+.1f} points ({level} CI {100 * self.ci_low:+.1f} to "
            f"{100 * self.ci_high:+.1f}) on {self.n_tasks} paired tasks; discordant: {self.b_only} only "
            f"{b}, {self.a_only} only {a}; McNemar p = {self.p_value:.3g}; verdict: {self.verdict}"
        )
        if self.verdict == "too_few_tasks":
            line += (
                f" (a paired test needs {self.tasks_needed} tasks to detect "
                f"{100 * self.test.effect:.0f} points at power {self.test.power:.0%})"
            )
        return line


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / n`` (Wilson 1927)."""
    if n <= 0 or not 0 <= successes <= n:
        raise InputError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 and n the bounds are exactly 0 and 1; the formula only gets there up to rounding
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == n else centre + half
    return low, high


def newcombe_paired_ci(
    both: int, b_only: int, a_only: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's square-and-add interval for ``p_B − p_A`` from the four cells of the paired 2×2 table.

    With ``(l_B, u_B)``, ``(l_A, u_A)`` the Wilson intervals and φ the continuity-corrected correlation
    of the two outcomes (Newcombe 1998, method 10):

        L = d − √((p_B − l_B)² + (u_A − p_A)² − 2φ (p_B − l_B)(u_A − p_A))
        U = d + √((p_A − l_A)² + (u_B − p_B)² − 2φ (p_A − l_A)(u_B − p_B))
    """
    n = both + b_only + a_only + neither
    if n <= 0 or min(both, b_only, a_only, neither) < 0:
        raise InputError(f"a paired table needs non-negative cells and at least one pair, got n={n}")
    solved_b, solved_a = both + b_only, both + a_only
    p_b, p_a = solved_b / n, solved_a / n
    low_b, high_b = wilson_interval(solved_b, n, confidence)
    low_a, high_a = wilson_interval(solved_a, n, confidence)
    margins = solved_b * (n - solved_b) * solved_a * (n - solved_a)
    cross = both * neither - b_only * a_only
    if margins == 0:
        phi = 0.0  # a run that solved everything or nothing: no correlation to estimate
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)  # continuity correction toward 0
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / math.sqrt(margins)
    d = p_b - p_a
    down_b, up_a = p_b - low_b, high_a - p_a
    down_a, up_b = p_a - low_a, high_b - p_b
    # max(0, .) only absorbs float rounding: with |φ| <= 1 both sums are >= (x − y)² >= 0
    low = d - math.sqrt(max(0.0, down_b**2 + up_a**2 - 2 * phi * down_b * up_a))
    high = d + math.sqrt(max(0.0, down_a**2 + up_b**2 - 2 * phi * down_a * up_b))
    return max(-1.0, low), min(1.0, high)


def mcnemar_exact_p(b_only: int, a_only: int) -> float:
    """Exact two-sided McNemar p-value: ``min(1, 2 · P(X ≤ min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``."""
    if min(b_only, a_only) < 0:
        raise InputError(f"discordant counts must be non-negative, got {b_only} and {a_only}")
    m = b_only + a_only
    tail = sum(math.comb(m, k) for k in range(min(b_only, a_only) + 1))
    return min(1.0, 2 * tail / 2**m)  # exact integers until the one division


def compare_outcomes(
    a: Mapping[str, bool],
    b: Mapping[str, bool],
    test: PairedTest | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> PairedComparison:
    """Pair ``{task_id: solved}`` of A and B; raise :class:`InputError` unless both hold the same tasks."""
    test = test or PairedTest()
    _check_same_tasks(a, b, labels)
    pairs = [(bool(a[task]), bool(b[task])) for task in sorted(a)]
    n = len(pairs)
    both = sum(x and y for x, y in pairs)
    b_only = sum(y and not x for x, y in pairs)
    a_only = sum(x and not y for x, y in pairs)
    low, high = newcombe_paired_ci(both, b_only, a_only, n - both - b_only - a_only, test.confidence)
    needed = test.tasks_needed
    return PairedComparison(
        labels=labels,
        n_tasks=n,
        rate_a=(both + a_only) / n,
        rate_b=(both + b_only) / n,
        difference=(b_only - a_only) / n,
        ci_low=low,
        ci_high=high,
        b_only=b_only,
        a_only=a_only,
        p_value=mcnemar_exact_p(b_only, a_only),
        tasks_needed=needed,
        verdict=interval_verdict(n, needed, low, high),
        test=test,
    )


def report_outcomes(report: EvalReport) -> dict[str, bool]:
    """``{task_id: correct}`` of a report's episodes; a task id seen twice is an :class:`InputError`."""
    outcomes: dict[str, bool] = {}
    for episode in report.episodes:
        if episode.task_id in outcomes:
            raise InputError(
                f"report {report.label!r} has task {episode.task_id!r} more than once; "
                "a paired comparison needs one episode per task"
            )
        outcomes[episode.task_id] = episode.correct
    return outcomes


def compare_reports(a: EvalReport, b: EvalReport, test: PairedTest | None = None) -> PairedComparison:
    """B against A, paired by task id; reports with faults drawn from different seeds do not pair."""
    check_same_fault_seed(a, b)
    return compare_outcomes(report_outcomes(a), report_outcomes(b), test, labels=(a.label, b.label))


def interval_verdict(n_tasks: int, tasks_needed: int, low: float, high: float) -> Verdict:
    """``too_few_tasks`` below ``tasks_needed`` tasks, else ``better`` / ``worse`` / ``no_difference``
    by whether the interval ``[low, high]`` of B − A lies above, below or across zero."""
    if n_tasks < tasks_needed:
        return "too_few_tasks"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no_difference"


def check_same_fault_seed(a: EvalReport, b: EvalReport) -> None:
    """Raise :class:`InputError` when both reports injected faults, drawn from different seeds."""
    seeds = [_fault_seed(report) for report in (a, b)]
    if None not in seeds and seeds[0] != seeds[1]:
        raise InputError(
            f"the reports injected tool faults with different seeds ({a.label!r}: {seeds[0]}, "
            f"{b.label!r}: {seeds[1]}), so the same task met different failures; rerun one with "
            "the other's --fault-seed to pair them"
        )


def _fault_seed(report: EvalReport) -> object | None:
    """The fault seed of a run that injected faults (``None``: no faults, or a report without the setting)."""
    rate = report.settings.get("fault_rate", 0.0)
    if not isinstance(rate, int | float) or rate <= 0:
        return None
    return report.settings.get("fault_seed")


def _check_same_tasks(a: Mapping[str, bool], b: Mapping[str, bool], labels: tuple[str, str]) -> None:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if not set(a) & set(b):
        raise InputError(
            f"{labels[0]!r} ({len(a)} tasks) and {labels[1]!r} ({len(b)} tasks) share no task; "
            "a paired comparison needs both runs on the same tasks (same suite, split and --limit)"
        )
    if only_a or only_b:
        raise InputError(
            f"{labels[0]!r} and {labels[1]!r} ran different task sets: {_listed(only_a)} only in "
            f"{labels[0]!r}, {_listed(only_b)} only in {labels[1]!r}; a paired comparison needs the "
            "same tasks in both (same suite, split and --limit)"
        )


def _listed(task_ids: list[str], shown: int = 5) -> str:
    if not task_ids:
        return "no task"
    head = ", ".join(task_ids[:shown]) + (
        f", … ({len(task_ids) - shown} more)" if len(task_ids) > shown else ""
    )
    return f"{len(task_ids)} task{'s' if len(task_ids) != 1 else ''} ({head})"
