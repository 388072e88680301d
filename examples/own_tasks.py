"""Your own tasks: a JSONL task file with expected answers and a verifier function, evaluated.

    .venv/bin/python examples/own_tasks.py

Writes a three-line task file (an expected number, an expected text, and a task judged by
``is_even`` below, named ``__main__:is_even`` because this script is the ``__main__`` module), loads
it, and evaluates a scripted policy on it (a test double, for speed: it always computes 6*7). The
same file works from the shell: ``regrpo eval --suite tasks.jsonl --split all`` and, as the gate's
tasks, ``regrpo trainer --eval-set tasks.jsonl``.
"""

import json
import tempfile
from pathlib import Path

from regrpo import ScriptedPolicy, TraceStore
from regrpo.evaluation import EvalOptions, evaluate
from regrpo.tasks.task_file import load_task_file
from regrpo.tasks.verifiers import parse_numbers


def is_even(task, answer):
    """A user's verifier: 1.0 for an even whole number, 0.0 otherwise (any float in [0, 1] is allowed)."""
    numbers = parse_numbers(answer or "")
    return 1.0 if numbers and numbers[-1].is_integer() and numbers[-1] % 2 == 0 else 0.0


folder = Path(tempfile.mkdtemp())
rows = [
    {"id": "product", "question": "What is 6*7?", "answer": 42},
    {"id": "city", "question": "Which city is the harbour in?", "answer": "Harbor"},
    {"id": "even", "question": "Give an even number.", "verifier": "__main__:is_even"},
]
(folder / "tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
tasks = load_task_file(folder / "tasks.jsonl")

policy = ScriptedPolicy(
    [
        '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>',
        "<answer>42</answer>",
    ],
    cycle=True,
)
with TraceStore(folder / "traces.sqlite") as store:
    report = evaluate(policy, tasks, store=store, options=EvalOptions(max_steps=3), progress=False)
    for episode in report.episodes:
        rewards = [f.reward for f in store.get(episode.trace_id).feedback]
        mark = "solved" if episode.correct else "not solved"
        print(f"{episode.task_id:8} {episode.answer!r:6} vs {episode.expected!r}: {mark}, reward {rewards}")
    print(f"success {report.overall.success_rate:.0%} on {len(tasks)} tasks of {folder / 'tasks.jsonl'}")
    assert [e.correct for e in report.episodes] == [True, False, True]
