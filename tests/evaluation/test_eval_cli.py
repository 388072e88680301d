"""``regrpo compare`` through the real command line (``eval`` itself runs in the demo's CLI test)."""

from __future__ import annotations

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


def test_compare_of_missing_reports_is_a_one_line_error(tmp_path):
    done = regrpo("compare", str(tmp_path / "nope"), str(tmp_path / "nope2"))
    assert done.returncode == 2 and "no evaluation report" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
