"""Quickstart: run the agent on one task with the default offline model, then read its trace.

    .venv/bin/python examples/quickstart.py

The default agent is SmolLM2-135M-Instruct on the CPU running the shipped RoT SFT warm start
(``Agent(adapter=None)`` for the base model): real, small and weak — it often misuses the tool
format. That is the starting point the learning loop improves on.
"""

import tempfile
from pathlib import Path

from regrpo import Agent, TraceStore

store = TraceStore(Path(tempfile.mkdtemp()) / "traces.sqlite")
agent = Agent(store=store, max_steps=3, max_new_tokens=64)

result = agent.run("What is 17*23?")
print(f"answer={result.answer!r} status={result.status} steps={result.usage.steps}")
print(f"adapter: {agent.policy.active_adapter}")  # warm-start: the shipped RoT SFT adapter
for step in result.steps:
    print(
        f"  step {step.index}: {type(step.action).__name__} "
        f"(confidence {step.confidence:.2f}, {len(step.completion.token_ids)} tokens)"
    )

# The episode is already durable: read it back, with every prompt, token id and log-prob.
episode = store.get(result.trace_id)
print(f"trace {episode.trace_id}: {len(episode.messages)} messages, status {episode.status}")
print("reward from the reference answer:", agent.feedback(result.trace_id, answer="391").reward)
