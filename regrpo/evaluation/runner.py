"""Run an agent over a task set and measure it: ``evaluate(policy, tasks, store=...) -> EvalReport``.

The evaluation builds its own :class:`~regrpo.agent.Agent` around the caller's policy, so what was
measured is exactly what the report's ``settings`` say: the toolbox (the built-in tools by default,
wrapped by :func:`~regrpo.tools.faults.inject_faults` when ``fault_rate > 0``), the step and token
budgets, the reflection trigger (failed and empty steps only, unless ``confidence_trigger``), and the
adapter (loaded and activated before the first episode, deactivated after).

Episodes run with bounded concurrency (``asyncio.Semaphore``) on one event loop; the local engine
serialises its own model calls, so concurrency overlaps tool time with model time rather than
running two forwards at once. Every episode's trace goes to the store, and (by default) the
verifier's verdict is recorded as feedback (reward 1 or 0, with the reference answer), which is
what the learning module later reads. A task whose episode raises (a bad image file, our bug) is
recorded as an error and the run goes on: one broken task must not cost the other results.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from regrpo.agent.adapters import AdapterChoice, adapter_name, folder_for
from regrpo.agent.loop import Agent
from regrpo.agent.policy import Policy
from regrpo.errors import InputError
from regrpo.evaluation.records import EpisodeRecord, EvalReport, summarise
from regrpo.tasks.schema import Task
from regrpo.tasks.task_file import UserTask, VerifierAnswer
from regrpo.tools import Tool, default_tools
from regrpo.tools.faults import FaultConfig, FaultCounts, inject_faults
from regrpo.traces import TraceStore, Usage

__all__ = ["EvalOptions", "evaluate"]


@dataclass(frozen=True)
class EvalOptions:
    """How the agent runs during an evaluation; recorded verbatim in the report's ``settings``."""

    max_steps: int = 6
    """Model turns per episode."""
    max_new_tokens: int = 128
    """Token budget of one model turn."""
    temperature: float = 0.0
    """0 = greedy, so two evaluations of the same policy agree."""
    concurrency: int = 1
    """Episodes in flight at once."""
    fault_rate: float = 0.0
    """Probability that a tool call is made to fail (timeout, crash, empty, garbled, wrong region)."""
    fault_seed: int = 0
    """Seed of the fault injector: the same seed fails the same calls."""
    reflect: bool = True
    """Ask for a Reflection-of-Thought after failures (False = the plain-retry baseline)."""
    confidence_trigger: bool = False
    """Also ask for one after low-confidence successful steps (off: the training data never teaches it)."""
    record_feedback: bool = True
    """Write the verifier's verdict to the trace store as feedback (reward 1/0 and the reference answer)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise InputError(f"fault_rate must be between 0 and 1, got {self.fault_rate}")


def evaluate(
    policy: Policy,
    tasks: Sequence[Task],
    *,
    store: TraceStore,
    options: EvalOptions | None = None,
    tools: Sequence[Tool] | None = None,
    adapter: AdapterChoice = None,
    label: str = "",
    progress: bool = True,
) -> EvalReport:
    """Run ``policy`` as an agent on every task and return the measured report.

    Args:
        policy: The model engine (``LocalPolicy``, ``OpenAIPolicy``, ...).
        tasks: Tasks from :func:`regrpo.tasks.suite.load_suite` or ``builtin_suite``.
        store: Where the episodes' traces go.
        options: Budgets, concurrency and fault rate (defaults: :class:`EvalOptions`).
        tools: The toolbox before fault injection (default: the built-in tools).
        adapter: A PEFT adapter folder, or ``WARM_START`` (the shipped warm start), to load and
            activate for the run (``None``: the policy as it is). Its traces name it
            ``eval-<folder name>`` (``eval-warm-start``); a folder that is not a PEFT adapter is an
            :class:`~regrpo.errors.AdapterError` before any episode runs.
        label: A name for the report (shown in tables and comparisons).
        progress: Show a progress bar on the terminal.
    """
    options = options or EvalOptions()
    if not tasks:
        raise InputError(
            "no tasks to evaluate: pass at least one task (see regrpo.tasks.suite.builtin_suite)"
        )
    toolbox = list(tools) if tools is not None else default_tools()
    faults = FaultCounts()
    if options.fault_rate > 0:
        config = FaultConfig(rate=options.fault_rate, seed=options.fault_seed)
        toolbox = inject_faults(toolbox, config, faults)
    agent = Agent(
        policy,
        toolbox,
        store,
        options.max_steps,
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        reflect=options.reflect,
        confidence_trigger=options.confidence_trigger,
        keep_images=False,  # the tasks' images are on disk already; evaluation episodes are not traffic
    )
    adapter_before = policy.active_adapter
    folder = folder_for(policy, adapter) if adapter is not None else None
    loaded = f"eval-{adapter_name(folder)}" if folder is not None else None
    if loaded is not None:
        policy.load_adapter(loaded, str(folder))
        policy.activate_adapter(loaded)
    try:
        records = asyncio.run(_run_all(agent, tasks, options, progress))
    finally:
        if loaded is not None:
            policy.activate_adapter(adapter_before)
            policy.unload_adapter(loaded)
    by_category: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        by_category[record.category].append(record)
    settings: dict[str, Any] = asdict(options) | {
        "tasks": len(tasks),
        "tools": agent.toolbox.names,
        "faults_injected": faults.as_dict(),
    }
    if folder is not None:
        settings["adapter_path"] = str(folder)
    return EvalReport(
        label=label or policy.model_name,
        created_at=time.time(),
        model=policy.model_name,
        adapter=str(folder) if folder is not None else adapter_before,
        settings=settings,
        overall=summarise(records),
        by_category={name: summarise(group) for name, group in sorted(by_category.items())},
        episodes=records,
    )


async def _run_all(
    agent: Agent, tasks: Sequence[Task], options: EvalOptions, show: bool
) -> list[EpisodeRecord]:
    gate = asyncio.Semaphore(options.concurrency)
    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show, transient=False) as bar:
        job = bar.add_task("episodes", total=len(tasks))

        async def one(task: Task) -> EpisodeRecord:
            async with gate:
                record = await _run_one(agent, task, options)
            bar.advance(job)
            return record

        return list(await asyncio.gather(*(one(task) for task in tasks)))


async def _run_one(agent: Agent, task: Task, options: EvalOptions) -> EpisodeRecord:
    started = time.perf_counter()
    expected = task.answer.display()
    try:
        result = await agent.arun(task.question, list(task.images), metadata={"task_id": task.id})
    except Exception as exc:  # recorded, not raised: one broken task must not cost the other results
        failed = Usage(wall_s=time.perf_counter() - started)
        trace_id = getattr(exc, "trace_id", "")
        return _record(task, trace_id, "error", None, expected, False, failed, f"{type(exc).__name__}: {exc}")
    try:  # a user's verifier may be broken: that task is an error, the others still count
        correct = task.check(result.answer)
        reward = task.score(result.answer) if isinstance(task, UserTask) else float(correct)
    except InputError as exc:
        return _record(task, result.trace_id, "error", result.answer, expected, False, result.usage, str(exc))
    if options.record_feedback:  # a verifier's task has no reference answer to record, only its score
        judged = isinstance(task, UserTask) and isinstance(task.answer, VerifierAnswer)
        agent.feedback(result.trace_id, reward=reward, answer=None if judged else expected)
    return _record(task, result.trace_id, result.status, result.answer, expected, correct, result.usage)


def _record(
    task: Task,
    trace_id: str,
    status: str,
    answer: str | None,
    expected: str,
    correct: bool,
    usage: Usage,
    error: str | None = None,
) -> EpisodeRecord:
    return EpisodeRecord(
        task_id=task.id,
        category=task.category,
        difficulty=task.difficulty,
        trace_id=trace_id,
        status=status,
        answer=answer,
        expected=expected,
        correct=correct,
        steps=usage.steps,
        tool_calls=usage.tool_calls,
        tool_failures=usage.tool_failures,
        reflections=usage.reflections,
        valid_reflections=usage.valid_reflections,
        reflection_tokens=usage.reflection_tokens,
        wall_s=usage.wall_s,
        error=error,
    )
