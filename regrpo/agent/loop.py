"""``Agent``: the tool loop with Reflection-of-Thought on failure.

One episode (``arun``), top to bottom:

1. open a trace (the episode is in the store before anything can fail), check the task, load images
   (store writes and image decoding run in worker threads, off the caller's event loop);
2. render the system prompt (tools + format) and the task message;
3. each step: sample one completion → parse the reflection (if one was asked) and the action →
   answer, or run the tool, or record an unparseable turn → decide whether the next turn must start
   with a reflection → write the step to the trace;
4. finish the trace as ``answered``, ``max_steps`` or ``error``.

The model's mistakes (bad syntax, unknown tools, bad arguments, tool failures) become typed
observations and the loop goes on; bad input from the caller raises a
:class:`~regrpo.errors.RegrpoError` after the trace is written (``exc.trace_id`` names it).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from regrpo.agent.actions import parse_action, parse_reflection, split_reflection
from regrpo.agent.adapters import WARM_START, AdapterChoice, activate, adapter_folder
from regrpo.agent.policy import Policy
from regrpo.agent.prompts import render_system_prompt, render_task
from regrpo.agent.trigger import ReflectionTrigger, sequence_confidence
from regrpo.agent.turn import execute_action, generate_turn, user_turn
from regrpo.errors import InputError, RegrpoError, TaskError
from regrpo.paths import default_trace_path
from regrpo.tools import ImageInput, ImageStore, Tool, Toolbox, ToolContext, default_tools
from regrpo.tools.images import png_bytes
from regrpo.traces import (
    Answer,
    Completion,
    Episode,
    Feedback,
    ImageRecord,
    Message,
    Reflection,
    Step,
    StepTimings,
    ToolCall,
    TraceLogger,
    TraceStore,
    Usage,
)
from regrpo.verifier import Verifier, VerifierError, feedback_source, score_answer

__all__ = ["Agent", "Result"]

StepCallback = Callable[[Step], None]
_TRACE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Result:
    """What ``Agent.run`` returns; the full record is in the trace store under ``trace_id``."""

    answer: str | None
    status: Literal["answered", "max_steps", "error"]
    steps: list[Step]
    reflections: list[Reflection]
    usage: Usage
    trace_id: str
    reward: float | None = None
    """The verifier's score of the answer, when the episode ran with one (also in the trace's feedback)."""

    @classmethod
    def from_episode(cls, episode: Episode, reward: float | None = None) -> Result:
        return cls(
            answer=episode.answer,
            status=episode.status,  # type: ignore[arg-type]  # finished episodes are never "running"
            steps=list(episode.steps),
            reflections=[s.reflection for s in episode.steps if s.reflection is not None],
            usage=episode.usage,
            trace_id=episode.trace_id,
            reward=reward,
        )


class _Default(enum.Enum):
    """``Agent(adapter=...)`` left out: the warm start for the agent's own policy, a given one as it is."""

    ADAPTER = "default"


