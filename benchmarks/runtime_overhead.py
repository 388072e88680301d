"""Per-step runtime overhead of the agent loop, next to one real SmolLM2 step; trace-store throughput.

Speed is measured here, not in timed tests: every number is a median over ``--repeats`` timed with
``time.perf_counter``, and the ratios compare it with a baseline measured in the same run, so they
hold across machines where the absolute numbers do not.

a. Runtime overhead per step: episodes of ``Agent(ScriptedPolicy(SCRIPT, cycle=True))`` writing to
   a file ``TraceStore``. Each episode is three calculator calls (one fails, the next turn reflects)
   and an answer, so the failure, trigger and reflection paths all run. The scripted policy costs
   nothing, so episode wall time / steps is what the runtime itself adds to a step: the thread hops,
   parsing, validation, the tool and the trace writes. Then the parts alone: ``parse_action``,
   ``Toolbox.call`` and ``TraceLogger.step`` with ``sync="normal"`` and ``sync="full"``.
b. One real step of SmolLM2-135M-Instruct: ``LocalPolicy.generate`` on the agent's real first prompt
   (system prompt + task), with the loop's own sampling arguments; the baseline of the ratios.
c. Trace store throughput: whole recorded episodes replayed through ``TraceLogger`` (steps/s), and
   read back with ``TraceStore.get`` (episodes/s).

Usage (``make bench`` runs the default)::

    .venv/bin/python benchmarks/runtime_overhead.py             # about 1.5 minutes on a 2-core CPU
    .venv/bin/python benchmarks/runtime_overhead.py --quick     # under 30 s
    .venv/bin/python benchmarks/runtime_overhead.py --no-model  # runtime and store only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from regrpo.agent import Agent, Result, ScriptedPolicy
from regrpo.agent.actions import ACTION_STOP_STRINGS, parse_action, parse_reflection
from regrpo.agent.prompts import render_task
from regrpo.tools import ImageStore, ToolContext
from regrpo.traces import Completion, Episode, Step, TraceLogger, TraceStore

Sync = Literal["normal", "full"]

TASK = "What is 17 * 23, divided by 17?"
SCRIPT = (
    '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>',
    '<tool_call>{"name": "calculator", "arguments": {"expression": "391 / 0"}}</tool_call>',
    '<reflection>{"error_type": "ArgInvalid", "evidence": "division by zero in 391 / 0", '
    '"fix_plan": "divide by 17, not 0"}</reflection>\n'
    '<tool_call>{"name": "calculator", "arguments": {"expression": "391 / 17"}}</tool_call>',
    "<answer>23</answer>",
)
"""One episode: a call, a failing call (ArgInvalid), a reflection with the corrected call, the answer."""
STEPS_PER_EPISODE = len(SCRIPT)
MODEL_TASK = "What is 17 * 23?"
"""The real model's task: one the system prompt's example shows how to answer with the calculator."""


@dataclass(frozen=True)
class Row:
    """One line of the table; ``ratio`` is already worded against its baseline (or empty)."""

    measurement: str
    value: float
    unit: str
    ratio: str = ""


# -- timing -----------------------------------------------------------------------------------------


def median_per_call_s(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of (seconds for ``calls`` calls of ``fn``) / ``calls``."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - started) / calls)
    return statistics.median(samples)


async def amedian_per_call_s(make: Callable[[], Awaitable[object]], calls: int, repeats: int) -> float:
    """``median_per_call_s`` for a coroutine factory, awaited in the running event loop."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            await make()
        samples.append((time.perf_counter() - started) / calls)
    return statistics.median(samples)


# -- a. runtime overhead per step -------------------------------------------------------------------


def scripted_agent(store: TraceStore) -> Agent:
    return Agent(ScriptedPolicy(SCRIPT, cycle=True), store=store)


def check_episode(result: Result) -> None:
    """Our own bug if the script stops exercising the paths it is meant to (it would skew the numbers)."""
    steps = result.steps
    if result.status != "answered" or len(steps) != STEPS_PER_EPISODE:
        raise RuntimeError(f"scripted episode went off script: {result!r}")
    if not steps[1].failed or steps[2].reflection is None or steps[2].reflection_problem is not None:
        raise RuntimeError(f"scripted episode did not fail and reflect as planned: {steps!r}")


async def agent_step_s(agent: Agent, episodes: int, repeats: int) -> float:
    """Median seconds per step of ``arun`` episodes, back to back in one event loop."""
    check_episode(await agent.arun(TASK))  # warm-up: worker threads, regexes, pydantic
    per_episode = await amedian_per_call_s(lambda: agent.arun(TASK), episodes, repeats)
    check_episode(await agent.arun(TASK))
    return per_episode / STEPS_PER_EPISODE


