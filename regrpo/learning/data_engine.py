"""The grounded reflective data engine: reference chats, RoT examples and branch points, run for real.

From a task suite (and, optionally, a trace store) :func:`build_dataset` makes:

* **reference examples** (``SFTExample(kind="reference")``): each task's reference solution run with
  the real tools and rendered exactly as the runtime renders an episode — the runtime's system prompt,
  ``render_task``, one ``<tool_call>`` turn per step, the real observation, ``<answer>``;
* **RoT examples** (``kind="rot"``) and **near-miss branch points**: at each reference step k, near-miss
  actions (:mod:`regrpo.learning.near_miss`) executed at the state before k and kept only if they
  really fail; the prompt is the reference context, the near-miss turn, and the real observation
  followed by the runtime's ``reflection_request``; the target turn is
  ``<reflection>{"error_type", "evidence", "fix_plan"}</reflection>`` and the reference call. The
  ``error_type`` is :func:`~regrpo.learning.classify.classify_failure` of the real observation, the
  evidence quotes it (checked with ``parse_reflection`` when built: a failure raises, it is our bug),
  and the fix plan names the concrete change from the bad call to the good one;
* **clean branch points** (``failed=False``, ``source="reference"``): the prompt right after each
  successful reference step, target the next step or the ``<answer>``, where a reflection is needless;
* **trace branch points** (``source="trace"``) from episodes whose ``metadata["task_id"]`` names a
  task: the context right after each failed step, with the reference step the episode had reached as
  target, and a RoT example when the runtime had asked for a reflection there.

Matching rule for traces: walk the episode's steps; a successful call equal to the next unmatched
reference step (same tool, equal arguments) advances a pointer p. At a failure the target is reference
step p (or the answer when p is past the end). The episode's successful image-making calls before the
failure must equal the reference's image-making calls before step p — otherwise image ids may mean
other images than the reference assumes, and the failure is skipped (counted as ``trace_unmatched``).

Everything is deduplicated by content hash. ``sft.jsonl`` loads with
``datasets.load_dataset("json", data_files=...)`` as it is (checked with pyarrow's JSON reader, which
that loader uses). ``branch_points.jsonl`` does not: its columns hold values of mixed types (a number
answer in one row, a text answer in the next; tool arguments), which Arrow refuses; trainers read it
with :func:`~regrpo.learning.records.read_jsonl` or :meth:`Dataset.load`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from regrpo.agent.actions import is_grounded, parse_action, parse_reflection
from regrpo.agent.prompts import reflection_request, render_system_prompt, render_task
from regrpo.agent.trigger import is_empty_output
from regrpo.errors import ErrorType, InputError
from regrpo.learning.classify import classify_failure
from regrpo.learning.near_miss import NearMiss, amake_near_misses, call_text, reference_call
from regrpo.learning.records import BranchPoint, SFTExample, read_jsonl, write_jsonl
from regrpo.learning.replay import BranchEnvironment, observation_of
from regrpo.tasks.reference import output_text
from regrpo.tasks.schema import Task
from regrpo.tasks.verifiers import contains_normalized
from regrpo.tools import ImageInfo, ImageStore, Toolbox, ToolContext, default_tools
from regrpo.traces import Episode, TraceStore
from regrpo.traces.schema import Action, Answer, Message, Observation, ToolCall, Unparseable

__all__ = [
    "Dataset",
    "DatasetCounts",
    "ReferenceRecording",
    "abuild_dataset",
    "build_dataset",
    "branch_point_id",
    "fix_plan",
    "record_reference",
    "reference_example",
    "reflection_turn",
    "trace_branch_points",
]

SFT_FILE, BRANCH_FILE, SUMMARY_FILE = "sft.jsonl", "branch_points.jsonl", "summary.json"


# -- the reference, run for real --------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceRecording:
    """A task's reference run with the real tools, rendered as the runtime would render it."""

    task: Task
    messages: list[Message]
    """system, task, then (assistant call, user observation) per executed step; no answer turn."""
    observations: list[Observation]
    images: list[list[ImageInfo]]
    """``images[k]``: the images before step k (``images[len(steps)]``: after the last step)."""
    replays: list[list[ToolCall]]
    """``replays[k]``: the image-making reference calls before step k (same indexing as ``images``)."""
    ok: bool
    reason: str | None = None

    def prefix(self, step_index: int) -> list[Message]:
        """The conversation before reference step ``step_index`` is sampled."""
        return self.messages[: 2 + 2 * step_index]


