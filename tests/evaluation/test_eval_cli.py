"""``regrpo compare`` through the real command line (``eval`` itself runs in the demo's CLI test)."""

from __future__ import annotations

import json
import subprocess
import sys

from test_eval_report import make_report

from regrpo.evaluation import write_report


def regrpo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regrpo.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_compare_writes_a_side_by_side_report(tmp_path):
    write_report(make_report("base", {"count": [False, True]}), tmp_path / "a")
    write_report(make_report("tuned", {"count": [True, True]}), tmp_path / "b")
    done = regrpo("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr
    assert "| count | success | 50% | 100% | +50% |" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_compare_prints_the_paired_test_and_refuses_a_verdict_on_two_tasks(tmp_path):
    write_report(make_report("base", {"count": [False, True]}), tmp_path / "a")
    write_report(make_report("tuned", {"count": [True, True]}), tmp_path / "b")
    done = regrpo("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr
    # count-0 is the one discordant task: +50 points, exact McNemar p = 2 · ½ = 1
    assert "paired on 2 tasks: success 50.0% → 100.0%, +50.0 points (95% CI" in done.stdout
    assert "discordant tasks: 1 solved only by tuned, 0 only by base · exact McNemar p = 1" in done.stdout
    assert "verdict: too_few_tasks (a paired test needs 155 tasks" in done.stdout
    assert "base · m · adapter none" in done.stdout and "tuned · m · adapter none" in done.stdout  # tables
    markdown = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## Paired comparison of success (tuned − base, same tasks)" in markdown
    assert "- verdict: **too_few_tasks**" in markdown and "- exact McNemar p = 1" in markdown


def test_compare_of_two_reports_with_one_label_names_the_sides_by_their_folders(tmp_path):
    write_report(make_report("eval", {"count": [False, True]}), tmp_path / "e-warm")
    write_report(make_report("eval", {"count": [True, True]}), tmp_path / "e-tuned")
    warm, tuned = str(tmp_path / "e-warm"), str(tmp_path / "e-tuned")
    done = regrpo("compare", warm, tuned, "--out", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    assert "1 solved only by e-tuned, 0 only by e-warm" in done.stdout
    assert "# Comparison: e-warm → e-tuned" in (tmp_path / "c" / "comparison.md").read_text()


def test_compare_of_different_task_sets_keeps_the_tables_and_says_why_it_cannot_pair(tmp_path):
    write_report(make_report("base", {"count": [False, True]}), tmp_path / "a")
    write_report(make_report("tuned", {"count": [True, True, False]}), tmp_path / "b")
    done = regrpo("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr
    assert "no paired comparison:" in done.stdout and "1 task (count-2) only in 'tuned'" in done.stdout
    assert "not available:" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_compare_of_missing_reports_is_a_one_line_error(tmp_path):
    done = regrpo("compare", str(tmp_path / "nope"), str(tmp_path / "nope2"))
    assert done.returncode == 2 and "no evaluation report" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_compare_of_comma_separated_seeds_compares_the_methods_over_tasks_and_seeds(tmp_path):
    for name, outcomes in [("g0", [False, True]), ("g1", [False, False]), ("r0", [True, True])]:
        write_report(make_report(name, {"count": outcomes}), tmp_path / f"e-{name}")
    before = f"{tmp_path / 'e-g0'},{tmp_path / 'e-g1'}"
    done = regrpo("compare", before, str(tmp_path / "e-r0"), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr
    assert "e-g0 +1: e-g0 50.0%, e-g1 0.0%" in done.stdout  # each seed's success, by its folder
    # B solves both tasks; A's two seeds average 1/4 of them: +75 points
    assert "e-r0 (1 seed) − e-g0 +1 (2 seeds): +75.0 points" in done.stdout
    assert "seed pairs +50.0 to +100.0; verdict: too_few_seeds" in done.stdout.replace("\n", "")
    saved = json.loads((tmp_path / "cmp" / "seeds.json").read_text())
    assert saved["seeds"] == [2, 1] and saved["pairwise"] == [[0.5], [1.0]]
    broken = regrpo("compare", f"{tmp_path / 'e-g0'},{tmp_path / 'nope'}", str(tmp_path / "e-r0"))
    assert broken.returncode != 0 and "no evaluation report at" in broken.stderr + broken.stdout
    assert "Traceback" not in broken.stderr
