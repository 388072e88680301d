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
  evidence quotes a few words of the tool's message (checked with ``parse_reflection`` when built: a
  failure raises, it is our bug), and the fix plan names the change from the bad call to the good one
  in one short sentence (:mod:`regrpo.learning.reflections`, in a few phrasings);
* **fault RoT examples and branch points** (``source="fault"``): at each reference step, the reference
  call itself run under an injected transient fault — a timeout, a crash, an emptied output — with the
  evaluation's own fault injection (:mod:`regrpo.learning.fault_recovery`); the target names the
  error type and retries the same call;
* **clean branch points** (``failed=False``, ``source="reference"``): the prompt right after each
  successful reference step, target the next step or the ``<answer>``, where a reflection is needless;
* **trace branch points** (``source="trace"``) from episodes whose ``metadata["task_id"]`` names a
  task: the context right after each failed step, with the reference step the episode had reached as
  target, and a RoT example when the runtime had asked for a reflection there;
* **traffic branch points** (``source="traffic"``, no target) at every failed step of episodes with
  no task id at all, and at the answer turn of those whose feedback named a different answer: a
  user's own traffic, judged without a reference (:mod:`regrpo.learning.traffic`).

Matching rule for traces: walk the episode's steps; a successful call equal to the next unmatched
reference step (same tool, equal arguments) advances a pointer p. At a failure the target is reference
step p (or the answer when p is past the end). The episode's successful image-making calls before the
failure must equal the reference's image-making calls before step p — otherwise image ids may mean
other images than the reference assumes, and the failure is skipped (counted as ``trace_unmatched``).

Every SFT target turn is checked as it is added (:func:`~regrpo.learning.budget.check_target`): it must
end at its action's closing tag, hold no stop string or tag before it, and fit
``DataEngineConfig.target_tokens`` policy tokens; a reflection that does not fit in its usual
phrasing is written tersely, and one that still does not is an ``InputError`` naming the example.
The counts record the p50/p90/p99/max target lengths.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from regrpo.agent.prompts import reflection_request, render_system_prompt
from regrpo.errors import ErrorType, InputError
from regrpo.learning.budget import (
    DEFAULT_TARGET_TOKENS,
    TokenCounter,
    check_target,
    policy_token_counter,
    token_percentiles,
)
from regrpo.learning.classify import classify_failure
from regrpo.learning.fault_recovery import (
    RETRY_FAULT_KINDS,
    FaultedCall,
    afault_reference_call,
    faulty_toolbox,
)
from regrpo.learning.near_miss import NearMiss, amake_near_misses, call_text, reference_call
from regrpo.learning.records import BranchPoint, Dataset, DatasetCounts, SFTExample, branch_point_id
from regrpo.learning.reference_chat import (
    ReferenceRecording,
    record_reference,
    reference_example,
    reference_sft,
)
from regrpo.learning.reflections import MAX_BREVITY, evidence, fix_plan, reflection_turn
from regrpo.learning.replay import BranchEnvironment
from regrpo.learning.traffic import learnable_trace_ids, traffic_branch_points
from regrpo.paths import default_cache_dir
from regrpo.tasks.schema import Task
from regrpo.tools import ImageInfo, Toolbox, default_tools
from regrpo.tools.faults import FaultKind
from regrpo.traces import Episode, TraceStore
from regrpo.traces.schema import Action, Answer, Message, Observation, ToolCall, Unparseable

