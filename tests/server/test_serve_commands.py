"""The three entry points wired together from the shell: ``regrpo serve-model`` holds the real model,
``regrpo serve --base-url`` runs the agent against it, and the official ``openai`` client talks to the
agent. Real processes, real sockets; each server is waited for by reading uvicorn's start-up line.
"""

from __future__ import annotations

import openai
import pytest
from server_helpers import regrpo_server

from regrpo.traces import TraceStore

pytestmark = pytest.mark.slow


def test_agent_server_over_model_server_answers_an_openai_client(tmp_path):
    store = tmp_path / "traces.sqlite"
    with regrpo_server("serve-model", "--api-key", "model-key") as model_url:
        agent_args = ("--base-url", model_url, "--remote-api-key", "model-key", "--max-steps", "1")
        with regrpo_server(
            "serve", *agent_args, "--max-new-tokens", "16", "--store", str(store), "--api-key", "agent-key"
        ) as agent_url:
            client = openai.OpenAI(base_url=f"{agent_url}/v1", api_key="agent-key", max_retries=0)
            reply = client.chat.completions.create(
                model="regrpo-agent", messages=[{"role": "user", "content": "What is 2+2?"}]
            )
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{agent_url}/v1", api_key="wrong", max_retries=0).models.list()
    extension = reply.model_extra["regrpo"]
    episode = TraceStore(store).get(extension["trace_id"])
    assert episode.model == "SmolLM2-135M-Instruct"  # the served model's name, via the model server
    assert len(episode.steps) == len(extension["steps"]) == 1
    step = episode.steps[0]
    # the remote engine filled the trace like the local one: token ids and a log-prob per token
    assert step.completion.token_ids and len(step.completion.logprobs) == len(step.completion.token_ids)
