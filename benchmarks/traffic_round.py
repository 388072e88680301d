"""A measured round on non-suite traffic (issue 13): held-out tasks sent as an app would, then one round.

Every part is a ``regrpo`` process on loopback, as in production:

1. ``regrpo serve-model`` (real SmolLM2-135M, the embedded vLLM-dialect engine) and ``regrpo serve
   --base-url --vllm --registry-dir`` in front of it. The registry's live version is the shipped warm
   start (committed and promoted as ``v0001`` before the servers start), so the agent serves it.
2. The first ``--traffic`` held-out suite tasks are sent through the official ``openai`` client,
   question and images (data URLs) only: the store sees traffic, with no task id and no reference
   solution. Each reply gets the feedback a user who knows the answer would send (reward 1/0 and
   the right answer).
3. The next ``--gate`` held-out tasks are written as a task file (question, image paths, expected
   answer): the app's own evaluation set.
4. ``regrpo trainer --once --no-suite --eval-set FILE --serve-url <serve>``: branch points from the
   failed traffic steps and the answer turns the feedback rejected, alone (no references), a ReGRPO
   round from the live version, the gate (candidate vs live on the task file, ``--gate-rule
   any_improvement``: the paired test needs 155 tasks), and, when it passes, the promotion into the
   running serve, verified there.

Prints one table (traffic, branch points, rollouts, round time, the gate's numbers, the swap) and
writes the trainer's report to ``--out``. Not a timed test. Usage::

    python benchmarks/traffic_round.py [--traffic 24] [--gate 12] [--max-rollouts 40]
        [--outcome-max-steps 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from loopback import chat_content, start_cli
from rich.console import Console
from rich.table import Table

ADMIN, USER, MODEL_KEY = "sk-admin", "sk-user", "sk-model"


def _task_row(task: Any) -> dict[str, Any]:
    """A suite task as a task-file line: what an app that knows its answers would write."""
    answer = task.answer
    return {
        "id": task.id,
        "question": task.question,
        "images": list(task.images),
        "answer": answer.value,
        "kind": answer.kind,
        "tolerance": answer.tolerance,
        "category": task.category,
    }


def _send(agent_url: str, task: Any) -> dict[str, Any]:
    """One user request and the user's feedback on it; returns what the server said."""
    headers = {"Authorization": f"Bearer {USER}"}
    with httpx.Client(base_url=agent_url, headers=headers, timeout=900) as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "regrpo-agent", "messages": [{"role": "user", "content": chat_content(task)}]},
        )
        reply.raise_for_status()
        body = reply.json()
        extension = body["regrpo"]
        answer = body["choices"][0]["message"]["content"]
        solved = task.check(answer)
        client.post(
            "/v1/feedback",
            json={
                "trace_id": extension["trace_id"],
                "reward": 1.0 if solved else 0.0,
                "answer": task.answer.display(),
            },
        ).raise_for_status()
    return {"trace_id": extension["trace_id"], "solved": solved, "answer": answer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traffic", type=int, default=24, help="held-out tasks sent as traffic")
    parser.add_argument("--gate", type=int, default=12, help="held-out tasks in the app's task file")
    parser.add_argument("--max-rollouts", type=int, default=40, help="the round's sampled continuations")
    parser.add_argument("--concurrency", type=int, default=4, help="traffic requests in flight at once")
    parser.add_argument(
        "--outcome-max-steps",
        type=int,
        default=0,
        help="the trainer's outcome term: roll each continuation out within this many turns (0: off)",
    )
    parser.add_argument("--out", type=Path, help="folder for the trainer's report and the traffic log")
    args = parser.parse_args()

    from regrpo.agent.adapters import WARM_START_DIR
    from regrpo.learning.registry import AdapterMeta, AdapterRegistry
    from regrpo.tasks.suite import builtin_suite, split

    _, held_out = split(builtin_suite(n=480, seed=0, holdout_fraction=0.25), 0.25, 0)  # `eval`'s held-out
    traffic_tasks = held_out[: args.traffic]
    gate_tasks = held_out[args.traffic : args.traffic + args.gate]
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = AdapterRegistry(root / "adapters")
        folder = registry.begin()
        shutil.copytree(WARM_START_DIR, folder, dirs_exist_ok=True)
        live = registry.commit(
            folder, AdapterMeta(base_model="SmolLM2-135M-Instruct", notes="warm start")
        ).version
        registry.promote(live)
        task_file = root / "app_tasks.jsonl"
        task_file.write_text("".join(json.dumps(_task_row(t)) + "\n" for t in gate_tasks))
        store = root / "traces.sqlite"
        processes = []
        try:
            model, model_url = start_cli(
                ["serve-model", "--api-key", MODEL_KEY, "--no-adapter"], "/health", root / "model.log"
            )
            processes.append(model)
            agent, agent_url = start_cli(
                [
                    *("serve", "--base-url", model_url, "--remote-api-key", MODEL_KEY, "--vllm"),
                    *("--remote-timeout-s", "900", "--no-adapter", "--store", str(store)),
                    *("--registry-dir", str(registry.root), "--api-key", USER, "--admin-key", ADMIN),
                    *("--max-concurrency", str(args.concurrency)),
                ],
                "/healthz",
                root / "agent.log",
            )
            processes.append(agent)
            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                sent = list(pool.map(lambda task: _send(agent_url, task), traffic_tasks))
            traffic_s = time.perf_counter() - started
            started = time.perf_counter()
            trainer = subprocess.run(
                [
                    str(Path(sys.executable).parent / "regrpo"),
                    *("trainer", "--once", "--no-suite", "--store", str(store)),
                    *("--registry", str(registry.root), "--eval-set", str(task_file)),
                    *("--gate-rule", "any_improvement", "--gate-concurrency", str(args.concurrency)),
                    *("--serve-url", agent_url, "--serve-kind", "regrpo", "--serve-key", ADMIN),
                    *("--min-new-failures", "1", "--max-rollouts", str(args.max_rollouts)),
                    *("--outcome-max-steps", str(args.outcome_max_steps)),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            trainer_s = time.perf_counter() - started
            if trainer.returncode != 0:
                console.print(trainer.stdout[-4000:], trainer.stderr[-4000:])
                return 1
            report = json.loads(trainer.stdout[trainer.stdout.index("{") :])
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=60)
        version = report.get("version")
        info = registry.get(version).config if version else {}
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "trainer_report.json").write_text(json.dumps(report, indent=2))
            (args.out / "traffic.json").write_text(json.dumps(sent, indent=2))
            (args.out / "round.json").write_text(json.dumps(info, indent=2))
            shutil.copy(task_file, args.out / "app_tasks.jsonl")

    decision = report.get("decision") or {}
    swap = decision.get("swap") or {}
    round_report = info.get("report", {})
    table = Table(title="One trainer round on non-suite traffic (held-out tasks sent as an app's requests)")
    for column in ("measure", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    rows = [
        ("traffic episodes (solved)", f"{len(sent)} ({sum(s['solved'] for s in sent)})"),
        ("traffic wall time", f"{traffic_s:.0f} s at {args.concurrency} in flight"),
        ("episodes with a failed step or a wrong answer (round input)", str(report.get("new_failures"))),
        (
            "branch points (from traffic, no reference; at wrong answers)",
            f"{info.get('branch_points')} ({info.get('from_traces')}; {info.get('at_wrong_answers')})",
        ),
        (
            "rollouts / groups / skipped / optimizer steps",
            "{} / {} / {} / {}".format(
                round_report.get("rollouts"),
                round_report.get("groups"),
                round_report.get("skipped_zero_variance"),
                round_report.get("steps"),
            ),
        ),
        ("outcome term (roll-out turns; 0 = off)", str(args.outcome_max_steps)),
        ("fix rate per optimizer step", str(round_report.get("fix_rate"))),
        ("round time", f"{round_report.get('seconds', 0):.0f} s"),
        (
            "gate: candidate vs live success",
            "{} vs {} on {} tasks".format(
                decision.get("candidate_metrics", {}).get("success_rate"),
                decision.get("live_metrics", {}).get("success_rate"),
                len(gate_tasks),
            ),
        ),
        ("gate verdict", str(decision.get("reason"))),
        ("swap into serve (promote -> verified)", f"{swap.get('seconds', 'n/a')}"),
        ("trainer process wall time", f"{trainer_s:.0f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
