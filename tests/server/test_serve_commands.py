"""The three entry points wired together from the shell: ``regrpo serve-model`` holds the real model,
``regrpo serve --base-url`` runs the agent against it, and the official ``openai`` client talks to the
agent. Real processes, real sockets; each server is waited for by reading uvicorn's start-up line.
"""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest
from server_helpers import regrpo_server

from regrpo.agent.policy import as_chat
from regrpo.agent.vision import VisionPolicy
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


def test_run_against_serve_model_on_a_vision_model_sends_the_image(tmp_path):
    from PIL import Image

    from regrpo.agent.vision_models import build_tiny_qwen2_vl

    folder = str(build_tiny_qwen2_vl(tmp_path / "tiny-qwen2-vl"))
    Image.new("RGB", (112, 56), (200, 40, 40)).save(tmp_path / "red.png")
    store = tmp_path / "traces.sqlite"
    with regrpo_server("serve-model", "--model", folder) as model_url:
        done = subprocess.run(
            [
                sys.executable, "-m", "regrpo.cli", "run", "What colour is img_0?", "--base-url", model_url,
                "--remote-images", "--model", folder, "--image", str(tmp_path / "red.png"),
                "--store", str(store), "--max-steps", "1", "--max-new-tokens", "4",
            ],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (episode,) = TraceStore(store).episodes()
    step = episode.steps[0]
    assert episode.messages[1].images == ("img_0",) and step.completion.token_ids
    # the server counted the image's tokens: 112 x 56 px are 8 (one per 28 x 28) plus the start and
    # end marks, on top of the prompt's text (tests/test_cli_vision.py: the same run in process)
    text = (
        VisionPolicy(folder).encode(as_chat(episode.messages[: step.prompt_messages]))["input_ids"].shape[1]
    )
    assert step.completion.prompt_tokens == text + 10