def run_step_s(agent: Agent, episodes: int, repeats: int) -> float:
    """Median seconds per step of the sync ``Agent.run``: a new event loop (and thread pool) per episode."""
    return median_per_call_s(lambda: agent.run(TASK), episodes, repeats) / STEPS_PER_EPISODE


async def toolbox_call_s(agent: Agent, calls: int, repeats: int) -> tuple[float, float]:
    """(a valid calculator call, a call refused by validation) in seconds; only the first hops threads."""
    context = ToolContext(images=ImageStore())
    good = await amedian_per_call_s(
        lambda: agent.toolbox.call("calculator", {"expression": "17 * 23"}, context), calls, repeats
    )
    bad = await amedian_per_call_s(
        lambda: agent.toolbox.call("calculator", {"expression": 17}, context), calls, repeats
    )
    return good, bad


def step_write_s(store: TraceStore, step: Step, calls: int, repeats: int) -> float:
    """Median seconds of one ``TraceLogger.step`` (one committed INSERT of a msgpack row)."""
    samples = []
    for _ in range(repeats):
        log = TraceLogger(
            store, Episode(trace_id=uuid.uuid4().hex, task=TASK, started_at=time.time(), model="scripted")
        )
        steps = [msgspec.structs.replace(step, index=i) for i in range(calls)]  # distinct rows
        started = time.perf_counter()
        for s in steps:
            log.step(s)
        samples.append((time.perf_counter() - started) / calls)
    return statistics.median(samples)


# -- b. one real SmolLM2 step -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStep:
    """One SmolLM2 step on the agent's first prompt: medians in seconds, and what the model wrote."""

    step_s: float
    prefill_s: float | None
    """The same prompt cut to one new token (``None`` when not measured)."""
    prompt_tokens: int
    generated_tokens: int
    text: str


def model_step(system_prompt: str, max_new_tokens: int, runs: int, *, prefill: bool) -> ModelStep:
    """Median of ``runs`` greedy steps on the agent's first prompt (after one warm-up), as the loop samples.

    With ``prefill``, also the median of ``runs`` steps cut to one new token: the prompt's forward pass.
    """
    from regrpo.agent.local import LocalPolicy

    policy = LocalPolicy()
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": render_task(MODEL_TASK, [])},
    ]

    def sample(tokens: int) -> tuple[float, Completion]:
        started = time.perf_counter()
        completion = policy.generate(
            messages, n=1, temperature=0.0, max_new_tokens=tokens, stop=ACTION_STOP_STRINGS
        )[0]
        return time.perf_counter() - started, completion

    sample(max_new_tokens)  # warm-up: lazy init in torch and transformers
    timed = [sample(max_new_tokens) for _ in range(runs)]
    # One new token costs the prompt's forward pass (prefill) and almost nothing else.
    prefill_s = statistics.median(sample(1)[0] for _ in range(runs)) if prefill else None
    completion = timed[0][1]
    return ModelStep(
        step_s=statistics.median(seconds for seconds, _ in timed),
        prefill_s=prefill_s,
        prompt_tokens=completion.prompt_tokens,
        generated_tokens=len(completion.token_ids),
        text=completion.text,
    )


# -- c. trace store throughput ----------------------------------------------------------------------


def replay(store: TraceStore, recorded: Episode) -> str:
    """Write ``recorded`` again as the loop does (header, messages, steps, finish); returns the new id."""
    episode = msgspec.structs.replace(
        recorded, trace_id=uuid.uuid4().hex, messages=[], steps=[], status="running", feedback=[]
    )
    log = TraceLogger(store, episode)
    log.update_header()
    for message in recorded.messages:
        log.message(message)
    for step in recorded.steps:
        log.step(step)
    log.finish("answered", answer=recorded.answer)
    return episode.trace_id


def write_throughput(
    store: TraceStore, recorded: Episode, episodes: int, repeats: int
) -> tuple[float, list[str]]:
    """(median steps/s replaying ``episodes`` episodes, the trace ids written)."""
    ids: list[str] = []
    per_episode_s = median_per_call_s(lambda: ids.append(replay(store, recorded)), episodes, repeats)
    return len(recorded.steps) / per_episode_s, ids