__all__ = [
    "DataEngineConfig",
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


# -- records ----------------------------------------------------------------------------------------


def _sft_key(example: SFTExample) -> str:
    return hashlib.sha256(
        msgspec.json.encode([example.kind, example.messages, example.train_turns])
    ).hexdigest()


def _variant(*parts: object) -> int:
    """A stable phrasing index for one example (the same data gives the same wording)."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=4).digest())


TurnFits = Callable[[str], bool]


def _fitted_turn(
    action: Action,
    observation: Observation,
    good: ToolCall | Answer,
    images: Sequence[ImageInfo],
    variant: int,
    fits: TurnFits,
) -> tuple[str, ErrorType]:
    """The reflection turn in its ``variant`` phrasing, shortened step by step while over budget."""
    for brevity in range(MAX_BREVITY + 1):
        turn = reflection_turn(action, observation, good, images, variant=variant, brevity=brevity)
        if fits(turn[0]):
            break
    return turn  # the shortest, if none fits: the collector's check names it


@dataclass(frozen=True)
class _Failure:
    """One failed action at reference step ``step_index`` and what the runtime recorded for it."""

    step_index: int
    text: str
    """The assistant turn that made it."""
    action: ToolCall | Unparseable
    observation: Observation
    reason: str
    images: list[ImageInfo]
    """The images after it ran (what the reflection request lists)."""
    source: Literal["near_miss", "fault"]
    meta: dict[str, Any]


def _failure_records(
    recording: ReferenceRecording,
    failure: _Failure,
    replay: list[ToolCall],
    variant: int,
    fits: TurnFits,
    *,
    continue_to_answer: bool = False,
) -> tuple[SFTExample, BranchPoint]:
    """The RoT example and the branch point after ``failure``; the target is reference step k.

    ``continue_to_answer``: the example goes on after the fix with the reference's real observations
    and later turns through the answer, and trains those turns too (``DataEngineConfig.rot_continuations``),
    unless the failed call made an image (later ids would then differ from the recording's).
    """
    task, k, observation = recording.task, failure.step_index, failure.observation
    request = reflection_request(failure.reason, failure.action, observation, failure.images)
    prompt = [
        *recording.prefix(k),
        Message("assistant", failure.text),
        Message("user", observation.content + "\n" + request, images=tuple(observation.new_images)),
    ]
    good = reference_call(task, k)
    target, error_type = _fitted_turn(failure.action, observation, good, recording.images[k], variant, fits)
    meta = {"source": failure.source, "step_index": k, "failed_action": failure.text, **failure.meta}
    made_call = failure.action if observation.new_images and isinstance(failure.action, ToolCall) else None
    messages = [*prompt, Message("assistant", target)]
    if continue_to_answer and made_call is None:
        messages += recording.after(k)
        meta["continued"] = True
    turns = [len(prompt)] + [
        i for i in range(len(prompt) + 1, len(messages)) if messages[i].role == "assistant"
    ]
    example = SFTExample(messages, turns, "rot", task.id, error_type, meta, images=list(task.images))
    if made_call is not None:
        replay = [*replay, made_call]  # an empty-but-ran call that made an image: later ids follow it
    point = BranchPoint(
        id=branch_point_id(prompt, good),
        task_id=task.id,
        messages=prompt,
        images=list(task.images),
        replay=replay,
        failed=True,
        error_type=error_type,
        observation=observation.content,
        failed_action=failure.action,
        target=good,
        expects=list(task.reference[k].expects),
        answer=task.answer,
        source=failure.source,
    )
    return example, point


def _near_miss_failure(miss: NearMiss) -> _Failure:
    meta = {"perturbation": miss.kind}
    return _Failure(
        miss.step_index, miss.text, miss.action, miss.observation, miss.reason, miss.images, "near_miss", meta
    )


def _fault_failure(faulted: FaultedCall) -> _Failure:
    return _Failure(
        faulted.step_index,
        call_text(faulted.call),
        faulted.call,
        faulted.observation,
        faulted.reason,
        faulted.images,
        "fault",
        {"fault": faulted.kind},
    )


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


def _quotable(action: Action, observation: Observation) -> bool:
    """Whether a grounded reflection on ``observation`` can be written (a bare ``Error:`` cannot)."""
    try:
        evidence(action, observation)
    except InputError:
        return False
    return True


def _same_call(a: ToolCall, b: ToolCall) -> bool:
    return a.name == b.name and json.loads(json.dumps(a.arguments)) == json.loads(json.dumps(b.arguments))


def trace_branch_points(
    episodes: Iterable[Episode],
    recordings: Mapping[str, ReferenceRecording],
    counts: Counter[str] | None = None,
    fits: TurnFits | None = None,
) -> tuple[list[BranchPoint], list[SFTExample]]:
    """Branch points (and RoT examples) at the failed steps of episodes of known tasks.

    ``recordings`` maps task ids to their (holding) reference runs; see the module docstring for the
    matching rule. ``counts`` (optional) receives ``trace_episodes`` and ``trace_unmatched``. ``fits``
    (optional) says whether a target turn fits the token budget; one that does not is written tersely.
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
                BranchPoint.at_failed_step(
                    prompt,
                    step,
                    verdict,
                    task_id=task.id,
                    images=list(task.images),
                    replay=made,
                    source="trace",
                    target=target,
                    expects=expects,
                    answer=task.answer,
                )
            )
            asked = prompt[-1].content != step.observation.content  # the runtime asked for a reflection
            if asked and not _quotable(step.action, step.observation):
                counts["unquotable_failures"] += 1
            elif asked:
                turn, _ = _fitted_turn(
                    step.action,
                    step.observation,
                    target,
                    recording.images[reached],
                    _variant(episode.trace_id, step.index),
                    fits or (lambda _: True),
                )
                meta = {"source": "trace", "trace_id": episode.trace_id, "step_index": step.index}
                examples.append(
                    SFTExample(
                        [*prompt, Message("assistant", turn)],
                        [len(prompt)],
                        "rot",
                        task.id,
                        verdict,
                        meta,
                        images=list(task.images),
                    )
                )
    return points, examples


# -- the dataset ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataEngineConfig:
    """How much :func:`build_dataset` makes per reference step, and what every target must fit."""

    near_misses_per_step: int = 2
    """Near-misses kept per reference step (each really fails)."""
    faults_per_step: int = 1
    """Faulted runs of the reference call kept per step: a transient fault, and the target retries it."""
    fault_kinds: tuple[FaultKind, ...] = RETRY_FAULT_KINDS
    """The injected faults tried, in a seeded order (a subset of ``RETRY_FAULT_KINDS``)."""
    seed: int = 0
    """Seeds the perturbations, the order of the fault kinds and the faults' own draws."""
    target_tokens: int = DEFAULT_TARGET_TOKENS
    """Budget of every SFT target turn, in policy tokens: the smallest ``max_new_tokens`` the runtime
    uses (the demo's 112; evaluation and ReGRPO use 128). A target over it is an ``InputError``."""
    rot_continuations: bool = False
    """RoT examples go on after the fix through the answer (the reference's real observations) and
    train those turns too, so the model learns to carry on after a recovery, not only to recover.
    Off by default until a warm start trained with it is measured (docs/results.md)."""

    def __post_init__(self) -> None:
        if self.near_misses_per_step < 0 or self.faults_per_step < 0:
            raise InputError(
                f"near_misses_per_step and faults_per_step must be >= 0, got {self.near_misses_per_step} "
                f"and {self.faults_per_step}"
            )
        unknown = [kind for kind in self.fault_kinds if kind not in RETRY_FAULT_KINDS]
        if unknown:
            raise InputError(
                f"fault_kinds {unknown} are not fixed by a retry; choose from {list(RETRY_FAULT_KINDS)}"
            )
        if self.target_tokens < 1:
            raise InputError(f"target_tokens must be >= 1, got {self.target_tokens}")


def _example_name(example: SFTExample, turn: int) -> str:
    where = ", ".join(
        f"{key} {example.meta[key]}"
        for key in ("source", "perturbation", "fault", "step_index")
        if key in example.meta
    )
    return f"{example.kind} example of task {example.task_id!r} ({where or 'reference'}), turn {turn}"


class _Collector:
    """Accumulates records, dropping content duplicates, checking every target, and tallies them."""

    def __init__(self, count_tokens: TokenCounter, budget: int) -> None:
        self.dataset = Dataset()
        self.count_tokens, self.budget = count_tokens, budget
        self.seen: set[str] = set()
        self.tally: Counter[str] = Counter()
        self.discarded: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.skipped_faults: Counter[str] = Counter()
        self.lengths: dict[str, list[int]] = {"reference": [], "rot": []}

    def fits(self, text: str) -> bool:
        return self.count_tokens(text) <= self.budget

    def add_sft(self, example: SFTExample) -> None:
        """Keep ``example`` unless seen; raises ``InputError`` if a target would be cut at generation."""
        key = "sft:" + _sft_key(example)
        if key in self.seen:
            self.tally["duplicates_removed"] += 1
            return
        for turn in example.train_turns:
            name = _example_name(example, turn)
            tokens = check_target(example.messages[turn].content, name, self.count_tokens, self.budget)
            self.lengths[example.kind].append(tokens)
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
            fault_kinds=dict(self.faults),
            skipped_faults=dict(self.skipped_faults),
            duplicates_removed=self.tally["duplicates_removed"],
            trace_episodes=self.tally["trace_episodes"],
            trace_unmatched=self.tally["trace_unmatched"],
            traffic_episodes=self.tally["traffic_episodes"],
            traffic_images_missing=self.tally["traffic_images_missing"],
            traffic_unmatched=self.tally["traffic_unmatched"],
            traffic_wrong_answers=self.tally["traffic_wrong_answers"],
            traffic_wrong_unnamed=self.tally["traffic_wrong_unnamed"],
            traffic_verifier_unresolved=self.tally["traffic_verifier_unresolved"],
            traffic_taken_turns=self.tally["traffic_taken_turns"],
            traffic_taken_untokenised=self.tally["traffic_taken_untokenised"],
            unquotable_failures=self.tally["unquotable_failures"],
            target_token_budget=self.budget,
            target_tokens=token_percentiles([n for lengths in self.lengths.values() for n in lengths]),
            rot_target_tokens=token_percentiles(self.lengths["rot"]),
            seconds=round(seconds, 2),
        )
        return data


