"""Walk through one Reflection-of-Thought: failure → grounded evidence → reflection → fix → answer.

    .venv/bin/python examples/reflection_walkthrough.py

The policy here is a ``ScriptedPolicy`` (a test double that replies from a script) so the walkthrough
is the same every time; with a real model the runtime does exactly the same things.
"""

import tempfile
from pathlib import Path

from regrpo import Agent, ScriptedPolicy, TraceStore

script = [
    # 1. a near-miss: the expression has a stray slash
    '<tool_call>{"name": "calculator", "arguments": {"expression": "17*/23"}}</tool_call>',
    # 2. the runtime showed the error and asked for a reflection; the model diagnoses and fixes
    '<reflection>{"error_type": "ArgInvalid", "evidence": "cannot parse expression 17*/23", '
    '"fix_plan": "remove the stray slash"}</reflection>'
    '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>',
    "<answer>391</answer>",
]
store = TraceStore(Path(tempfile.mkdtemp()) / "traces.sqlite")
result = Agent(ScriptedPolicy(script), store=store).run("What is 17*23?")

episode = store.get(result.trace_id)
failed, fixed, answered = episode.steps
print("failure observation:", failed.observation.content)
print("\nwhat the runtime asked next:\n", episode.messages[fixed.prompt_messages - 1].content, sep="")
print("\nreflection:", fixed.reflection)
print("why it was asked:", fixed.reflection_requested, "| problems:", fixed.reflection_problem)
print("corrected action result:", fixed.observation.output)
print("answer:", result.answer, "| usage:", result.usage)