def _user_turn(action: Action, observation: Observation, images: Sequence[ImageInfo]) -> str:
    """The user message after an executed action, as ``Agent._loop`` writes it (no confidence trigger)."""
    if not observation.ok:
        reason: str | None = "tool_error"
    elif is_empty_output(observation.output):
        reason = "empty_observation"
    else:
        reason = None
    text = observation.content
    if reason:
        text += "\n" + reflection_request(reason, action, observation, images)
    return text


async def record_reference(task: Task, toolbox: Toolbox, system_prompt: str) -> ReferenceRecording:
    """Run ``task.reference`` through ``toolbox`` and check it holds (``expects``, then the answer)."""
    store = ImageStore()
    for path in task.images:
        store.add(path)
    context = ToolContext(images=store)
    messages = [
        Message("system", system_prompt),
        Message("user", render_task(task.question.strip(), store.infos())),
    ]
    observations: list[Observation] = []
    images: list[list[ImageInfo]] = [store.infos()]
    replays: list[list[ToolCall]] = [[]]
    replay: list[ToolCall] = []

    def stop(reason: str) -> ReferenceRecording:
        return ReferenceRecording(task, messages, observations, images, replays, False, reason)

    for index, step in enumerate(task.reference):
        call = reference_call(task, index)
        observation = observation_of(await toolbox.call(call.name, call.arguments, context))
        observations.append(observation)
        messages += [
            Message("assistant", call_text(call)),
            Message("user", _user_turn(call, observation, store.infos())),
        ]
        if not observation.ok:
            return stop(
                f"step {index} ({call.name}) failed: {observation.error_type}: {observation.error_message}"
            )
        text = output_text(observation.output)
        missing = [want for want in step.expects if not contains_normalized(text, want)]
        if missing:
            return stop(f"step {index} ({call.name}) output lacks {missing}")
        if observation.new_images:
            replay = [*replay, call]
        images.append(store.infos())
        replays.append(replay)
    final = output_text(observations[-1].output) if observations else ""
    if not task.check(final):
        return stop(f"the last output {final[:200]!r} does not check as {task.answer.display()!r}")
    return ReferenceRecording(task, messages, observations, images, replays, True)


def _answer_text(task: Task) -> str:
    return f"<answer>{task.answer.display()}</answer>"


def _reference_sft(recording: ReferenceRecording) -> SFTExample:
    messages = [*recording.messages, Message("assistant", _answer_text(recording.task))]
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    return SFTExample(
        messages, turns, "reference", recording.task.id, meta={"steps": len(recording.task.reference)}
    )


def reference_example(task: Task, toolbox: Toolbox, system_prompt: str) -> SFTExample | None:
    """The task's reference solution as a chat to imitate; ``None`` if the reference does not hold.

    Must not be called from a running event loop (use :func:`record_reference` there).
    """
    recording = asyncio.run(record_reference(task, toolbox, system_prompt))
    return _reference_sft(recording) if recording.ok else None


# -- reflections ------------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _evidence(action: Action, observation: Observation) -> str:
    """A sentence quoting the observation (what ``is_grounded`` checks).

    The error message is quoted where it grounds the evidence; an empty or generic one (a trace from
    a fault injector, say) falls back to quoting the whole observation text.
    """
    if isinstance(action, Unparseable):
        evidence = f'My reply could not be used: "{_clip(observation.error_message)}".'
    elif not observation.ok:
        evidence = f'The tool said "{_clip(observation.error_message)}".'
    else:
        name = action.name if isinstance(action, ToolCall) else "the call"
        evidence = f"{name} returned {_clip(_compact(observation.output))}, which holds nothing I can use."
    if is_grounded(evidence, observation.content):
        return evidence
    return f'The observation was "{_clip(observation.content)}".'