@dataclass(frozen=True)
class _Build:
    """What every task's records are made with."""

    toolbox: Toolbox
    system_prompt: str
    config: DataEngineConfig
    faulty: dict[FaultKind, Toolbox]
    """One fault-injecting toolbox per kind in ``config.fault_kinds`` (the same tools, wrapped)."""


async def _task_records(task: Task, build: _Build, out: _Collector) -> ReferenceRecording:
    recording = await record_reference(task, build.toolbox, build.system_prompt)
    if not recording.ok:
        return recording
    out.add_sft(reference_sft(recording))
    for point in _clean_points(recording):
        out.add_point(point)
    config, environment = build.config, BranchEnvironment(build.toolbox)
    for k in range(len(task.reference)):
        replay = recording.replays[k]
        batch = await amake_near_misses(
            task,
            k,
            toolbox=build.toolbox,
            replay=replay,
            environment=environment,
            n=config.near_misses_per_step,
            seed=config.seed,
        )
        out.discarded.update(batch.discarded)
        failures = [_near_miss_failure(miss) for miss in batch.kept]
        out.kinds.update(miss.kind for miss in batch.kept)
        if config.faults_per_step and build.faulty:
            faulted = await afault_reference_call(
                task,
                k,
                toolboxes=build.faulty,
                environment=environment,
                replay=replay,
                n=config.faults_per_step,
                seed=config.seed,
            )
            out.skipped_faults.update(faulted.skipped)
            out.faults.update(f.kind for f in faulted.kept)
            failures += [_fault_failure(f) for f in faulted.kept]
        for failure in failures:
            if not _quotable(failure.action, failure.observation):
                out.tally["unquotable_failures"] += 1
                continue
            tag = failure.meta.get("perturbation", failure.meta.get("fault"))
            variant = _variant(config.seed, task.id, k, tag)
            example, point = _failure_records(
                recording, failure, replay, variant, out.fits, continue_to_answer=config.rot_continuations
            )
            out.add_sft(example)
            out.add_point(point)
    return recording


