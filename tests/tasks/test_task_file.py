"""A user's task file: expected answers of each kind, a verifier by import path, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from regrpo.tasks.schema import AnswerSpec
from regrpo.tasks.task_file import TaskFileError, VerifierAnswer, load_task_file


def write_lines(path, *rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def verifier_module(tmp_path, monkeypatch):
    """A module ``user_checks`` on sys.path with a graded verifier and two broken ones."""
    (tmp_path / "user_checks.py").write_text(
        textwrap.dedent(
            """
            def mentions_harbor(task, answer):
                return 1.0 if answer and "harbor" in answer.lower() else 0.25

            def raises(task, answer):
                raise RuntimeError("boom")

            def out_of_range(task, answer):
                return 7
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_checks"


def test_each_answer_kind_and_a_verifier_load_and_check(tmp_path, verifier_module):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 6), "white").save(tmp_path / "img" / "a.png")
    file = tmp_path / "mine.jsonl"
    write_lines(
        file,
        {"id": "total", "question": "Total?", "images": ["img/a.png"], "answer": 42.5, "tolerance": 0.01},
        "",
        {"question": "Which city?", "answer": "Harbor", "category": "signs"},
        {"question": "Colours?", "answer": ["red", "blue"]},
        {"question": "Where?", "verifier": f"{verifier_module}:mentions_harbor", "pass_score": 0.5},
    )
    total, city, colours, judged = load_task_file(file)
    assert total.images == [str((tmp_path / "img" / "a.png").resolve())]
    assert total.answer == AnswerSpec(kind="number", value=42.5, tolerance=0.01)
    assert total.check("It is $42.51") and not total.check("43")
    assert (city.id, city.category, city.answer.kind) == ("mine-3", "signs", "text")
    assert city.check("The city is Harbor.") and not city.check("Meadow")
    assert colours.answer.kind == "set" and colours.check("blue and red") and not colours.check("red")
    assert isinstance(judged.answer, VerifierAnswer) and judged.category == "user"
    assert judged.score("harbor, surely") == 1.0 and judged.check("the Harbor")
    assert judged.score("no idea") == 0.25 and not judged.check("no idea")
    assert judged.answer.display() == f"(judged by {verifier_module}:mentions_harbor)"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answer": 1}, "'question' must be a non-empty string"),
        ({"question": "q"}, "exactly one of 'answer'"),
        ({"question": "q", "answer": 1, "verifier": "m:f"}, "exactly one of 'answer'"),
        ({"question": "q", "answer": 1, "kind": "date"}, "'kind' must be number, text or set"),
        ({"question": "q", "answer": "x", "kind": "number"}, "a number answer must be a number"),
        ({"question": "q", "answer": []}, "a set answer must be a non-empty list of strings"),
        ({"question": "q", "answer": True}, "'kind' must be number, text or set"),
        ({"question": "q", "answer": 1, "tolerance": -1}, "'tolerance' must be a number >= 0"),
        ({"question": "q", "answer": 1, "images": ["missing.png"]}, "image 'missing.png' not found"),
        ({"question": "q", "answer": 1, "colour": "red"}, "unknown fields ['colour']"),
        ({"question": "q", "verifier": "no_colon"}, "must be 'package.module:name'"),
        ({"question": "q", "verifier": "no_such_module_xyz:f"}, "cannot import verifier module"),
        ({"question": "q", "verifier": "json:no_such_function"}, "has no 'no_such_function'"),
        ({"question": "q", "verifier": "json:loads", "pass_score": 2}, "'pass_score' must be a number"),
        ("[1, 2]", "each line must be a JSON object"),
        ('{"question": ', "not JSON"),
    ],
)
def test_a_bad_line_is_an_error_naming_the_file_line_and_field(tmp_path, row, message):
    file = tmp_path / "tasks.jsonl"
    write_lines(file, {"question": "fine", "answer": 1}, row)
    with pytest.raises(TaskFileError, match="line 2") as error:
        load_task_file(file)
    assert message in str(error.value) and str(file) in str(error.value)


def test_whole_file_problems_are_errors(tmp_path):
    with pytest.raises(TaskFileError, match="not found"):
        load_task_file(tmp_path / "absent.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TaskFileError, match="holds no tasks"):
        load_task_file(empty)
    twice = tmp_path / "twice.jsonl"
    write_lines(twice, {"id": "a", "question": "q", "answer": 1}, {"id": "a", "question": "r", "answer": 2})
    with pytest.raises(TaskFileError, match="id 'a' is already used on line 1"):
        load_task_file(twice)


def test_a_broken_verifier_is_an_error_naming_it_not_a_wrong_answer(tmp_path, verifier_module):
    file = tmp_path / "tasks.jsonl"
    write_lines(
        file,
        {"question": "q", "verifier": f"{verifier_module}:raises"},
        {"question": "q", "verifier": f"{verifier_module}:out_of_range"},
    )
    raising, out_of_range = load_task_file(file)
    with pytest.raises(TaskFileError, match=r"raised RuntimeError: boom \(task tasks-1\)"):
        raising.check("x")
    with pytest.raises(
        TaskFileError, match=r"returned 7; it must return a number from 0 to 1 \(task tasks-2\)"
    ):
        out_of_range.score("x")


def test_eval_runs_a_task_file_and_refuses_a_split_of_it(tmp_path):
    file = tmp_path / "tasks.jsonl"
    write_lines(file, {"question": "What is 6*7?", "answer": 42})
    base = [sys.executable, "-m", "regrpo.cli", "eval", "--suite", str(file), "--max-steps", "1"]
    refused = subprocess.run([*base, "--split", "holdout"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "a task file is used whole" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
