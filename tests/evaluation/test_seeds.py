"""Two methods over several training seeds each: the seed-averaged difference and its two-way bootstrap."""

from __future__ import annotations

import msgspec
import pytest
from test_eval_report import make_report

from regrpo.errors import InputError
from regrpo.evaluation.paired import PairedTest
from regrpo.evaluation.seeds import PairedSeeds, SeedComparison, compare_seed_outcomes, compare_seed_reports

TASKS = [f"t{i}" for i in range(40)]
# sized for 40 tasks (23 needed: effect 0.4, half the tasks discordant) so the verdict can be called here
CALLABLE = PairedSeeds(test=PairedTest(effect=0.4, discordant_rate=0.5), resamples=2000)


def run(solved: set[int]) -> dict[str, bool]:
    return {task: i in solved for i, task in enumerate(TASKS)}


def test_identical_methods_differ_by_nothing_and_the_interval_is_a_point():
    same = run(set(range(0, 40, 2)))
    result = compare_seed_outcomes([same] * 3, [same] * 3, CALLABLE)
    assert (result.difference, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert result.pairwise == [[0.0] * 3] * 3 and result.verdict == "no_difference"


def test_a_method_that_solves_what_the_other_never_does_is_better():
    result = compare_seed_outcomes([run(set())] * 3, [run(set(range(20)))] * 3, CALLABLE, labels=("a", "b"))
    assert result.difference == pytest.approx(0.5) and result.rates_b == [0.5] * 3
    assert 0.3 < result.ci_low < 0.5 < result.ci_high < 0.7  # only the tasks vary: seeds agree
    assert result.verdict == "better"
    assert "b (3 seeds) − a (3 seeds): +50.0 points" in result.summary()
    reversed_ = compare_seed_outcomes([run(set(range(20)))] * 3, [run(set())] * 3, CALLABLE)
    assert reversed_.verdict == "worse" and reversed_.difference == pytest.approx(-0.5)


def test_seeds_that_disagree_widen_the_interval_past_what_the_tasks_alone_give():
    """B's seed-averaged rate is the same both times (13/40 over A); once every seed of B solves the same
    13 tasks, once one seed solves 39 and two none. Resampling seeds must see the second as less sure."""
    a = [run(set())] * 3
    agreeing = [run(set(range(13)))] * 3  # 13 tasks, every seed
    split = [run(set(range(39))), run(set()), run(set())]  # 39, 0, 0: mean 13 per seed
    steady = compare_seed_outcomes(a, agreeing, CALLABLE)
    shaky = compare_seed_outcomes(a, split, CALLABLE)
    assert steady.difference == pytest.approx(shaky.difference, abs=1e-12)
    assert (shaky.ci_high - shaky.ci_low) > 2 * (steady.ci_high - steady.ci_low)
    assert shaky.ci_low <= 0.0 < steady.ci_low  # one lucky seed is not a method that works
    assert [min(r) for r in shaky.pairwise] == [0.0] * 3 and max(shaky.pairwise[0]) == pytest.approx(39 / 40)


def test_the_interval_is_seeded_and_the_verdict_waits_for_three_seeds_and_enough_tasks():
    a, b = [run({1, 2, 3})], [run({1, 2, 3, 4, 5, 6, 7, 8})] * 2
    first, again = compare_seed_outcomes(a, b, CALLABLE), compare_seed_outcomes(a, b, CALLABLE)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert first.verdict == "too_few_seeds" and "(each method needs 3)" in first.summary()
    assert compare_seed_outcomes(a * 3, b * 2, PairedSeeds(min_seeds=2)).verdict == "too_few_tasks"
    assert msgspec.json.decode(msgspec.json.encode(first), type=SeedComparison) == first


def test_runs_on_other_tasks_or_no_runs_are_refused_with_what_differs():
    with pytest.raises(InputError, match="run 2 of 'B' holds 39 tasks, not the 40"):
        compare_seed_outcomes([run(set())], [run(set()), {t: True for t in TASKS[:39]}])
    with pytest.raises(InputError, match="at least one run"):
        compare_seed_outcomes([], [run(set())])
    with pytest.raises(InputError, match="resamples"):
        PairedSeeds(resamples=10)


def test_reports_pair_across_seeds_only_with_one_fault_seed():
    reports = [make_report(f"r{i}", {"count": [i > 0, True]}) for i in range(3)]
    result = compare_seed_reports(reports[:1], reports[1:])
    assert result.seeds == (1, 2) and result.difference == pytest.approx(0.5)
    for seed, report in enumerate(reports):
        report.settings = {"fault_rate": 0.2, "fault_seed": seed}
    with pytest.raises(InputError, match="different seeds"):
        compare_seed_reports(reports[:1], reports[1:])
