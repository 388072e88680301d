"""Many episodes, feedback after the fact, and the queries the learning loop uses.

    .venv/bin/python examples/traces_and_feedback.py

Runs a scripted policy (a test double, for speed) over a batch of tasks with bounded concurrency,
records rewards, then queries the store: failures only, since a time, and a JSONL export.
"""

import tempfile
import time
from pathlib import Path

from regrpo import Agent, ScriptedPolicy, TraceStore

folder = Path(tempfile.mkdtemp())
store = TraceStore(folder / "traces.sqlite")


def reply(messages):
    """Answers a*b by calling the calculator, with a typo on odd tasks (a failure to learn from)."""
    task = messages[1]["content"]
    a, b = task.removeprefix("What is ").removesuffix("?").split("*")
    if len(messages) == 2:
        typo = "*/" if int(a) % 2 else "*"
        return (
            f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a}{typo}{b}"}}}}</tool_call>'
        )
    last = messages[-1]["content"]
    if "Error" in last:
        return f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a}*{b}"}}}}</tool_call>'
    return f"<answer>{last.split('>')[1].split('<')[0]}</answer>"


started = time.time()
agent = Agent(ScriptedPolicy([reply], cycle=True), store=store, reflect=False)
tasks = [(a, b) for a in range(11, 17) for b in (3, 7)]
results = agent.run_many([f"What is {a}*{b}?" for a, b in tasks], concurrency=4)
for (a, b), result in zip(tasks, results, strict=True):
    agent.feedback(result.trace_id, answer=str(a * b))

failures = list(store.episodes(failures_only=True, since=started))
print(
    f"{len(results)} episodes, {len(failures)} with a tool failure, "
    f"total reward {sum(e.reward for e in store.episodes(since=started))}/{len(results)}"
)
count = store.export_jsonl(folder / "failures.jsonl", failures_only=True)
print(f"exported {count} failure episodes to {folder / 'failures.jsonl'}")