class Agent:
    """A tool-using agent that reflects on its failures and records every episode.

    Args:
        policy: The model engine (default: ``LocalPolicy()``, SmolLM2-135M-Instruct on this machine,
            running the shipped warm start: see ``adapter``).
        adapter: The LoRA adapter to load and activate: a PEFT folder, ``WARM_START`` (the shipped RoT
            SFT warm start, :mod:`regrpo.agent.adapters`) or ``None`` (the base model). Left out, it is
            ``WARM_START`` when the agent builds its own ``LocalPolicy``, and a ``policy`` you pass is
            used as it is (its active adapter untouched); given explicitly, it applies to your policy
            too (``None`` switches it to its base model). Traces name the adapter after its folder
            (``warm-start``).
        tools: Tools or typed functions (default: calculator + image tools).
        store: Where episodes go (default: ``~/.local/share/regrpo/traces.sqlite``).
        max_steps: Model turns per episode before it ends as ``max_steps``.
        max_new_tokens: Token budget of one model turn (reflection included).
        temperature: Sampling temperature of actions (0 = greedy).
        tool_timeout_s: Deadline of a tool call, for tools that set none.
        reflect: Ask for a Reflection-of-Thought after failures (False = plain retry loop, a baseline).
        confidence_trigger: Also ask for a reflection after a *successful* step taken with less than
            the episode's running-mean confidence (ReGRPO's third trigger; needs engine log-probs).
            Off by default: the training data never shows such a request and ReGRPO's reward
            penalises reflecting where the last call worked (docs/decisions.md).
        instructions: Extra text appended to the system prompt.
        verifier: A function ``(task, answer) -> float`` in [0, 1] that scores every episode's answer
            (:mod:`regrpo.verifier`); its score is recorded as the episode's feedback (``source``
            names it), the reward the learning loop reads. ``run(..., verifier=...)`` overrides it.
        keep_images: Keep each input image's pixels in the store (PNG, once per distinct image), so
            the learning loop can replay this agent's failures; ``False`` keeps sizes and hashes only.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        store: TraceStore | None = None,
        max_steps: int = 8,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        tool_timeout_s: float = 30.0,
        reflect: bool = True,
        confidence_trigger: bool = False,
        instructions: str | None = None,
        adapter: AdapterChoice | _Default = _Default.ADAPTER,
        verifier: Verifier | None = None,
        keep_images: bool = True,
    ) -> None:
        if max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {max_steps}")
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0:
            raise InputError(f"temperature must be >= 0, got {temperature}")
        self.policy = _policy_with_adapter(policy, adapter)
        self.toolbox = Toolbox(default_tools() if tools is None else tools, default_timeout_s=tool_timeout_s)
        self.store = store if store is not None else TraceStore(default_trace_path())
        self.max_steps = max_steps
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.reflect = reflect
        self.confidence_trigger = confidence_trigger
        self.system_prompt = render_system_prompt(self.toolbox.members, instructions)
        self.verifier = _checked_verifier(verifier)
        self.keep_images = keep_images

    # -- entry points -----------------------------------------------------------------------------

    def run(
        self,
        task: str,
        images: Sequence[ImageInput] | ImageInput | None = None,
        *,
        on_step: StepCallback | None = None,
        trace_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        verifier: Verifier | None = None,
    ) -> Result:
        """Run one episode to its end and return the result (the trace is already durable).

        ``on_step`` is called with each step as soon as it is written; ``trace_id`` names the episode
        (default: a fresh UUID), so a caller can announce it before the episode ends; ``metadata``
        (JSON values) is stored with the episode, e.g. the id of the suite task it ran; ``verifier``
        scores this episode's answer instead of the agent's own (``Result.reward``, and feedback).
        A verifier that raises or returns anything but a number in [0, 1] is a
        :class:`~regrpo.verifier.VerifierError` (naming it and the trace) after the episode is stored.
        """
        episode = functools.partial(
            self.arun, task, images, on_step=on_step, trace_id=trace_id, metadata=metadata, verifier=verifier
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(episode())
        # Called from inside an event loop (a notebook, a server): run the episode on its own loop.
        box: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.update(r=self._run_catching(episode)))
        thread.start()
        thread.join()
        if "error" in box["r"]:
            raise box["r"]["error"]
        return box["r"]["result"]

    def _run_catching(self, episode: Callable[[], Coroutine[Any, Any, Result]]) -> dict[str, Any]:
        try:
            return {"result": asyncio.run(episode())}
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            return {"error": exc}

    def run_many(
        self,
        tasks: Sequence[str | tuple[str, Sequence[ImageInput] | ImageInput | None]],
        *,
        concurrency: int = 4,
    ) -> list[Result]:
        """Run many episodes, at most ``concurrency`` at a time; results in input order."""
        if concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {concurrency}")

        async def all_of_them() -> list[Result]:
            gate = asyncio.Semaphore(concurrency)

            async def one(item: Any) -> Result:
                task, images = (item, None) if isinstance(item, str) else item
                async with gate:
                    return await self.arun(task, images)

            return list(await asyncio.gather(*(one(item) for item in tasks)))

        return asyncio.run(all_of_them())

    def feedback(self, trace_id: str, *, reward: float | None = None, answer: str | None = None) -> Feedback:
        """Record a reward and/or the reference answer for an episode.

        Given only ``answer``, the reward is 1.0 when the episode's answer matches it (numbers within a
        relative 1e-6, text after case and whitespace folding), else 0.0.
        """
        if reward is None and answer is None:
            raise InputError("feedback needs reward=... or answer=... (or both)")
        if reward is not None and not isinstance(reward, (int, float)):
            raise InputError(f"reward must be a number, got {type(reward).__name__}")
        episode = self.store.get_header(trace_id)
        if reward is None:
            reward = 1.0 if answers_match(episode.answer, answer) else 0.0
        record = Feedback(reward=float(reward), answer=answer)
        self.store.add_feedback(trace_id, record)
        return record

    def _judge(self, verifier: Verifier, task: str, episode: Episode) -> float:
        """Score the finished episode's answer and record it as feedback (runs in a worker thread)."""
        try:
            score = score_answer(verifier, task, episode.answer)
        except VerifierError as exc:
            exc.trace_id = episode.trace_id  # type: ignore[attr-defined]
            raise
        self.store.add_feedback(episode.trace_id, Feedback(reward=score, source=feedback_source(verifier)))
        return score

    # -- one episode ------------------------------------------------------------------------------

    async def arun(
        self,
        task: str,
        images: Sequence[ImageInput] | ImageInput | None = None,
        *,
        on_step: StepCallback | None = None,
        trace_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        verifier: Verifier | None = None,
    ) -> Result:
        """Async ``run``: the episode's model calls and tool calls run in worker threads."""
        judge = _checked_verifier(verifier) or self.verifier
        if metadata is not None and not isinstance(metadata, dict):
            raise InputError(f"metadata must be a dict of JSON values, got {type(metadata).__name__}")
        if trace_id is not None:
            if not _TRACE_ID.fullmatch(str(trace_id)):
                raise InputError(f"trace_id must be 1-64 letters, digits, '-' or '_', got {trace_id!r}")
            # the store's writes are upserts: a reused id would mix episodes
            if await asyncio.to_thread(self.store.__contains__, trace_id):
                raise InputError(f"trace_id {trace_id!r} is already in the trace store; pass a new one")
        episode = Episode(
            trace_id=trace_id or uuid.uuid4().hex,
            task=task if isinstance(task, str) else repr(task),
            started_at=time.time(),
            model=self.policy.model_name,
            adapter=self.policy.active_adapter,
            system_prompt=self.system_prompt,
            metadata=dict(metadata or {}),
        )
        # worker threads: a busy store (another process holding its write lock) or a large image must
        # not stall an event loop that serves other requests
        log = await asyncio.to_thread(TraceLogger, self.store, episode)
        try:
            store = await asyncio.to_thread(self._open_episode, log, task, images)
            status, answer = await self._loop(log, store, on_step)
        except RegrpoError as exc:
            await asyncio.to_thread(log.finish, "error", error=f"{type(exc).__name__}: {exc}")
            exc.trace_id = episode.trace_id  # type: ignore[attr-defined]
            raise
        except BaseException as exc:  # our bug or a cancellation: keep the trace (awaiting nothing), re-raise
            log.finish("error", error=f"{type(exc).__name__}: {exc}")
            raise
        finished = await asyncio.to_thread(log.finish, status, answer=answer)
        if judge is None:
            return Result.from_episode(finished)
        return Result.from_episode(finished, await asyncio.to_thread(self._judge, judge, task, finished))

    def _open_episode(self, log: TraceLogger, task: Any, images: Any) -> ImageStore:
        if not isinstance(task, str):
            raise TaskError(f"task must be a string, got {type(task).__name__}")
        if not task.strip():
            raise TaskError("task is empty; pass the question or instruction as text")
        if images is None:
            images = []
        elif not isinstance(images, (list, tuple)):
            images = [images]
        store = ImageStore()
        for image in images:
            store.add(image)
        log.episode.images = []
        for info in store.infos():
            record = image_record(store, info.image_id)
            if self.keep_images and not self.store.has_image(record.sha256):  # encode each image once
                self.store.put_image(record.sha256, png_bytes(store.get(info.image_id)))
            log.episode.images.append(record)
        log.update_header()
        log.message(Message("system", self.system_prompt))
        shown = tuple(info.image_id for info in store.infos())
        log.message(Message("user", render_task(task.strip(), store.infos()), images=shown))
        return store

    def _read_reflection(
        self, text: str, requested: str | None, observation: str
    ) -> tuple[Reflection | None, str | None, int]:
        """``(reflection, problem, reflection_tokens)`` of a turn; nothing when none was asked for."""
        if not requested:
            return None, None, 0
        reflection, problem = parse_reflection(text, observation)
        body, _ = split_reflection(text)
        return reflection, problem, self.policy.count_tokens(body) if body is not None else 0

    def _action_logprobs(self, completion: Completion) -> list[float]:
        """Log-probs of the action's tokens: those after a reflection block, counted from the end.

        The reference trigger scores u_i on the action alone; a reflection's tokens would inflate it.
        The split is by token count of the text outside the block (exact up to tokens that straddle it).
        """
        body, outside = split_reflection(completion.text)
        if body is None:
            return completion.logprobs
        action_tokens = self.policy.count_tokens(outside)
        return (
            completion.logprobs[-action_tokens:]
            if 0 < action_tokens < len(completion.logprobs)
            else completion.logprobs
        )

    async def _loop(
        self, log: TraceLogger, images: ImageStore, on_step: StepCallback | None
    ) -> tuple[Literal["answered", "max_steps"], str | None]:
        usage = log.episode.usage
        trigger = ReflectionTrigger(use_confidence=self.confidence_trigger)
        context = ToolContext(images=images, episode_key=_episode_key(log.episode))
        requested: str | None = None  # why this step must start with a reflection
        last_observation = ""  # the observation that reflection must quote
        for index in range(self.max_steps):
            started = time.perf_counter()
            prompt_messages = len(log.episode.messages)
            completion = await generate_turn(
                self.policy,
                log.episode.messages,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                images=images,
            )
            generate_s = time.perf_counter() - started
            await asyncio.to_thread(log.message, Message("assistant", completion.text))

            reflection, problem, reflection_tokens = self._read_reflection(
                completion.text, requested, last_observation
            )
            action = parse_action(completion.text)
            observation, tool_s = await execute_action(self.toolbox, action, context)

            # decide on a reflection for the next turn, and show the observation
            confidence = sequence_confidence(self._action_logprobs(completion))
            next_reason = None
            if observation is not None:
                text, next_reason = user_turn(
                    observation,
                    action,
                    trigger,
                    images.infos(),
                    reflect=self.reflect,
                    confidence=confidence,
                )
                made = tuple(observation.new_images)
                await asyncio.to_thread(log.message, Message("user", text, images=made))

            step = Step(
                index=index,
                prompt_messages=prompt_messages,
                completion=completion,
                action=action,
                observation=observation,
                reflection=reflection,
                reflection_requested=requested,
                reflection_problem=problem,
                reflection_tokens=reflection_tokens,
                confidence=confidence,
                adapter=completion.adapter,
                timings=StepTimings(
                    generate_s=generate_s, tool_s=tool_s, total_s=time.perf_counter() - started
                ),
                images_made=[image_record(images, i) for i in observation.new_images] if observation else [],
            )
            _count(usage, step)
            await asyncio.to_thread(log.step, step)
            if on_step is not None:
                on_step(step)
            if isinstance(action, Answer):
                return "answered", action.text
            requested = next_reason if self.reflect else None
            last_observation = observation.content if observation is not None else ""
        return "max_steps", None


