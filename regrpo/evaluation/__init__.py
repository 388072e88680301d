"""Evaluation: run an agent over a task set, measure it, write and compare reports (``regrpo eval``)."""

from regrpo.evaluation.paired import PairedComparison, PairedTest, compare_reports
from regrpo.evaluation.records import EpisodeRecord, EvalReport, GroupSummary, summarise
from regrpo.evaluation.report import (
    comparison_markdown,
    read_report,
    report_markdown,
    write_comparison,
    write_report,
)
from regrpo.evaluation.runner import EvalOptions, evaluate

__all__ = [
    "EpisodeRecord",
    "EvalOptions",
    "EvalReport",
    "GroupSummary",
    "PairedComparison",
    "PairedTest",
    "compare_reports",
    "comparison_markdown",
    "evaluate",
    "read_report",
    "report_markdown",
    "summarise",
    "write_comparison",
    "write_report",
]
