"""Reports on disk: JSON that reads back exactly, Markdown tables, charts, comparisons, clear errors."""

from __future__ import annotations

import time

import pytest
from PIL import Image
from test_eval_records import record

from regrpo.errors import InputError
from regrpo.evaluation import (
    EvalReport,
    comparison_markdown,
    read_report,
    report_markdown,
    summarise,
    write_comparison,
    write_report,
)


def make_report(label: str, outcomes: dict[str, list[bool]]) -> EvalReport:
    episodes = [
        record(ok, category=category, task_id=f"{category}-{i}", calls=1 + i % 2, failures=i % 2)
        for category, oks in outcomes.items()
        for i, ok in enumerate(oks)
    ]
    return EvalReport(
        label=label,
        created_at=time.time(),
        model="m",
        adapter=None,
        settings={"fault_rate": 0.0},
        overall=summarise(episodes),
        by_category={c: summarise([e for e in episodes if e.category == c]) for c in outcomes},
        episodes=episodes,
    )


def test_report_writes_json_markdown_and_charts_that_read_back(tmp_path):
    report = make_report("base", {"receipt": [True, False], "count": [False, False, True]})
    out = write_report(report, tmp_path / "r")
    assert read_report(out) == report
    assert read_report(out / "report.json") == report
    text = (out / "report.md").read_text()
    assert "| receipt | 2 | 50% |" in text and "| count | 3 | 33% |" in text and "| all | 5 | 40% |" in text
    for chart in ("success_by_category.png", "episode_costs.png"):
        with Image.open(out / chart) as image:
            assert image.width > 200 and image.height > 100
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_markdown_shows_na_for_an_undefined_recovery_rate():
    report = make_report("x", {"lookup": [True]})
    assert "n/a" in report_markdown(report)


def test_comparison_lists_both_runs_and_the_change(tmp_path):
    before = make_report("base", {"receipt": [False, False], "count": [True, False]})
    after = make_report("tuned", {"receipt": [True, False], "count": [True, True]})
    text = comparison_markdown(before, after)
    assert "| receipt | success | 0% | 50% | +50% |" in text
    assert "| all | success | 25% | 75% | +50% |" in text
    # the paired test: receipt-0 and count-1 are solved only after; 4 tasks are too few to call it
    assert "+50.0 points" in text and "2 solved only by tuned, 0 only by base" in text
    assert "exact McNemar p = 0.5" in text and "verdict: **too_few_tasks**" in text
    out = write_comparison(before, after, tmp_path / "cmp")
    assert (out / "comparison.md").read_text() == text
    assert (out / "comparison.png").stat().st_size > 1000


def test_reading_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no evaluation report"):
        read_report(tmp_path / "nothing")
    (tmp_path / "report.json").write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not an evaluation report"):
        read_report(tmp_path)
