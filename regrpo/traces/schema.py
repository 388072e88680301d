"""The trace schema: msgspec Structs for one episode and its steps.

One frozen step record serves prompting, RL samples and logs (STYLE.md lesson 9). It is written to
the store as msgpack and exported as JSON by msgspec; ``tests/traces/test_schema.py`` guards the
round trip. Reading a step back never needs the process that wrote it.

Prompt reference: an episode keeps the whole conversation once (``Episode.messages``); the prompt of
step *i* is the prefix ``messages[:step.prompt_messages]``. Nothing is stored twice and the learning
module can rebuild exactly what the model saw.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from regrpo.errors import ErrorType

__all__ = [
    "Answer",
    "Action",
    "Completion",
    "Episode",
    "EpisodeStatus",
    "Feedback",
    "ImageRecord",
    "Message",
    "Observation",
    "Reflection",
    "Step",
    "StepTimings",
    "ToolCall",
    "Unparseable",
    "Usage",
]


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message, as sent to the policy (encoded without ``images`` when it shows none, so a
    text-only message encodes, and a branch point over text-only messages hashes, as it always did)."""

    role: Literal["system", "user", "assistant"]
    content: str
    images: tuple[str, ...] = ()
    """Ids of the images that appear in this message (the task's, or those a tool just made): an
    engine that takes images is shown them here, before ``content``, and only here; a text-only
    engine reads the ids and sizes that ``content`` names (``regrpo.agent.image_parts``)."""

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class Completion(msgspec.Struct, frozen=True):
    """One sampled completion: its text and, when the engine gives them, its tokens and log-probs."""

    text: str
    token_ids: list[int] = []
    """Generated token ids (prompt excluded), in order."""
    logprobs: list[float] = []
    """Natural-log probability of each generated token under the policy (un-tempered), same length."""
    finish_reason: Literal["stop", "length"] = "stop"
    prompt_tokens: int = 0
    """Tokens in the prompt this completion continued (0 when the engine does not say)."""
    adapter: str | None = None
    """The LoRA adapter that generated it, read when generation started (``None``: the base model)."""


class ToolCall(msgspec.Struct, frozen=True, tag="tool_call"):
    """The model asked to run ``name`` with ``arguments``."""

    name: str
    arguments: dict[str, Any]


class Answer(msgspec.Struct, frozen=True, tag="answer"):
    """The model gave its final answer."""

    text: str


class Unparseable(msgspec.Struct, frozen=True, tag="unparseable"):
    """The model's turn held no valid action; ``reason`` says why (shown to the model)."""

    reason: str


Action = ToolCall | Answer | Unparseable


class Observation(msgspec.Struct, frozen=True):
    """What executing an action showed the model."""

    ok: bool
    content: str
    """The text the model was shown."""
    output: Any = None
    """The tool's JSON result (``None`` on failure or for a non-tool action)."""
    error_type: ErrorType | None = None
    error_message: str = ""
    new_images: list[str] = []
    attempts: int = 0


class Reflection(msgspec.Struct, frozen=True):
    """A Reflection-of-Thought triplet: what kind of error, the evidence for it, and the fix."""

    error_type: ErrorType
    evidence: str
    """Should quote the failure observation (checked: see ``Step.reflection_problem``)."""
    fix_plan: str


class StepTimings(msgspec.Struct, frozen=True):
    """Seconds spent in the step's phases."""

    generate_s: float = 0.0
    tool_s: float = 0.0
    total_s: float = 0.0


class ImageRecord(msgspec.Struct, frozen=True):
    """An episode image, by reference: its id, size and content hash. An input image's pixels are
    kept once per store, under that hash, by an agent with ``keep_images=True``
    (``TraceStore.get_image``); a tool-made one is rebuilt by re-running its call."""

    image_id: str
    width: int
    height: int
    sha256: str
    """SHA-256 of the RGB pixel bytes, to find the same image again."""


class Step(msgspec.Struct, frozen=True):
    """One turn of the loop: the model's completion, the action parsed from it, and what it caused."""

    index: int
    prompt_messages: int
    """Length of the prefix of ``Episode.messages`` that was the prompt of this step."""
    completion: Completion
    action: Action
    observation: Observation | None = None
    """``None`` for an answer (nothing was executed)."""
    reflection: Reflection | None = None
    """The RoT triplet the model wrote before this step's action, when a reflection was requested."""
    reflection_requested: str | None = None
    """Why the runtime asked for a reflection before this step (the trigger's reason), if it did."""
    reflection_problem: str | None = None
    """Why the reflection is missing or invalid (unparsed JSON, unknown error type, ungrounded evidence)."""
    reflection_tokens: int = 0
    confidence: float | None = None
    """exp(mean log-prob) of the completion's tokens; ``None`` when the engine gives no log-probs."""
    adapter: str | None = None
    """The LoRA adapter version that produced this step (``None`` = base model)."""
    timings: StepTimings = StepTimings()
    images_made: list[ImageRecord] = []
    """The images this step's tool call made (``observation.new_images``), with their content hashes:
    a replay that re-runs the call can check it rebuilt the same pixels the model was shown."""

    @property
    def failed(self) -> bool:
        """True when the action could not be executed or its tool failed."""
        if isinstance(self.action, Unparseable):
            return True
        return self.observation is not None and not self.observation.ok


class Usage(msgspec.Struct):
    """Counters for one episode (mutable while the episode runs)."""

    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    reflections: int = 0
    valid_reflections: int = 0
    reflection_tokens: int = 0
    generate_s: float = 0.0
    tool_s: float = 0.0
    wall_s: float = 0.0


EpisodeStatus = Literal["running", "answered", "max_steps", "error"]


class Feedback(msgspec.Struct, frozen=True):
    """A reward and/or reference answer recorded for an episode after it ran."""

    reward: float | None = None
    answer: str | None = None
    created_at: float = msgspec.field(default_factory=time.time)
    source: str | None = None
    """Who judged: ``"verifier:<module>:<function>"`` for a verifier's score, ``None`` for a caller's."""


class Episode(msgspec.Struct):
    """One run of the agent on one task."""

    trace_id: str
    task: str
    started_at: float
    model: str
    adapter: str | None = None
    images: list[ImageRecord] = []
    system_prompt: str = ""
    messages: list[Message] = []
    steps: list[Step] = []
    status: EpisodeStatus = "running"
    answer: str | None = None
    error: str | None = None
    """For status ``error``: the exception that ended the episode, as ``Type: message``."""
    usage: Usage = msgspec.field(default_factory=Usage)
    ended_at: float | None = None
    updated_at: float | None = None
    """The runtime's last write to this episode (each step, and the end): a heartbeat, so a reader
    tells an episode still running from one whose process died (``None`` in traces older than it)."""
    feedback: list[Feedback] = []
    metadata: dict[str, Any] = {}

    @property
    def has_failure(self) -> bool:
        return self.status == "error" or any(step.failed for step in self.steps)

    @property
    def reward(self) -> float | None:
        """The latest recorded reward, if any."""
        rewards = [f.reward for f in self.feedback if f.reward is not None]
        return rewards[-1] if rewards else None
