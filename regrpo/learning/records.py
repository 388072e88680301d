"""The learning data on disk: SFT examples and branch points (msgspec Structs, one per JSONL line).

Two records cross the boundary between the data engine (which builds them from tasks and traces)
and the trainers (which consume them):

* :class:`SFTExample` — a chat to imitate. ``kind="reference"`` is a task's reference solution run
  with the real tools; ``kind="rot"`` is a grounded Reflection-of-Thought example: the context, a
  near-miss action that really failed, its real observation with the runtime's reflection request,
  then the target turn ``<reflection>{...}</reflection>`` + the corrected action. Only the assistant
  turns listed in ``train_turns`` carry loss (for RoT examples: the reflection turn alone, as the
  reference release's ``mask_policy`` does).
* :class:`BranchPoint` — a state where the next turn decides recovery: the exact prompt the runtime
  would show, how to rebuild the episode's images there, and the action the reference step needed.
  ReGRPO samples a group of continuations at each one and executes them. ``failed=False`` marks a
  clean point (the last call worked), where a reflection is needless and costs reward; a ``"fault"``
  point is one where the right call failed transiently (a timeout, a crash), so its target repeats it.

Both are written with :func:`write_jsonl` and read back with :func:`read_jsonl`, so a dataset
built today trains a model next month. :class:`Dataset` is the folder the data engine writes
(``sft.jsonl``, ``branch_points.jsonl``, ``summary.json`` holding :class:`DatasetCounts`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from regrpo.errors import ErrorType, InputError
from regrpo.tasks.schema import AnswerSpec
from regrpo.traces.schema import Answer, ImageRecord, Message, Step, ToolCall, Unparseable

__all__ = [
    "BranchPoint",
    "TakenTurn",
    "UserVerifier",
    "Dataset",
    "DatasetCounts",
    "SFTExample",
    "branch_point_id",
    "read_jsonl",
    "write_jsonl",
]

SFT_FILE, BRANCH_FILE, SUMMARY_FILE = "sft.jsonl", "branch_points.jsonl", "summary.json"


class SFTExample(msgspec.Struct, frozen=True):
    """A chat to imitate; loss on the assistant messages whose indices are in ``train_turns``."""

    messages: list[Message]
    train_turns: list[int]
    """Indices into ``messages`` of the assistant turns that carry loss."""
    kind: Literal["reference", "rot"]
    task_id: str = ""
    error_type: ErrorType | None = None
    """For RoT examples: the classifier's verdict on the near-miss observation."""
    meta: dict[str, Any] = {}
    """Provenance: perturbation kind, failed and corrected actions, reference step index, ..."""
    images: list[str] = []
    """The task's image paths (``img_0``, ``img_1``, ...): with the example's own tool calls, what
    rebuilds every image its messages show, for an engine that takes images
    (:func:`~regrpo.learning.replay.example_images`)."""


class UserVerifier(msgspec.Struct, frozen=True):
    """A user's verifier that scored a traffic episode (``Agent(verifier=...)``), to score answers with."""

    name: str
    """Its import path, ``module:function``, as the episode's feedback records it."""
    task: str
    """What the episode was given (the verifier's first argument)."""


class TakenTurn(msgspec.Struct, frozen=True):
    """The turn the serving model really wrote at a traffic point, and where its episode ended.

    A ReGRPO group at the point holds it beside the sampled continuations
    (:mod:`regrpo.learning.regrpo`, "The taken turn").
    """

    text: str
    token_ids: list[int]
    """The serving engine's token ids of ``text`` (the trainer's base model: the same vocabulary)."""
    adapter: str | None
    """The adapter version that wrote it (``None``: the base model)."""
    final_answer: str | None
    """The episode's answer (``None``: it ended without one), what its outcome is judged on."""