def _size_of(images: Sequence[ImageInfo], image_id: Any) -> str:
    info = next((i for i in images if i.image_id == image_id), None)
    return f"the {info.width}x{info.height} image {image_id}" if info else f"image {image_id}"


def _argument_change(
    key: str, bad: Any, good: Any, good_args: Mapping[str, Any], images: Sequence[ImageInfo]
) -> str:
    if bad is None:
        return f"add the {key} argument ({_compact(good)})"
    if good is None:
        return f"drop the {key} argument ({_compact(bad)})"
    if key in ("box", "region"):
        where = _size_of(images, good_args.get("image"))
        return f"use {key} {_compact(good)} inside {where} instead of {_compact(bad)}"
    if key == "image":
        return f"use image {good} (an existing id) instead of {_compact(bad)}"
    if type(bad) is not type(good):
        kind = {list: "list", str: "string", int: "number", float: "number"}.get(
            type(good), type(good).__name__
        )
        return f"pass {key} as a {kind}, {_compact(good)}, instead of {_compact(bad)}"
    return f"use {key} {_compact(good)} instead of {_compact(bad)}"


def fix_plan(bad: Action, good: ToolCall | Answer, images: Sequence[ImageInfo] = ()) -> str:
    """The concrete change from the failed action to the good one, in words."""
    good_text = call_text(good) if isinstance(good, ToolCall) else _answer_text_of(good)
    if isinstance(bad, Unparseable) or not isinstance(bad, ToolCall):
        return f"write exactly one well-formed action: {good_text}"
    if not isinstance(good, ToolCall):
        return f"stop calling tools and answer: {good_text}"
    if bad.name != good.name:
        return f"call {good.name} instead of {bad.name}, with arguments {_compact(good.arguments)}"
    keys = list(dict.fromkeys([*good.arguments, *bad.arguments]))
    changes = [
        _argument_change(k, bad.arguments.get(k), good.arguments.get(k), good.arguments, images)
        for k in keys
        if bad.arguments.get(k) != good.arguments.get(k)
    ]
    return "; ".join(changes) or f"repeat the call as {good_text}"


def _answer_text_of(answer: Answer) -> str:
    return f"<answer>{answer.text}</answer>"


def reflection_turn(
    action: Action, observation: Observation, good: ToolCall | Answer, images: Sequence[ImageInfo] = ()
) -> tuple[str, ErrorType]:
    """The target assistant turn after a failure: ``<reflection>{...}</reflection>`` + the good action.

    Raises ``AssertionError`` if the turn would not parse as a grounded reflection and the good action
    (a bug in this module, never bad data).
    """
    error_type = classify_failure(action, observation)
    if error_type is None:
        raise InputError(
            f"the observation {observation.content[:120]!r} shows no failure; nothing to reflect on"
        )
    body = {
        "error_type": error_type.value,
        "evidence": _evidence(action, observation),
        "fix_plan": fix_plan(action, good, images),
    }
    good_text = call_text(good) if isinstance(good, ToolCall) else _answer_text_of(good)
    text = f"<reflection>{json.dumps(body, ensure_ascii=False)}</reflection>\n{good_text}"
    reflection, problem = parse_reflection(text, observation.content)
    if problem is not None or reflection is None or reflection.error_type is not error_type:
        raise AssertionError(f"built an invalid reflection ({problem}): {text}")
    if parse_action(text) != good:
        raise AssertionError(f"the reflection turn does not parse back to the good action: {text}")
    return text, error_type


# -- records ----------------------------------------------------------------------------------------


def branch_point_id(messages: Sequence[Message], target: ToolCall | Answer) -> str:
    """The content hash of a prompt and its target: the branch point's id and deduplication key."""
    return hashlib.sha256(msgspec.json.encode([list(messages), target])).hexdigest()[:20]


def _sft_key(example: SFTExample) -> str:
    return hashlib.sha256(
        msgspec.json.encode([example.kind, example.messages, example.train_turns])
    ).hexdigest()


