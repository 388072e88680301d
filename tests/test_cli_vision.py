"""The CLI on a vision model folder: ``run`` picks ``VisionPolicy`` by itself and the image reaches the
model (``serve-model`` on one: tests/server/test_serve_commands.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from regrpo.agent.image_parts import chat_for
from regrpo.agent.vision import VisionPolicy
from regrpo.agent.vision_models import build_tiny_qwen2_vl
from regrpo.tools import ImageStore
from regrpo.traces import TraceStore


def regrpo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regrpo.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory):
    return str(build_tiny_qwen2_vl(tmp_path_factory.mktemp("cli-vlm") / "tiny-qwen2-vl"))


def test_run_on_a_vision_model_folder_shows_the_image_to_the_model(vlm_folder, tmp_path):
    Image.new("RGB", (112, 56), (200, 40, 40)).save(tmp_path / "red.png")
    store = tmp_path / "traces.sqlite"
    done = regrpo(
        "run", "What colour is img_0?", "--model", vlm_folder, "--image", str(tmp_path / "red.png"),
        "--store", str(store), "--max-steps", "1", "--max-new-tokens", "4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (episode,) = TraceStore(store).episodes()
    assert episode.model == vlm_folder and episode.messages[1].images == ("img_0",)
    step = episode.steps[0]
    assert len(step.completion.token_ids) == len(step.completion.logprobs) > 0
    # the step's prompt is the trace's messages with the image: 112 x 56 px are 8 image tokens (one
    # per 28 x 28) plus the vision start and end marks, 10 more than the same text alone
    images = ImageStore()
    images.add(tmp_path / "red.png")
    prompt = episode.messages[: step.prompt_messages]
    policy = VisionPolicy(vlm_folder)
    shown = policy.encode(chat_for(policy, prompt, images))["input_ids"].shape[1]
    text = policy.encode(chat_for(policy, prompt, None))["input_ids"].shape[1]
    assert step.completion.prompt_tokens == shown == text + 10


def test_train_sft_and_regrpo_on_a_vision_model_folder_show_it_the_images(tmp_path):
    """``regrpo train sft`` and ``train regrpo`` pick ``VisionPolicy`` for a vision folder: every
    example and branch point of a suite build (rotated text: a rotation's output is shown) is
    rebuilt with its images and trained on, none left out."""
    import json

    from regrpo.agent.vision_models import build_tiny_idefics3

    folder = str(build_tiny_idefics3(tmp_path / "tiny-idefics3"))
    suite = ("--tasks", "12", "--split", "train", "--categories", "rotated_text", "--limit", "2")
    data = regrpo("train", "data", *suite, "--out", str(tmp_path / "data"))
    assert data.returncode == 0, data.stderr
    sft = regrpo(
        "train", "sft", "--model", folder, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "sft"),
        "--epochs", "1", "--batch-size", "32",
    )  # fmt: skip
    assert sft.returncode == 0, sft.stderr
    report = json.loads((tmp_path / "sft" / "train_report.json").read_text())
    assert report["samples"] > 0 and report["unreplayable"] == 0
    rl = regrpo(
        "train", "regrpo", "--model", folder, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "rl"),
        "--init", str(tmp_path / "sft"), "--group-size", "2", "--max-rollouts", "4", "--max-new-tokens", "8",
    )  # fmt: skip
    assert rl.returncode == 0, rl.stderr
    report = json.loads((tmp_path / "rl" / "train_report.json").read_text())
    assert report["groups"] == 2 and report["rollouts"] == 4 and report["unreplayable"] == 0
