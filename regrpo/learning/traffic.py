"""Branch points from any stored episode: learning from a user's own traffic, no reference needed.

The suite's trace branch points (:func:`~regrpo.learning.data_engine.trace_branch_points`) need the
task's reference solution for their target. An app's traffic has none, so here every failed step of
an episode *without* a suite task id (``metadata["task_id"]``: evaluation and suite episodes are
never traffic, so held-out episodes cannot leak into training) becomes a branch point with no
target (``target=None``, ``source="traffic"``):

* the prompt is the one the runtime showed the model at the next turn (system prompt, task, the
  failed turn, its observation and the reflection request, exactly as stored);
* the state is replayed: the episode's input images come back from the trace store (an agent keeps
  them by pixel hash, ``Agent(keep_images=True)``, the default) and are written once to
  ``image_dir/<sha256>.png``; the successful image-making calls before the failure are replayed
  from the trace, as :class:`~regrpo.learning.replay.BranchEnvironment` does for any point;
* the reward of a continuation is what can be verified without a reference
  (:func:`~regrpo.learning.rewards.local_fix`): the corrected call runs and returns a usable
  (non-error, non-empty) result and is not the failed call repeated, unless the failure was
  transient (a timeout, a crash), where repeating it is the fix; an ``<answer>`` counts only when
  what judges the episode's answers (below) gives it full marks; diagnosis, reflection cost and
  needless-reflection terms as everywhere.

**What judges an answer** at an episode's points (:mod:`regrpo.learning.judging`), first found:

1. a reference answer named in its feedback (``agent.feedback(trace_id, answer=...)``);
2. the app's own verifier that scored it (``Agent(verifier=...)``: its score is the episode's
   feedback, ``source="verifier:module:function"``), called again by import path on every answer a
   continuation reaches: it must be importable in the trainer's process, or the episode is counted
   (``traffic_verifier_unresolved``) and mined as if no verifier had scored it;
3. the episode's own answer, when its latest feedback gave full marks (reward 1) and named none: a
   user who says "right" has named that answer.

With a judge, the outcome term (:mod:`regrpo.learning.outcome`) scores roll-outs from the
episode's failed steps, and an ``<answer>`` continuation is a fix when the judge gives it full marks.

**The taken turn**: each point also records the turn the serving model really took there
(``BranchPoint.taken``: its text and token ids, the adapter version, the episode's final answer),
which the ReGRPO round scores beside its samples (:mod:`regrpo.learning.regrpo`). A trace without
token ids for it (an engine that returns none) leaves it out, counted (``traffic_taken_untokenised``).

**Wrong answers** are failures too, though no step failed: an episode whose named reference answer
its own answer does not match, or that its verifier gave less than full marks
(:func:`answered_wrong`), gets a point at its answer turn (``failed=False``: the runtime asked for no
reflection there; ``failed_action`` is the rejected answer). Only an answer the judge gives full
marks fixes it; a tool call there earns only what the outcome term says it leads to. An answer turn
right after a failed step is not made twice: the failed step's point is that same prompt. A caller's
reward of 0 with no answer named and no verifier names nothing to score against, so such an episode
is counted (``traffic_wrong_unnamed``) and not mined.

Episodes whose images the store does not hold (``keep_images=False``, older stores) are skipped and
counted (``traffic_images_missing``); so are steps whose stored prompt is not the runtime's
(``traffic_unmatched``). A replay that diverges at training time (a replayed call fails, or makes
other pixels than the episode's ``Step.images_made`` recorded) is a
:class:`~regrpo.learning.replay.ReplayError`: the round skips that point and counts it
(``RLReport.unreplayable``). Replays need the same tools the
agent ran with: pass them to the trainer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from regrpo.errors import TraceStoreError
from regrpo.learning.classify import classify_failure
from regrpo.learning.judging import resolve
from regrpo.learning.records import BranchPoint, TakenTurn, UserVerifier, branch_point_id
from regrpo.tasks.schema import AnswerSpec
from regrpo.traces import TraceStore
from regrpo.traces.schema import Answer, Episode, ImageRecord, Step, ToolCall
from regrpo.verifier import VerifierError, verifier_from_source

__all__ = ["answered_wrong", "is_traffic", "learnable_trace_ids", "traffic_branch_points", "wrong_answers"]


def is_traffic(episode: Episode) -> bool:
    """An episode of a user's own traffic: it ran no suite or evaluation task (no ``task_id``)."""
    return "task_id" not in episode.metadata