def _checked_verifier(verifier: Verifier | None) -> Verifier | None:
    if verifier is not None and not callable(verifier):
        raise InputError(
            f"verifier must be a function (task, answer) -> float, got {type(verifier).__name__}"
        )
    return verifier


def _policy_with_adapter(policy: Policy | None, adapter: AdapterChoice | _Default) -> Policy:
    """The agent's policy with the adapter ``Agent`` was asked for active (see its docstring)."""
    if policy is None:
        choice = WARM_START if adapter is _Default.ADAPTER else adapter
        if choice is not None:
            adapter_folder(choice)  # a bad path fails before the model loads, not after
        from regrpo.agent.local import LocalPolicy

        policy = LocalPolicy()
    elif adapter is _Default.ADAPTER:
        return policy
    else:
        choice = adapter
        needed = ("load_adapter", "activate_adapter") if choice is not None else ("activate_adapter",)
        if missing := [m for m in needed if not callable(getattr(policy, m, None))]:
            raise InputError(
                f"adapter={choice!r} was given with a policy that cannot switch adapters "
                f"({type(policy).__name__} has no {', '.join(missing)}): load the adapter into the engine "
                "yourself, or leave adapter out to use the policy as it is"
            )
    activate(policy, choice)
    return policy


def image_record(images: ImageStore, image_id: str) -> ImageRecord:
    """An episode image by reference: id, size and the SHA-256 of its RGB pixel bytes."""
    pixels, info = images.get(image_id), images.info(image_id)
    return ImageRecord(image_id, info.width, info.height, hashlib.sha256(pixels.tobytes()).hexdigest())


def _episode_key(episode: Episode) -> str:
    """A digest of what the episode was given (task text, input images), the same for every method."""
    parts = [episode.task, *(image.sha256 for image in episode.images)]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def _count(usage: Usage, step: Step) -> None:
    usage.steps += 1
    usage.prompt_tokens += step.completion.prompt_tokens
    usage.completion_tokens += len(step.completion.token_ids)
    usage.generate_s += step.timings.generate_s
    usage.tool_s += step.timings.tool_s
    if isinstance(step.action, ToolCall):
        usage.tool_calls += 1
    if step.failed and isinstance(step.action, ToolCall):
        usage.tool_failures += 1
    if step.reflection is not None:
        usage.reflections += 1
        usage.valid_reflections += step.reflection_problem is None
    usage.reflection_tokens += step.reflection_tokens


def answers_match(given: str | None, reference: str | None) -> bool:
    """Numbers within a relative 1e-6; otherwise text equal after case and whitespace folding."""
    if given is None or reference is None:
        return False
    try:
        a, b = float(given.strip().replace(",", "")), float(reference.strip().replace(",", ""))
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    except ValueError:
        return " ".join(given.lower().split()) == " ".join(reference.lower().split())
