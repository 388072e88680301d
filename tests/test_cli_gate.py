"""The command line's gates: the demo's line says its 2-task promotions are not significant; the
trainer's default suite holds out enough tasks for the paired test.

The whole demo runs in ``tests/test_cli.py`` (slow: the real model); this checks the line it prints
for a decision, on decisions made by the real rule functions.
"""

from __future__ import annotations

from types import SimpleNamespace

from regrpo.cli.demo import gate_line
from regrpo.evaluation import PairedTest
from regrpo.evaluation.paired import compare_outcomes
from regrpo.learning.gate import GateConfig, GateDecision, decide, is_significant
from regrpo.tasks.suite import CATEGORIES, split


def decision(live: list[bool], candidate: list[bool], config: GateConfig) -> GateDecision:
    ids = [f"t{i}" for i in range(len(live))]
    comparison = compare_outcomes(
        dict(zip(ids, live, strict=True)), dict(zip(ids, candidate, strict=True)), config.test, ("base", "v1")
    )
    metrics = [{"success_rate": sum(run) / len(run)} for run in (candidate, live)]
    promoted, reason = decide(*metrics, config, comparison)
    return GateDecision(
        candidate="v1",
        live=None,
        candidate_metrics=metrics[0],
        live_metrics=metrics[1],
        promoted=promoted,
        reason=reason,
        key="eval-x",
        rule=config.rule,
        comparison=comparison,
        significant=is_significant(comparison, config.margin),
    )


def test_a_demo_promotion_on_two_tasks_says_it_is_not_significant():
    line = gate_line("v1", decision([False, True], [True, True], GateConfig(rule="any_improvement")))
    assert line.startswith(
        "gate v1: [green]promoted and hot-swapped[/] · [bold]not statistically significant[/]"
    )
    assert "rule any_improvement: NOT statistically significant" in line and "needs 155 tasks" in line


def test_a_significant_promotion_carries_no_caveat():
    config = GateConfig(test=PairedTest(effect=0.5, discordant_rate=0.6))
    line = gate_line("v1", decision([False] * 20, [True] * 20, config))
    assert line.startswith("gate v1: [green]promoted and hot-swapped[/] (significant:")


def test_the_trainers_default_suite_holds_out_what_the_paired_gate_needs():
    from regrpo.cli import _parser

    args = _parser().parse_args(["trainer", "--registry", "r"])
    # the suite's task i has category i mod k (regrpo.tasks.suite); split only reads id and category
    suite = [SimpleNamespace(id=str(i), category=CATEGORIES[i % len(CATEGORIES)]) for i in range(args.tasks)]
    _, held_out = split(suite, args.holdout_fraction, args.seed)  # type: ignore[arg-type]
    assert len(held_out) >= GateConfig().test.tasks_needed == 155
