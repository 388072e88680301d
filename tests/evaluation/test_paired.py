"""Paired comparison: hand-computed Wilson, Newcombe, McNemar and sample-size numbers, verdicts, refusals.

Reference values: Wilson's interval in closed form at 0/n and n/n; the Cavo et al. (2012) table of
Fagerland, Lydersen & Laake (2017, ch. 8), whose Newcombe interval (−0.1186, −0.0046) their R package
``contingencytables`` prints; McNemar's exact p as a binomial sum written out by hand.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import msgspec
import pytest
from test_eval_report import make_report

from regrpo.errors import InputError
from regrpo.evaluation.paired import (
    PairedComparison,
    PairedTest,
    compare_outcomes,
    compare_reports,
    mcnemar_exact_p,
    min_tasks_for,
    newcombe_paired_ci,
    wilson_interval,
)

Z = NormalDist().inv_cdf(0.975)  # 1.95996...
SMALL = PairedTest(effect=0.5, discordant_rate=0.6)  # needs 17 tasks, so tests stay small


def outcomes(pattern: str) -> dict[str, bool]:
    """``"1100"`` → ``{"t00": True, "t01": True, "t02": False, "t03": False}``."""
    return {f"t{i:02d}": c == "1" for i, c in enumerate(pattern)}


# -- the maths, by hand ---------------------------------------------------------------------------------


def test_wilson_interval_at_the_edges_and_the_middle():
    # at 0 of n the interval is [0, z²/(n + z²)]; at n of n it mirrors
    assert wilson_interval(0, 10) == (0.0, pytest.approx(Z**2 / (10 + Z**2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + Z**2)), 1.0)
    # 5 of 10: centred on 0.5, half-width z·√(0.025 + z²/400) / (1 + z²/10)
    half = Z * math.sqrt(0.025 + Z**2 / 400) / (1 + Z**2 / 10)
    assert wilson_interval(5, 10) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    with pytest.raises(InputError):
        wilson_interval(3, 2)


def test_newcombe_interval_matches_the_published_cavo_example():
    # Cavo et al.: 59 both, 6 only B, 16 only A, 80 neither → d = −10/161
    low, high = newcombe_paired_ci(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_newcombe_interval_by_hand_when_one_run_solves_everything():
    # 4 tasks only B solved: p_B = 1, p_A = 0, φ = 0 (a margin is empty), so
    # L = 1 − √((1 − l_B)² + u_A²) with 1 − l_B = u_A = z²/(4 + z²); U = 1
    edge = Z**2 / (4 + Z**2)
    assert newcombe_paired_ci(0, 4, 0, 0) == (pytest.approx(1 - math.sqrt(2) * edge), 1.0)
    # identical runs: symmetric around 0, never a zero-width interval
    assert newcombe_paired_ci(0, 0, 0, 4) == (pytest.approx(-edge), pytest.approx(edge))


def test_mcnemar_exact_p_is_a_binomial_tail():
    # 6 vs 16 discordant: 2 · Σ_{k≤6} C(22, k) / 2²² = 2 · 110056 / 4194304
    assert mcnemar_exact_p(6, 16) == pytest.approx(2 * 110056 / 2**22)
    assert mcnemar_exact_p(16, 6) == mcnemar_exact_p(6, 16)
    assert mcnemar_exact_p(0, 3) == 2 / 8  # 2 · P(X = 0) with X ~ Bin(3, ½)
    assert mcnemar_exact_p(2, 2) == 1.0 and mcnemar_exact_p(0, 0) == 1.0


def test_min_tasks_for_follows_connors_formula():
    # 10 points at power 0.8, α 0.05, 20 % discordant: (1.96·√0.2 + 0.8416·√0.19)² / 0.01 = 154.6 → 155
    z_beta = NormalDist().inv_cdf(0.8)
    by_hand = (Z * math.sqrt(0.2) + z_beta * math.sqrt(0.19)) ** 2 / 0.01
    assert min_tasks_for(0.10) == math.ceil(by_hand) == 155 == PairedTest().tasks_needed
    assert min_tasks_for(0.05) > 4 * 155 - 40  # half the effect: about four times the tasks
    assert min_tasks_for(0.10, power=0.9) > 155
    with pytest.raises(InputError, match="discordant_rate"):
        min_tasks_for(0.3, discordant_rate=0.2)  # a 30-point gap needs at least 30 % discordant tasks
    with pytest.raises(InputError, match="power"):
        min_tasks_for(0.1, power=1.0)
    with pytest.raises(InputError, match="confidence"):
        PairedTest(confidence=1.0)


# -- the comparison and its verdicts -------------------------------------------------------------------


def test_a_clear_improvement_on_enough_tasks_is_better():
    a, b = outcomes("0" * 20), outcomes("1" * 18 + "00")
    result = compare_outcomes(a, b, SMALL, labels=("base", "v1"))
    assert (result.n_tasks, result.b_only, result.a_only, result.difference) == (20, 18, 0, 0.9)
    assert (result.rate_a, result.rate_b) == (0.0, 0.9)
    assert result.p_value == 2 / 2**18 and result.ci_low > 0.5 and result.verdict == "better"
    assert result.tasks_needed == 17
    assert "v1 − base: +90.0 points" in result.summary() and "verdict: better" in result.summary()


def test_worse_and_no_difference():
    assert compare_outcomes(outcomes("1" * 20), outcomes("0" * 20), SMALL).verdict == "worse"
    # 3 only-B and 3 only-A tasks: d = 0, the interval holds 0
    same = compare_outcomes(outcomes("111000" + "0" * 14), outcomes("000111" + "0" * 14), SMALL)
    assert same.difference == 0 and same.ci_low < 0 < same.ci_high and same.verdict == "no_difference"


def test_too_few_tasks_refuses_to_call_even_a_perfect_sweep():
    result = compare_outcomes(outcomes("0000"), outcomes("1111"))
    assert result.ci_low > 0  # the interval alone would call it
    assert result.verdict == "too_few_tasks" and result.tasks_needed == 155
    assert "needs 155 tasks to detect 10 points at power 80%" in result.summary()


def test_a_comparison_round_trips_through_json():
    result = compare_outcomes(outcomes("0101"), outcomes("1101"), SMALL)
    assert msgspec.json.decode(msgspec.json.encode(result), type=PairedComparison) == result


def test_tasks_not_shared_are_named_in_the_error():
    with pytest.raises(InputError, match="share no task"):
        compare_outcomes({"x": True}, {"y": True})
    with pytest.raises(InputError, match=r"1 task \(t02\) only in 'A', no task only in 'B'"):
        compare_outcomes(outcomes("101"), outcomes("10"))


# -- on reports -----------------------------------------------------------------------------------------


def test_reports_pair_by_task_id_whatever_their_order():
    before = make_report("base", {"count": [False, True], "receipt": [False]})
    after = make_report("tuned", {"receipt": [True], "count": [True, True]})
    result = compare_reports(before, after, SMALL)
    assert (result.labels, result.n_tasks, result.b_only, result.a_only) == (("base", "tuned"), 3, 2, 0)


def test_reports_with_different_task_sets_or_fault_seeds_do_not_pair():
    before = make_report("base", {"count": [False, True]})
    with pytest.raises(InputError, match="only in 'tuned'"):
        compare_reports(before, make_report("tuned", {"count": [True, True, True]}))
    faulty = [make_report(name, {"count": [True]}) for name in ("seed0", "seed1")]
    for seed, report in enumerate(faulty):
        report.settings = {"fault_rate": 0.2, "fault_seed": seed}
    with pytest.raises(InputError, match="different seeds"):
        compare_reports(*faulty)
    faulty[1].settings = {"fault_rate": 0.0, "fault_seed": 1}  # faults against no faults: still paired
    assert compare_reports(*faulty).n_tasks == 1
    twice = make_report("twice", {"count": [True]})
    twice.episodes = twice.episodes * 2
    with pytest.raises(InputError, match="more than once"):
        compare_reports(twice, twice)