def _near_miss_records(
    recording: ReferenceRecording, miss: NearMiss, replay: list[ToolCall]
) -> tuple[SFTExample, BranchPoint]:
    task, k = recording.task, miss.step_index
    user = (
        miss.observation.content
        + "\n"
        + reflection_request(miss.reason, miss.action, miss.observation, miss.images)
    )
    prompt = [*recording.prefix(k), Message("assistant", miss.text), Message("user", user)]
    target, error_type = reflection_turn(miss.action, miss.observation, miss.reference, recording.images[k])
    meta = {"source": "near_miss", "perturbation": miss.kind, "step_index": k, "failed_action": miss.text}
    example = SFTExample(
        [*prompt, Message("assistant", target)], [len(prompt)], "rot", task.id, error_type, meta
    )
    if miss.observation.new_images and isinstance(miss.action, ToolCall):
        replay = [*replay, miss.action]  # an empty-but-ran call that made an image: later ids follow it
    point = BranchPoint(
        id=branch_point_id(prompt, miss.reference),
        task_id=task.id,
        messages=prompt,
        images=list(task.images),
        replay=replay,
        failed=True,
        error_type=error_type,
        observation=miss.observation.content,
        failed_action=miss.action,
        target=miss.reference,
        expects=list(task.reference[k].expects),
        answer=task.answer,
        source="near_miss",
    )
    return example, point


def _target(task: Task, step_index: int) -> tuple[ToolCall | Answer, list[str]]:
    if step_index < len(task.reference):
        return reference_call(task, step_index), list(task.reference[step_index].expects)
    return Answer(task.answer.display()), []


def _clean_points(recording: ReferenceRecording) -> list[BranchPoint]:
    task, points = recording.task, []
    for k in range(1, len(task.reference) + 1):
        prompt = recording.prefix(k)
        target, expects = _target(task, k)
        points.append(
            BranchPoint(
                id=branch_point_id(prompt, target),
                task_id=task.id,
                messages=prompt,
                images=list(task.images),
                replay=recording.replays[k],
                failed=False,
                error_type=None,
                observation=recording.observations[k - 1].content,
                failed_action=None,
                target=target,
                expects=expects,
                answer=task.answer,
                source="reference",
            )
        )
    return points


def _same_call(a: ToolCall, b: ToolCall) -> bool:
    return a.name == b.name and json.loads(json.dumps(a.arguments)) == json.loads(json.dumps(b.arguments))


def trace_branch_points(
    episodes: Iterable[Episode],
    recordings: Mapping[str, ReferenceRecording],
    counts: Counter[str] | None = None,
) -> tuple[list[BranchPoint], list[SFTExample]]:
    """Branch points (and RoT examples) at the failed steps of episodes of known tasks.

    ``recordings`` maps task ids to their (holding) reference runs; see the module docstring for the
    matching rule. ``counts`` (optional) receives ``trace_episodes`` and ``trace_unmatched``.
    """
    counts = counts if counts is not None else Counter()
    points: list[BranchPoint] = []
    examples: list[SFTExample] = []
    for episode in episodes:
        recording = recordings.get(str(episode.metadata.get("task_id", "")))
        if recording is None or not recording.ok:
            continue
        counts["trace_episodes"] += 1
        task, reached, made = recording.task, 0, []
        for step in episode.steps:
            if step.observation is None:  # an answer: nothing ran
                continue
            verdict = classify_failure(step.action, step.observation)
            if verdict is None:
                if isinstance(step.action, ToolCall):
                    if reached < len(task.reference) and _same_call(
                        step.action, reference_call(task, reached)
                    ):
                        reached += 1
                    if step.observation.new_images:
                        made.append(step.action)
                continue
            end = step.prompt_messages + 2
            prompt = episode.messages[:end]
            if made != recording.replays[reached] or len(prompt) != end or prompt[-1].role != "user":
                counts["trace_unmatched"] += 1
                continue
            target, expects = _target(task, reached)
            points.append(
                BranchPoint(
                    id=branch_point_id(prompt, target),
                    task_id=task.id,
                    messages=prompt,
                    images=list(task.images),
                    replay=list(made),
                    failed=True,
                    error_type=verdict,
                    observation=step.observation.content,
                    failed_action=step.action if isinstance(step.action, (ToolCall, Unparseable)) else None,
                    target=target,
                    expects=expects,
                    answer=task.answer,
                    source="trace",
                )
            )
            if prompt[-1].content != step.observation.content:  # the runtime asked for a reflection here
                turn, _ = reflection_turn(step.action, step.observation, target, recording.images[reached])
                meta = {"source": "trace", "trace_id": episode.trace_id, "step_index": step.index}
                examples.append(
                    SFTExample(
                        [*prompt, Message("assistant", turn)], [len(prompt)], "rot", task.id, verdict, meta
                    )
                )
    return points, examples