async def abuild_dataset(
    tasks: Sequence[Task],
    *,
    config: DataEngineConfig | None = None,
    toolbox: Toolbox | None = None,
    store: TraceStore | None = None,
    trace_ids: Sequence[str] | None = None,
    system_prompt: str | None = None,
    count_tokens: TokenCounter | None = None,
    near_misses_per_step: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    image_dir: str | Path | None = None,
) -> Dataset:
    """:func:`build_dataset` for callers already inside an event loop."""
    config = config or DataEngineConfig()
    if near_misses_per_step is not None:
        config = replace(config, near_misses_per_step=near_misses_per_step)
    if seed is not None:
        config = replace(config, seed=seed)
    started = time.perf_counter()
    toolbox = toolbox or Toolbox(default_tools())
    build = _Build(
        toolbox,
        system_prompt if system_prompt is not None else render_system_prompt(toolbox.members),
        config,
        {kind: faulty_toolbox(toolbox, kind, config.seed) for kind in config.fault_kinds},
    )
    out = _Collector(count_tokens or policy_token_counter(), config.target_tokens)
    recordings: dict[str, ReferenceRecording] = {}
    columns = (TextColumn("building data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("tasks", total=len(tasks))
        for task in tasks:
            recordings[task.id] = await _task_records(task, build, out)
            bar.advance(job)
    if store is not None:
        chosen = learnable_trace_ids(store) if trace_ids is None else trace_ids
        episodes = [store.get(trace_id) for trace_id in chosen]
        points, examples = trace_branch_points(episodes, recordings, out.tally, out.fits)
        for example in examples:
            out.add_sft(example)
        images = Path(image_dir) if image_dir is not None else default_cache_dir() / "trace-images"
        for point in points + traffic_branch_points(episodes, store, images, out.tally):
            out.add_point(point)
    failed = [task_id for task_id, r in recordings.items() if not r.ok]
    return out.finish(len(tasks), failed, time.perf_counter() - started)


def build_dataset(
    tasks: Sequence[Task],
    *,
    config: DataEngineConfig | None = None,
    toolbox: Toolbox | None = None,
    store: TraceStore | None = None,
    trace_ids: Sequence[str] | None = None,
    system_prompt: str | None = None,
    count_tokens: TokenCounter | None = None,
    near_misses_per_step: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    image_dir: str | Path | None = None,
) -> Dataset:
    """Reference examples, RoT examples and branch points for ``tasks`` (and ``store``'s failed episodes).

    Args:
        tasks: Suite tasks; a task whose reference does not hold is skipped and listed in the counts.
        config: Near-misses and faulted calls per step, seed, target token budget
            (default ``DataEngineConfig()``).
        toolbox: The tools the agent runs with (default ``Toolbox(default_tools())``, the agent's default).
        store: A trace store to mine for failures of these tasks (episodes need ``metadata["task_id"]``).
        trace_ids: Mine only these episodes of ``store`` (default: every episode with a failure or a
            wrong answer, :func:`~regrpo.learning.traffic.learnable_trace_ids`).
        system_prompt: Default ``render_system_prompt(toolbox.members)``, the runtime's; pass the agent's
            own only if it was built with ``instructions``.
        count_tokens: Counts a target's policy tokens (default: the offline policy's tokenizer,
            :func:`~regrpo.learning.budget.policy_token_counter`).
        near_misses_per_step: Overrides ``config.near_misses_per_step``.
        seed: Overrides ``config.seed``.
        progress: Show a progress bar over tasks.
        image_dir: Where a traffic episode's input images are written, by hash, for replay
            (:mod:`regrpo.learning.traffic`; default ``<cache>/trace-images``).

    Raises ``InputError`` naming the example if a target is over the budget or holds a stop string
    before its end. Must not be called from a running event loop (use :func:`abuild_dataset` there).
    """
    return asyncio.run(
        abuild_dataset(
            tasks,
            config=config,
            toolbox=toolbox,
            store=store,
            trace_ids=trace_ids,
            system_prompt=system_prompt,
            count_tokens=count_tokens,
            near_misses_per_step=near_misses_per_step,
            seed=seed,
            progress=progress,
            image_dir=image_dir,
        )
    )
