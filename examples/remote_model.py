"""Run the agent against a model behind an OpenAI-compatible server instead of in-process.

    .venv/bin/python examples/remote_model.py

It starts ``regrpo serve-model`` (SmolLM2 over HTTP, vLLM's dialect) in this process on a free port
and points the agent at it with ``OpenAIPolicy``. Against a real vLLM, skip the server and use
``OpenAIPolicy("http://gpu-host:8000", "Qwen/Qwen2.5-VL-7B-Instruct", vllm=True)``.
"""

import tempfile
from pathlib import Path

from regrpo import Agent, TraceStore
from regrpo.agent.local import LocalPolicy
from regrpo.agent.openai_policy import OpenAIPolicy
from regrpo.server.model_server import build_model_app, running_server
from regrpo.tools.calculator import calculator

with tempfile.TemporaryDirectory() as folder, TraceStore(Path(folder) / "traces.sqlite") as store:
    engine = LocalPolicy()  # the server's model; the agent only sees it over HTTP
    with running_server(build_model_app(engine)) as url:
        print(f"serve-model listening on {url}")
        policy = OpenAIPolicy(url, engine.model_name)
        agent = Agent(policy, tools=[calculator], store=store, max_steps=2, max_new_tokens=32)
        result = agent.run("What is 17 * 23? Use the calculator.")
        print(f"answer: {result.answer!r} (status {result.status}, {len(result.steps)} steps)")
        print(f"trace id: {result.trace_id}")
        completion = result.steps[0].completion
        print(f"first step: {len(completion.token_ids)} tokens, log-probs {completion.logprobs[:3]} ...")
    print("server stopped")