class BranchPoint(msgspec.Struct, frozen=True):
    """A state to sample a group of continuations from, and what a good continuation must do."""

    id: str
    """Content hash of the prompt and target (the deduplication key)."""
    task_id: str
    messages: list[Message]
    """The prompt of the next turn, exactly as the runtime renders it (ends with a user message)."""
    images: list[str]
    """The task's image paths, in order (they become ``img_0``, ``img_1``, ...)."""
    replay: list[ToolCall]
    """Calls that re-make the tool-made images existing at this point, in order (ids follow)."""
    failed: bool
    """True: the last observation is a failure and a reflection is due. False: a clean point."""
    error_type: ErrorType | None
    """The classifier's verdict on the failure observation (``None`` at clean points)."""
    observation: str
    """The last observation's text (what a reflection's evidence must quote)."""
    failed_action: ToolCall | Unparseable | Answer | None
    """The action that failed here: a call or an unparseable turn, or at a traffic episode's answer turn
    the answer the user's feedback rejected (:mod:`regrpo.learning.traffic`); ``None`` elsewhere."""
    target: ToolCall | Answer | None = None
    """The action the reference solution takes next; ``None`` for a user's traffic, which has no
    reference (judged by what can be verified: :func:`~regrpo.learning.rewards.local_fix`)."""
    expects: list[str] = []
    """Strings the target call's real output contains (``ReferenceStep.expects``)."""
    answer: AnswerSpec | None = None
    """The task's answer, for judging an ``<answer>`` continuation."""
    verifier: UserVerifier | None = None
    """At a traffic point with no reference answer: the user's verifier that scored the episode, which
    judges answers instead (:mod:`regrpo.learning.judging`)."""
    taken: TakenTurn | None = None
    """At a traffic point: the turn the serving model really took next, when the trace holds its token
    ids; ``None`` elsewhere (suite points are sampled only)."""
    source: Literal["near_miss", "fault", "trace", "reference", "traffic"] = "near_miss"
    """Where it came from: an executed near-miss, the reference call under an injected transient fault
    (``failed_action == target``: the right move is to retry), a suite episode's failure, a clean
    step, or a failure in a user's traffic (:mod:`regrpo.learning.traffic`)."""
    replay_images: list[ImageRecord] = []
    """The images ``replay``'s calls made when the episode ran (ids, sizes, pixel hashes): a replay
    that makes other pixels is refused (:func:`~regrpo.learning.replay.restore`), since the prompt
    would no longer be the one the model saw. Empty: not checked (suite points, older traces)."""

    @classmethod
    def at_failed_step(
        cls,
        prompt: list[Message],
        step: Step,
        verdict: ErrorType,
        *,
        task_id: str,
        images: list[str],
        replay: list[ToolCall],
        source: Literal["trace", "traffic"],
        target: ToolCall | Answer | None = None,
        expects: Sequence[str] = (),
        answer: AnswerSpec | None = None,
        verifier: UserVerifier | None = None,
        taken: TakenTurn | None = None,
        replay_images: Sequence[ImageRecord] = (),
    ) -> BranchPoint:
        """The point right after a stored episode's failed ``step``, ``prompt`` being what came next."""
        return cls(
            id=branch_point_id(prompt, target),
            task_id=task_id,
            messages=prompt,
            images=images,
            replay=list(replay),
            failed=True,
            error_type=verdict,
            observation=step.observation.content if step.observation is not None else "",
            failed_action=step.action if isinstance(step.action, (ToolCall, Unparseable)) else None,
            target=target,
            expects=list(expects),
            answer=answer,
            verifier=verifier,
            taken=taken,
            source=source,
            replay_images=list(replay_images),
        )


def branch_point_id(messages: Sequence[Message], target: ToolCall | Answer | None) -> str:
    """The content hash of a prompt and its target: the branch point's id and deduplication key."""
    return hashlib.sha256(msgspec.json.encode([list(messages), target])).hexdigest()[:20]


T = TypeVar("T", SFTExample, BranchPoint)


def write_jsonl(path: str | os.PathLike[str], records: Iterable[msgspec.Struct]) -> int:
    """Write records one per line, atomically (temp file + rename); returns how many were written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    encoder = msgspec.json.Encoder()
    count = 0
    with open(tmp, "wb") as handle:
        for record in records:
            handle.write(encoder.encode(record) + b"\n")
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return count


def read_jsonl(path: str | os.PathLike[str], kind: type[T]) -> list[T]:
    """Read a file written by :func:`write_jsonl`; the error names the file and line of a bad record."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{str(source)!r} does not exist; build it with `regrpo train data` first")
    decoder = msgspec.json.Decoder(kind)
    records: list[T] = []
    for number, line in enumerate(source.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise InputError(f"{str(source)!r} line {number} is not a {kind.__name__}: {exc}") from None
    return records


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
    fault_kinds: dict[str, int] = {}
    """Kept faulted reference calls per injected fault kind."""
    skipped_faults: dict[str, int] = {}
    """Per fault kind: faulted calls not kept (the runtime would not flag them, or a retry is not the fix)."""
    duplicates_removed: int = 0
    trace_episodes: int = 0
    trace_unmatched: int = 0
    traffic_episodes: int = 0
    """Episodes of a user's traffic (no task id) mined for target-free branch points."""
    traffic_images_missing: int = 0
    """Traffic episodes skipped because the store does not hold their input images."""
    traffic_unmatched: int = 0
    traffic_wrong_answers: int = 0
    """Answer-turn points made from traffic episodes whose feedback named a different answer, or whose
    user's verifier gave less than full marks."""
    traffic_wrong_unnamed: int = 0
    """Traffic episodes given a reward of 0 or less by their caller with no reference answer and no
    verifier: nothing to score against."""
    traffic_verifier_unresolved: int = 0
    """Traffic episodes scored by a verifier that cannot be imported here (e.g. one defined in the app's
    ``__main__``): mined without it, as if no verifier had scored them."""
    traffic_taken_turns: int = 0
    """Traffic points that carry the turn the serving model really took there (``BranchPoint.taken``)."""
    traffic_taken_untokenised: int = 0
    """Traffic points whose taken turn was left out: the serving engine gave no token ids for it."""
    unquotable_failures: int = 0
    """Failures whose observation holds nothing to quote (a bare ``Error:``, an empty ``[]``): no RoT
    example is made (a trace failure still gives a branch point)."""
    target_token_budget: int = 0
    target_tokens: dict[str, int] = {}
    """p50/p90/p99/max policy tokens over every SFT target turn (reference and RoT)."""
    rot_target_tokens: dict[str, int] = {}
    """The same over RoT targets (reflection + action)."""
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