def _image_paths(episode: Episode, store: TraceStore, image_dir: Path) -> list[str] | None:
    """The episode's input images as files (written once, by hash); ``None`` if the store lacks one."""
    paths = []
    for record in episode.images:
        path = image_dir / f"{record.sha256}.png"
        if not path.is_file():
            try:
                png = store.get_image(record.sha256)
            except TraceStoreError:
                return None
            image_dir.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.tmp")
            staging.write_bytes(png)
            staging.replace(path)  # atomic: a half-written image is never read
        paths.append(str(path))
    return paths


def _answer_spec(text: str) -> AnswerSpec:
    """A reference answer as an answer spec (a number when it is one)."""
    text = text.strip()
    try:
        return AnswerSpec(kind="number", value=float(text.replace(",", "")))
    except ValueError:
        return AnswerSpec(kind="text", value=text)


def _named_answer(episode: Episode) -> AnswerSpec | None:
    """The last reference answer given as feedback, as an answer spec."""
    answers = [f.answer for f in episode.feedback if f.answer]
    return _answer_spec(answers[-1]) if answers else None


def _verifier_verdict(episode: Episode) -> tuple[UserVerifier, float] | None:
    """The verifier that last scored the episode, and its score."""
    for record in reversed(episode.feedback):
        name = verifier_from_source(record.source)
        if name is not None and record.reward is not None:
            return UserVerifier(name=name, task=episode.task), record.reward
    return None


def _judge(episode: Episode, counts: Counter[str]) -> tuple[AnswerSpec | None, UserVerifier | None]:
    """What scores answers at the episode's points (module docstring): an answer spec, a verifier,
    or neither. An unimportable verifier is counted and passed over."""
    named = _named_answer(episode)
    if named is not None:
        return named, None
    verdict = _verifier_verdict(episode)
    if verdict is not None:
        try:
            resolve(verdict[0])
        except VerifierError:
            counts["traffic_verifier_unresolved"] += 1
        else:
            return None, verdict[0]
    if episode.answer is not None and episode.reward is not None and episode.reward >= 1.0:
        return _answer_spec(episode.answer), None
    return None, None


def answered_wrong(episode: Episode) -> bool:
    """A traffic episode that answered, and whose feedback names a reference answer it does not match,
    or whose verifier gave it less than full marks."""
    if not (is_traffic(episode) and episode.status == "answered" and episode.answer is not None):
        return False
    named = _named_answer(episode)
    if named is not None:
        return not named.check(episode.answer)
    verdict = _verifier_verdict(episode)
    return verdict is not None and verdict[1] < 1.0


def wrong_answers(store: TraceStore, trace_ids: Iterable[str]) -> set[str]:
    """Those of ``trace_ids`` that :func:`answered_wrong`, from their headers and feedback alone (an
    evaluation's episodes, which carry its verdicts as feedback, are skipped on their header)."""
    wrong: set[str] = set()
    for trace_id in trace_ids:
        header = store.get_header(trace_id)
        if header.status == "answered" and is_traffic(header):
            header.feedback = store.feedback(trace_id)
            if answered_wrong(header):
                wrong.add(trace_id)
    return wrong


def learnable_trace_ids(store: TraceStore, *, since: float | None = None) -> list[str]:
    """Trace ids, in start order, of episodes with a failed step or a wrong answer (:func:`answered_wrong`).

    ``since``: only episodes started at or after it (a Unix timestamp).
    """
    picked = set(store.trace_ids(since=since, failures_only=True))
    picked |= wrong_answers(store, store.trace_ids(since=since, with_feedback=True))
    return [trace_id for trace_id in store.trace_ids(since=since) if trace_id in picked]