def read_throughput(store: TraceStore, trace_ids: list[str], repeats: int) -> float:
    """Median episodes/s of ``store.get`` over ``trace_ids``."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for trace_id in trace_ids:
            store.get(trace_id)
        samples.append(len(trace_ids) / (time.perf_counter() - started))
    return statistics.median(samples)


# -- the run ----------------------------------------------------------------------------------------


def times(value: float, baseline: float | None, name: str) -> str:
    """``0.29 × M``, or ``1/5,300 of M`` below a tenth, against the baseline ``name`` ("" without one)."""
    if baseline is None:
        return ""
    ratio = value / baseline
    return f"{ratio:.2g} × {name}" if ratio >= 0.1 else f"1/{float(f'{1 / ratio:.2g}'):,.0f} of {name}"


def ratios(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


@dataclass(frozen=True)
class Measured:
    """Everything one run measured, in seconds or per second."""

    step_s: dict[Sync, float]
    """Runtime overhead per step of ``Agent.arun`` episodes, by store sync mode."""
    run_step_s: float
    tool_s: float
    refused_s: float
    parse_s: float
    reflect_s: float
    write_s: dict[Sync, float]
    """One ``TraceLogger.step``, by store sync mode."""
    replay_steps_per_s: dict[Sync, float]
    read_episodes_per_s: float
    recorded: Episode
    model: ModelStep | None


def measure(args: argparse.Namespace, folder: Path) -> Measured:
    n, r = args.episodes, args.repeats
    syncs: tuple[Sync, ...] = ("normal", "full")
    opened: list[TraceStore] = []

    def store(name: str, sync: Sync = "normal") -> TraceStore:
        opened.append(TraceStore(folder / f"{name}-{sync}.sqlite", sync=sync))
        return opened[-1]

    try:
        # a. the runtime, whole and in parts
        agents = {sync: scripted_agent(store("agent", sync)) for sync in syncs}
        step_s = {sync: asyncio.run(agent_step_s(agents[sync], n, r)) for sync in syncs}
        run_s = run_step_s(agents["normal"], max(n // 4, 5), r)
        tool_s, refused_s = asyncio.run(toolbox_call_s(agents["normal"], 20 * n, r))
        parse_s = median_per_call_s(lambda: parse_action(SCRIPT[0]), 50 * n, r)
        reflect_s = median_per_call_s(
            lambda: (parse_reflection(SCRIPT[2], "division by zero in '391/0'"), parse_action(SCRIPT[2])),
            50 * n,
            r,
        )
        recorded = agents["normal"].store.get(agents["normal"].store.trace_ids(limit=1)[0])
        write_s = {sync: step_write_s(store("steps", sync), recorded.steps[2], 5 * n, r) for sync in syncs}

        # c. the store alone
        replayed = {sync: write_throughput(store("replay", sync), recorded, n, r) for sync in syncs}
        read_per_s = read_throughput(store("replay", "normal"), replayed["normal"][1][:n], r)

        # b. the baseline: one real model step
        model = (
            None
            if args.no_model
            else model_step(
                agents["normal"].system_prompt, args.max_new_tokens, args.model_runs, prefill=not args.quick
            )
        )
    finally:
        for each in opened:
            each.close()
    return Measured(
        step_s,
        run_s,
        tool_s,
        refused_s,
        parse_s,
        reflect_s,
        write_s,
        {sync: per_s for sync, (per_s, _) in replayed.items()},
        read_per_s,
        recorded,
        model,
    )


def rows_of(got: Measured) -> list[Row]:
    """The table: microseconds for the runtime, milliseconds for the model, rates for the store."""
    m = got.model.step_s if got.model else None
    normal, full = got.step_s["normal"], got.step_s["full"]
    rows = [
        Row(
            "runtime overhead per step, `Agent.arun`, sync=normal", normal * 1e6, "µs", times(normal, m, "M")
        ),
        Row(
            "runtime overhead per step, `Agent.arun`, sync=full",
            full * 1e6,
            "µs",
            ratios(times(full, m, "M"), times(full, normal, "normal")),
        ),
        Row(
            "runtime overhead per step, sync `Agent.run` (new event loop per episode)",
            got.run_step_s * 1e6,
            "µs",
            ratios(times(got.run_step_s, m, "M"), times(got.run_step_s, normal, "arun")),
        ),
        Row("`parse_action`, tool-call turn", got.parse_s * 1e6, "µs", times(got.parse_s, m, "M")),
        Row(
            "`parse_reflection` + `parse_action`, reflection turn",
            got.reflect_s * 1e6,
            "µs",
            times(got.reflect_s, m, "M"),
        ),
        Row(
            "`Toolbox.call` calculator (validate, worker thread, JSON check)",
            got.tool_s * 1e6,
            "µs",
            times(got.tool_s, m, "M"),
        ),
        Row(
            "`Toolbox.call` refused by validation (no thread)",
            got.refused_s * 1e6,
            "µs",
            times(got.refused_s, m, "M"),
        ),
        Row(
            "`TraceLogger.step`, one step, sync=normal",
            got.write_s["normal"] * 1e6,
            "µs",
            times(got.write_s["normal"], m, "M"),
        ),
        Row(
            "`TraceLogger.step`, one step, sync=full",
            got.write_s["full"] * 1e6,
            "µs",
            ratios(
                times(got.write_s["full"], m, "M"),
                times(got.write_s["full"], got.write_s["normal"], "normal"),
            ),
        ),
    ]
    if got.model:
        rows.append(
            Row(
                f"**M**: one SmolLM2-135M step ({got.model.prompt_tokens} prompt + "
                f"{got.model.generated_tokens} generated tokens)",
                got.model.step_s * 1e3,
                "ms",
                "1 × M",
            )
        )
    if got.model and got.model.prefill_s is not None:
        rows.append(
            Row(
                "SmolLM2-135M prefill alone (same prompt, 1 new token)",
                got.model.prefill_s * 1e3,
                "ms",
                times(got.model.prefill_s, m, "M"),
            )
        )
    writes = got.replay_steps_per_s
    return rows + [
        Row(
            f"trace store writes, whole episodes ({len(got.recorded.steps)} steps, "
            f"{len(got.recorded.messages)} messages), sync=normal",
            writes["normal"],
            "steps/s",
        ),
        Row(
            "trace store writes, whole episodes, sync=full",
            writes["full"],
            "steps/s",
            times(writes["full"], writes["normal"], "normal"),
        ),
        Row("trace store reads, `TraceStore.get`", got.read_episodes_per_s, "episodes/s"),
    ]


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(rows: Iterable[Row]) -> str:
    lines = ["| measurement | value | unit | ratio vs baseline |", "|---|---:|---|---|"]
    lines += [f"| {row.measurement} | {fmt(row.value)} | {row.unit} | {row.ratio} |" for row in rows]
    return "\n".join(lines)


def busy_cpu_s() -> float | None:
    """CPU seconds all processes have spent so far (Linux ``/proc/stat``; ``None`` elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_share(busy_before: float | None, own_before: float, wall_s: float) -> str:
    """How much of the CPUs other processes took during the run: on 2 cores they move every number."""
    busy_after = busy_cpu_s()
    if busy_before is None or busy_after is None:
        return "unknown"
    own = time.process_time() - own_before
    return f"{max(busy_after - busy_before - own, 0.0) / (wall_s * (os.cpu_count() or 1)):.0%}"


def machine_line(others: str) -> str:
    import torch  # already loaded by LocalPolicy unless --no-model

    return (
        f"Machine: {platform.system()} {platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"torch threads={torch.get_num_threads()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, SQLite {sqlite3.sqlite_version}; other processes used "
        f"{others} of the CPUs during the run"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--episodes", type=int, default=200, help="scripted episodes per repeat (default 200)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeats; each number is their median (default 5)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 episodes, 3 repeats, 1 model run, no prefill row (under 30 s)",
    )
    parser.add_argument("--no-model", action="store_true", help="skip the SmolLM2 step (no ratios to M)")
    parser.add_argument(
        "--model-runs", type=int, default=5, help="timed SmolLM2 steps after a warm-up (default 5)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="token budget of the model step (default 256, the agent's default)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for the temporary stores (default: the system's temp folder)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.repeats, args.model_runs = 20, 3, 1
    if min(args.episodes, args.repeats, args.model_runs, args.max_new_tokens) < 1:
        parser.error("--episodes, --repeats, --model-runs and --max-new-tokens must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    busy_before, own_before, started = busy_cpu_s(), time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="regrpo-bench-", dir=args.dir) as folder:
        got = measure(args, Path(folder))
    wall_s = time.perf_counter() - started
    print(table(rows_of(got)))
    print()
    print(
        f"Medians of {args.repeats} repeats; {args.episodes} scripted episodes of {STEPS_PER_EPISODE} "
        "steps per repeat. Ratios: M = one SmolLM2-135M step (greedy, the loop's stop strings), "
        "normal = the same measurement with sync=normal."
    )
    if got.model:
        print(f"SmolLM2 step: median of {args.model_runs} after a warm-up; it replied {got.model.text!r}.")
    print(machine_line(others_share(busy_before, own_before, wall_s)))
    print(f"Benchmark wall time: {wall_s:.0f} s")


if __name__ == "__main__":
    main()