# -- the dataset ------------------------------------------------------------------------------------


class DatasetCounts(msgspec.Struct, kw_only=True):
    """What a build made and threw away (``summary.json``)."""

    tasks: int = 0
    failed_references: list[str] = []
    """Ids of tasks whose reference did not hold with the real tools (no data is made from them)."""
    sft_kinds: dict[str, int] = {}
    branch_sources: dict[str, int] = {}
    error_types: dict[str, int] = {}
    """Per classifier verdict, over failed branch points."""
    rot_error_types: dict[str, int] = {}
    near_miss_kinds: dict[str, int] = {}
    """Kept near-misses per perturbation kind."""
    discarded_near_misses: int = 0
    """Near-miss candidates whose call succeeded when executed."""
    discarded_by_kind: dict[str, int] = {}
    duplicates_removed: int = 0
    trace_episodes: int = 0
    trace_unmatched: int = 0
    seconds: float = 0.0


@dataclass
class Dataset:
    """SFT examples, branch points, and the counts of how they were made."""

    sft_examples: list[SFTExample] = field(default_factory=list)
    branch_points: list[BranchPoint] = field(default_factory=list)
    counts: DatasetCounts = field(default_factory=DatasetCounts)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``sft.jsonl``, ``branch_points.jsonl`` and ``summary.json`` under ``out_dir``."""
        folder = Path(out_dir).expanduser()
        write_jsonl(folder / SFT_FILE, self.sft_examples)
        write_jsonl(folder / BRANCH_FILE, self.branch_points)
        tmp = folder / f".{SUMMARY_FILE}.tmp"
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(self.counts)))
        tmp.replace(folder / SUMMARY_FILE)
        return folder

    @classmethod
    def load(cls, out_dir: str | Path) -> Dataset:
        """Read a dataset written by :meth:`save`."""
        folder = Path(out_dir).expanduser()
        summary = folder / SUMMARY_FILE
        if not summary.is_file():
            raise InputError(
                f"{str(summary)!r} does not exist; build the dataset with build_dataset(...).save() first"
            )
        try:
            counts = msgspec.json.decode(summary.read_bytes(), type=DatasetCounts)
        except msgspec.DecodeError as exc:
            raise InputError(f"{str(summary)!r} is not a dataset summary: {exc}") from None
        return cls(
            read_jsonl(folder / SFT_FILE, SFTExample), read_jsonl(folder / BRANCH_FILE, BranchPoint), counts
        )


class _Collector:
    """Accumulates records, dropping content duplicates, and tallies them."""

    def __init__(self) -> None:
        self.dataset = Dataset()
        self.seen: set[str] = set()
        self.tally: Counter[str] = Counter()
        self.discarded: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()

    def add_sft(self, example: SFTExample) -> None:
        key = "sft:" + _sft_key(example)
        if key in self.seen:
            self.tally["duplicates_removed"] += 1
            return
        self.seen.add(key)
        self.dataset.sft_examples.append(example)

    def add_point(self, point: BranchPoint) -> None:
        key = "bp:" + point.id
        if key in self.seen:
            self.tally["duplicates_removed"] += 1
            return
        self.seen.add(key)
        self.dataset.branch_points.append(point)

    def finish(self, tasks: int, failed: list[str], seconds: float) -> Dataset:
        data = self.dataset
        rot = [e for e in data.sft_examples if e.kind == "rot" and e.error_type is not None]
        failed_points = [p for p in data.branch_points if p.failed and p.error_type is not None]
        data.counts = DatasetCounts(
            tasks=tasks,
            failed_references=failed,
            sft_kinds=dict(Counter(e.kind for e in data.sft_examples)),
            branch_sources=dict(Counter(p.source for p in data.branch_points)),
            error_types=dict(Counter(str(p.error_type) for p in failed_points)),
            rot_error_types=dict(Counter(str(e.error_type) for e in rot)),
            near_miss_kinds=dict(self.kinds),
            discarded_near_misses=sum(self.discarded.values()),
            discarded_by_kind=dict(self.discarded),
            duplicates_removed=self.tally["duplicates_removed"],
            trace_episodes=self.tally["trace_episodes"],
            trace_unmatched=self.tally["trace_unmatched"],
            seconds=round(seconds, 2),
        )
        return data


async def _task_records(
    task: Task, toolbox: Toolbox, system_prompt: str, per_step: int, seed: int, out: _Collector
) -> ReferenceRecording:
    recording = await record_reference(task, toolbox, system_prompt)
    if not recording.ok:
        return recording
    out.add_sft(_reference_sft(recording))
    for point in _clean_points(recording):
        out.add_point(point)
    environment = BranchEnvironment(toolbox)
    for k in range(len(task.reference)):
        batch = await amake_near_misses(
            task,
            k,
            toolbox=toolbox,
            replay=recording.replays[k],
            environment=environment,
            n=per_step,
            seed=seed,
        )
        out.discarded.update(batch.discarded)
        for miss in batch.kept:
            out.kinds[miss.kind] += 1
            example, point = _near_miss_records(recording, miss, recording.replays[k])
            out.add_sft(example)
            out.add_point(point)
    return recording


async def abuild_dataset(
    tasks: Sequence[Task],
    *,
    toolbox: Toolbox | None = None,
    store: TraceStore | None = None,
    trace_ids: Sequence[str] | None = None,
    system_prompt: str | None = None,
    near_misses_per_step: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> Dataset:
    """:func:`build_dataset` for callers already inside an event loop."""
    if near_misses_per_step < 0:
        raise InputError(f"near_misses_per_step must be >= 0, got {near_misses_per_step}")
    started = time.perf_counter()
    toolbox = toolbox or Toolbox(default_tools())
    system_prompt = system_prompt if system_prompt is not None else render_system_prompt(toolbox.members)
    out = _Collector()
    recordings: dict[str, ReferenceRecording] = {}
    columns = (TextColumn("building data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("tasks", total=len(tasks))
        for task in tasks:
            recordings[task.id] = await _task_records(
                task, toolbox, system_prompt, near_misses_per_step, seed, out
            )
            bar.advance(job)
    if store is not None:
        episodes = (
            store.episodes(failures_only=True) if trace_ids is None else [store.get(t) for t in trace_ids]
        )
        points, examples = trace_branch_points(episodes, recordings, out.tally)
        for example in examples:
            out.add_sft(example)
        for point in points:
            out.add_point(point)
    failed = [task_id for task_id, r in recordings.items() if not r.ok]
    return out.finish(len(tasks), failed, time.perf_counter() - started)


def build_dataset(
    tasks: Sequence[Task],
    *,
    toolbox: Toolbox | None = None,
    store: TraceStore | None = None,
    trace_ids: Sequence[str] | None = None,
    system_prompt: str | None = None,
    near_misses_per_step: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> Dataset:
    """Reference examples, RoT examples and branch points for ``tasks`` (and ``store``'s failed episodes).

    Args:
        tasks: Suite tasks; a task whose reference does not hold is skipped and listed in the counts.
        toolbox: The tools the agent runs with (default ``Toolbox(default_tools())``, the agent's default).
        store: A trace store to mine for failures of these tasks (episodes need ``metadata["task_id"]``).
        trace_ids: Mine only these episodes of ``store`` (default: every episode with a failure).
        system_prompt: Default ``render_system_prompt(toolbox.members)``, the runtime's; pass the agent's
            own only if it was built with ``instructions``.
        near_misses_per_step: Near-misses kept per reference step (each really fails).
        seed: Seeds the perturbation choices.
        progress: Show a progress bar over tasks.

    Must not be called from a running event loop (use :func:`abuild_dataset` there).
    """
    return asyncio.run(
        abuild_dataset(
            tasks,
            toolbox=toolbox,
            store=store,
            trace_ids=trace_ids,
            system_prompt=system_prompt,
            near_misses_per_step=near_misses_per_step,
            seed=seed,
            progress=progress,
        )
    )