def _taken_turn(episode: Episode, prompt_messages: int, counts: Counter[str]) -> TakenTurn | None:
    """The turn the episode really took at the prompt of its first ``prompt_messages`` messages, when
    the trace holds its token ids (an engine that gives none is counted: ``traffic_taken_untokenised``)."""
    step = next((s for s in episode.steps if s.prompt_messages == prompt_messages), None)
    if step is None:
        return None
    if not step.completion.token_ids:
        counts["traffic_taken_untokenised"] += 1
        return None
    counts["traffic_taken_turns"] += 1
    return TakenTurn(
        text=step.completion.text,
        token_ids=list(step.completion.token_ids),
        adapter=step.adapter,
        final_answer=episode.answer,
    )


def _wrong_answer_point(
    episode: Episode,
    step: Step,
    answer: Answer,
    judge: tuple[AnswerSpec | None, UserVerifier | None],
    paths: list[str],
    replay: tuple[list[ToolCall], list[ImageRecord]],
    counts: Counter[str],
) -> BranchPoint | None:
    """The point at the answer turn (``step``, which gave ``answer``) that the user's feedback rejected,
    with ``judge`` (:func:`_judge`); ``None`` if the stored prompt is not the runtime's."""
    prompt = episode.messages[: step.prompt_messages]
    if not prompt or len(prompt) != step.prompt_messages or prompt[-1].role != "user":
        return None
    previous = episode.steps[step.index - 1].observation if step.index > 0 else None
    return BranchPoint(
        id=branch_point_id(prompt, None),
        task_id=f"trace-{episode.trace_id}",
        messages=prompt,
        images=paths,
        replay=list(replay[0]),
        replay_images=list(replay[1]),
        failed=False,
        error_type=None,
        observation=previous.content if previous is not None else "",
        failed_action=answer,
        answer=judge[0],
        verifier=judge[1],
        taken=_taken_turn(episode, step.prompt_messages, counts),
        source="traffic",
    )


def traffic_branch_points(
    episodes: Iterable[Episode], store: TraceStore, image_dir: Path, counts: Counter[str] | None = None
) -> list[BranchPoint]:
    """A target-free branch point at every failed step and rejected answer of traffic (module docstring)."""
    counts = counts if counts is not None else Counter()
    points: list[BranchPoint] = []
    for episode in episodes:
        if not is_traffic(episode):
            continue
        paths = _image_paths(episode, store, image_dir)
        if paths is None:
            counts["traffic_images_missing"] += 1
            continue
        counts["traffic_episodes"] += 1
        judge, after_failure = _judge(episode, counts), False
        answer, verifier = judge
        made: list[ToolCall] = []
        made_images: list[ImageRecord] = []  # what those calls made, to check their replay against
        unnamed = _named_answer(episode) is None and _verifier_verdict(episode) is None
        if unnamed and episode.reward is not None and episode.reward <= 0:
            counts["traffic_wrong_unnamed"] += 1
        for step in episode.steps:
            if isinstance(step.action, Answer):
                # right after a failure, that failure's point is this same prompt
                judged = answer is not None or verifier is not None
                if judged and not after_failure and answered_wrong(episode):
                    point = _wrong_answer_point(
                        episode, step, step.action, judge, paths, (made, made_images), counts
                    )
                    if point is None:
                        counts["traffic_unmatched"] += 1
                    else:
                        points.append(point)
                        counts["traffic_wrong_answers"] += 1
                continue
            if step.observation is None:
                continue
            verdict = classify_failure(step.action, step.observation)
            after_failure = verdict is not None
            if verdict is None:
                if isinstance(step.action, ToolCall) and step.observation.new_images:
                    made.append(step.action)
                    made_images.extend(step.images_made)
                continue
            end = step.prompt_messages + 2
            prompt = episode.messages[:end]
            if len(prompt) != end or prompt[-1].role != "user":
                counts["traffic_unmatched"] += 1
                continue
            points.append(
                BranchPoint.at_failed_step(
                    prompt,
                    step,
                    verdict,
                    task_id=f"trace-{episode.trace_id}",
                    images=paths,
                    replay=made,
                    replay_images=made_images,
                    source="traffic",
                    answer=answer,
                    verifier=verifier,
                    taken=_taken_turn(episode, end, counts),
                )
            )
    return points
