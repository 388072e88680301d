"""``TrainerDaemon`` (``regrpo trainer``): watch the traces, train on new failures, gate, promote, swap.

One round: when at least ``min_new_failures`` finished episodes with a failed step, or traffic
episodes whose feedback named a different answer (:func:`~regrpo.learning.traffic.answered_wrong`),
arrived past the watermark, call ``train_round(trace_ids, folder)`` (the trainer writes a PEFT
adapter into a fresh ``registry.begin()`` folder and returns its settings and statistics), commit
the folder as the next version, and hand it to the eval gate
(:func:`~regrpo.learning.gate.evaluate_and_gate`), which promotes and hot-swaps it only if it beats
the live adapter on the held-out tasks. With the gate's default paired rule that takes at least
``gate.test.tasks_needed`` held-out tasks (155), so a daemon given fewer is refused at construction:
it would train round after round and never promote one.

Crash safety (a ``kill -9`` at any instant):

* The watermark and the round in progress live in ``trainer.json`` in the registry folder, replaced
  atomically. It is advanced only after a round is decided, so a round killed while training is
  trained again on restart (the same traces, nothing lost); its half-written folder is never listed
  and ``prune_incoming`` deletes it at start.
* A committed version is recorded as ``pending`` before the gate runs; a restart gates it instead of
  training again. Promotion is the gate's atomic pointer move, so nothing half-done is ever live.
* A ``train_round`` that raises leaves the watermark where it was, discards its folder, and the round
  is retried at the next poll (``run_forever`` backs off exponentially while it keeps failing; a poll
  that raises, e.g. "database is locked", is logged and retried the same way). Except
  :class:`~regrpo.errors.NothingToLearn`: those episodes gave no training data (traffic whose
  failures cannot be replayed or scored), and would give none at every retry, so the watermark moves
  past them (status ``nothing_to_learn``) instead of holding every later round behind them.
* A kill between the gate's promotion and saving ``trainer.json``: on restart the pending version is
  already live, so the round is recorded as decided (watermark advanced), not gated again.

The watermark is ``(started_at, trace_id)`` of the last episode consumed, in the store's order. It
never passes an episode that is still running (unless it has written nothing for
``stale_running_s``: its process died), so an episode that started before others but fails and
finishes after them is not skipped. Feedback comes after an episode ends, so with
``feedback_wait_s`` the watermark also waits that long after a traffic episode answered before
passing it without feedback (a wrong answer named later is otherwise not learned from). Episodes of
the gate's held-out tasks (``metadata["task_id"]``, which ``evaluate`` records) are never training
data, so the gate's own evaluation episodes may share the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from regrpo.agent.policy import Policy
from regrpo.errors import AdapterError, InputError, NothingToLearn
from regrpo.evaluation.runner import EvalOptions
from regrpo.learning.gate import GateConfig, GateDecision, evaluate_and_gate
from regrpo.learning.hotswap import swap_in, swap_to_base
from regrpo.learning.registry import AdapterMeta, AdapterRegistry
from regrpo.learning.serving_engine import ServingEngine
from regrpo.learning.traffic import is_traffic, wrong_answers
from regrpo.tasks.schema import Task
from regrpo.tools import Tool
from regrpo.traces import TraceStore
from regrpo.traces.schema import Episode

__all__ = ["DaemonConfig", "DaemonState", "RoundReport", "TrainRound", "TrainerDaemon", "STATE_FILE"]

log = logging.getLogger(__name__)

STATE_FILE = "trainer.json"
"""The daemon's watermark and round in progress, in the registry folder."""

TrainRound = Callable[[list[str], Path], dict[str, Any]]
"""``train_round(trace_ids, folder) -> info``: save a PEFT adapter in ``folder``; ``info`` becomes
the version's ``AdapterMeta.config`` (training settings and statistics). It must leave the policy it
shares with the daemon (if any) as it found it."""


class DaemonConfig(msgspec.Struct, frozen=True):
    """When the daemon trains, and how it treats leftovers."""

    min_new_failures: int = 8
    """New finished episodes with a failed step or a wrong answer needed to start a round."""
    feedback_wait_s: float = 0.0
    """How long after a traffic episode answered the watermark waits for its feedback before passing
    it (0: not at all; a wrong answer named after the watermark passed it is never trained on)."""
    stale_running_s: float = 600.0
    """An episode still ``running`` with no write for this long is taken as abandoned (its process died)
    and skipped. The runtime writes at every step (``Episode.updated_at``), so this bounds one model call
    plus one tool call, not a whole episode; a trace without a heartbeat counts from its start."""
    prune_incoming_after_s: float = 600.0
    """At start, delete unfinished ``begin()`` folders older than this (left by killed rounds)."""
    max_backoff_s: float = 3600.0
    """Upper bound of ``run_forever``'s wait after consecutive failed rounds."""

    def __post_init__(self) -> None:
        if self.min_new_failures < 1:
            raise InputError(f"min_new_failures must be at least 1, got {self.min_new_failures}")
        if self.stale_running_s <= 0 or self.prune_incoming_after_s < 0 or self.max_backoff_s <= 0:
            raise InputError("stale_running_s and max_backoff_s must be > 0, prune_incoming_after_s >= 0")
        if self.feedback_wait_s < 0:
            raise InputError(f"feedback_wait_s must be >= 0, got {self.feedback_wait_s}")


class DaemonState(msgspec.Struct):
    """What ``trainer.json`` holds."""

    started_at: float | None = None
    """Watermark: ``started_at`` of the last consumed episode (``None``: nothing consumed yet)."""
    trace_id: str = ""
    """Watermark tie-break: its trace id."""
    pending: str | None = None
    """A committed version whose gate has not finished (gated first after a restart)."""
    pending_until: tuple[float, str] | None = None
    """The watermark to move to once ``pending`` is decided."""
    rounds: int = 0
    """Rounds decided (promoted or refused)."""


class RoundReport(msgspec.Struct, frozen=True):
    """What one :meth:`TrainerDaemon.run_once` did."""

    status: Literal["waiting", "decided", "failed", "nothing_to_learn"]
    """``nothing_to_learn``: the new episodes gave no training data; they are consumed (the watermark
    moves past them) and no version is made."""
    new_failures: int = 0
    """Usable new failure episodes seen past the watermark."""
    trace_ids: list[str] = []
    """The episodes handed to ``train_round``."""
    version: str | None = None
    decision: GateDecision | None = None
    resumed: bool = False
    """True when this round gated a version committed before a restart."""
    error: str | None = None


class TrainerDaemon:
    """Trains, gates and hot-swaps adapters as failures arrive in a trace store.

    Args:
        store: The trace store the agents write to (read only here, except the gate's eval episodes).
        registry: Where versions, the live pointer and ``trainer.json`` live.
        policy: The engine the gate evaluates on.
        train_round: The trainer (see :data:`TrainRound`).
        tasks: Held-out tasks for the gate; their episodes are never training data. Under the gate's
            ``paired_ci`` rule at least ``gate.test.tasks_needed`` of them (155 by default).
        config: Thresholds (default :class:`DaemonConfig`).
        gate: The promotion rule (default :class:`~regrpo.learning.gate.GateConfig`).
        options: Evaluation budgets for the gate (default :class:`~regrpo.evaluation.EvalOptions`).
        eval_store: Where the gate's episodes go (default: ``store``; they are filtered out by task id).
        live_policy: The serving engine to hot-swap (default: ``policy``).
        on_promote: Called with each promoting decision, after the swap and the pointer move;
            errors are logged.
        serving: A serving engine in another process (``regrpo serve``, vLLM) to promote into, with
            the swap verified there before the version counts as live
            (:mod:`~regrpo.learning.serving_engine`); default: swap ``live_policy`` in process.
        tools: The agent's toolbox for the gate's evaluations (default: the built-in tools); a user
            task set needs the tools the user's agent runs with.
    """

    def __init__(
        self,
        store: TraceStore,
        registry: AdapterRegistry,
        policy: Policy,
        train_round: TrainRound,
        tasks: Sequence[Task],
        *,
        config: DaemonConfig | None = None,
        gate: GateConfig | None = None,
        options: EvalOptions | None = None,
        eval_store: TraceStore | None = None,
        live_policy: Policy | None = None,
        on_promote: Callable[[GateDecision], None] | None = None,
        serving: ServingEngine | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> None:
        if not tasks:
            raise InputError("the trainer daemon needs held-out tasks for its gate; pass at least one")
        self.store, self.registry, self.policy, self.train_round = store, registry, policy, train_round
        self.tasks = list(tasks)
        self.config = config or DaemonConfig()
        self.gate = gate or GateConfig()
        needed = self.gate.test.tasks_needed
        if self.gate.rule == "paired_ci" and len(self.tasks) < needed:
            raise InputError(
                f"the gate's paired test needs at least {needed} held-out tasks to detect "
                f"{100 * self.gate.test.effect:.0f} points at power {self.gate.test.power:.0%}; got "
                f"{len(self.tasks)}, so no round could ever be promoted. Pass more held-out tasks "
                "(regrpo trainer --tasks), or opt out with GateConfig(rule='any_improvement'), "
                "whose promotions are not statistically significant"
            )
        self.options = options or EvalOptions()
        self.eval_store = eval_store or store
        self.live_policy = live_policy or policy
        self.on_promote = on_promote
        self.serving = serving
        self.tools = list(tools) if tools is not None else None
        self._held_out = {task.id for task in self.tasks}

    # -- state ------------------------------------------------------------------------------------------

    def state(self) -> DaemonState:
        """The persisted watermark and round in progress."""
        data = self.registry.read_state(STATE_FILE)
        if data is None:
            return DaemonState()
        try:
            return msgspec.json.decode(data, type=DaemonState)
        except msgspec.DecodeError as exc:
            raise AdapterError(f"cannot read {STATE_FILE} in {str(self.registry.root)!r}: {exc}") from exc

    def _save(self, state: DaemonState) -> None:
        self.registry.write_state(STATE_FILE, msgspec.json.encode(state))

    # -- one poll ---------------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Prune dead rounds' folders and make the live policy serve the registry's live version."""
        removed = self.registry.prune_incoming(older_than_s=self.config.prune_incoming_after_s)
        live = self.registry.live()
        if self.live_policy.active_adapter != live:
            if live is None:
                swap_to_base(self.live_policy)
            else:
                swap_in(self.live_policy, self.registry, live)
        return removed

    def new_failures(self, state: DaemonState | None = None) -> tuple[list[str], tuple[float, str] | None]:
        """``(trace ids to train on, watermark after them)``: finished failure episodes past the watermark."""
        state = state or self.state()
        mark = (state.started_at, state.trace_id) if state.started_at is not None else None
        judged = set(self.store.trace_ids(since=state.started_at, with_feedback=True))
        failed = set(self.store.trace_ids(since=state.started_at, failures_only=True))
        failed |= wrong_answers(self.store, judged)
        settled = failed | judged  # a verdict is in: no feedback to wait for
        picked: list[str] = []
        until = mark
        now = time.time()
        for trace_id in self.store.trace_ids(since=state.started_at):
            header = self.store.get_header(trace_id)
            position = (header.started_at, trace_id)
            if mark is not None and position <= mark:
                continue
            heartbeat = header.updated_at or header.started_at
            if header.status == "running" and now - heartbeat < self.config.stale_running_s:
                break  # the watermark waits for it: it may still fail and finish
            if trace_id not in settled and self._awaits_feedback(header, now):
                break  # the user may still say its answer was wrong
            until = position
            if header.status == "running" or trace_id not in failed:
                continue  # abandoned, or nothing failed
            if header.metadata.get("task_id") in self._held_out:
                continue  # the gate's tasks are never training data
            picked.append(trace_id)
        return picked, until

    def _awaits_feedback(self, header: Episode, now: float) -> bool:
        """A traffic episode that answered less than ``feedback_wait_s`` ago."""
        ended = header.ended_at or header.updated_at or header.started_at
        return (
            header.status == "answered" and is_traffic(header) and now - ended < self.config.feedback_wait_s
        )

    def run_once(self) -> RoundReport:
        """One poll: gate a pending version, or train a round if enough new failures arrived."""
        state = self.state()
        if state.pending is not None:
            return self._gate(state, state.pending, [], resumed=True)
        trace_ids, until = self.new_failures(state)
        if len(trace_ids) < self.config.min_new_failures:
            return RoundReport(status="waiting", new_failures=len(trace_ids))
        folder = self.registry.begin()
        try:
            info = self.train_round(list(trace_ids), folder)
            meta = self.registry.commit(folder, self._meta(trace_ids, info))
        except NothingToLearn as exc:  # retrying the same episodes would fail the same way: consume them
            self.registry.discard(folder)
            log.warning("%s; moving past them", exc)
            if until is not None:
                state.started_at, state.trace_id = until
                self._save(state)
            return RoundReport(
                status="nothing_to_learn", new_failures=len(trace_ids), trace_ids=trace_ids, error=str(exc)
            )
        except Exception as exc:  # the trainer's failure is reported, and the round retried later
            self.registry.discard(folder)
            log.exception("training round on %d episodes failed", len(trace_ids))
            return RoundReport(
                status="failed",
                new_failures=len(trace_ids),
                trace_ids=trace_ids,
                error=f"{type(exc).__name__}: {exc}",
            )
        except BaseException:  # KeyboardInterrupt, SystemExit: clean up, then stop
            self.registry.discard(folder)
            raise
        state.pending, state.pending_until = meta.version, until
        self._save(state)
        return self._gate(state, meta.version, trace_ids, resumed=False)

    def _meta(self, trace_ids: list[str], info: dict[str, Any]) -> AdapterMeta:
        started = [self.store.get_header(t).started_at for t in trace_ids]
        return AdapterMeta(
            base_model=self.policy.model_name,
            data_since=min(started),
            data_until=max(started),
            config=dict(info),
            notes=f"trainer daemon round on {len(trace_ids)} failure episodes",
        )

    def _gate(self, state: DaemonState, version: str, trace_ids: list[str], *, resumed: bool) -> RoundReport:
        if resumed and self.registry.live() == version:
            # the process died after the gate's pointer move and before trainer.json was saved: the
            # round was decided (promoted); only the bookkeeping is left (gating it again would fail
            # forever with "already live")
            self._decided(state)
            log.info("round %d: %s was promoted before a restart", state.rounds, version)
            return RoundReport(status="decided", version=version, resumed=True)
        try:
            decision = evaluate_and_gate(
                self.policy,
                self.registry,
                version,
                self.tasks,
                store=self.eval_store,
                options=self.options,
                config=self.gate,
                live_policy=self.live_policy,
                serving=self.serving,
                tools=self.tools,
            )
        except Exception as exc:  # stays pending: the next poll gates it again
            log.exception("gating %s failed", version)
            return RoundReport(
                status="failed",
                trace_ids=trace_ids,
                version=version,
                resumed=resumed,
                error=f"{type(exc).__name__}: {exc}",
            )
        self._decided(state)
        if decision.promoted and self.on_promote is not None:
            try:
                self.on_promote(decision)
            except Exception:  # the promotion stands; a listener's failure must not stop the daemon
                log.exception("on_promote failed for %s", version)
        log.info(
            "round %d: %s %s (%s)",
            state.rounds,
            version,
            "promoted" if decision.promoted else "refused",
            decision.reason,
        )
        return RoundReport(
            status="decided",
            new_failures=len(trace_ids),
            trace_ids=trace_ids,
            version=version,
            decision=decision,
            resumed=resumed,
        )

    def _decided(self, state: DaemonState) -> None:
        """Advance the watermark past the pending round's episodes and forget the round (saved)."""
        if state.pending_until is not None:
            state.started_at, state.trace_id = state.pending_until
        state.pending, state.pending_until = None, None
        state.rounds += 1
        self._save(state)

    # -- the loop ---------------------------------------------------------------------------------------

    def run_forever(self, poll_s: float, stop_event: threading.Event) -> None:
        """Poll every ``poll_s`` seconds until ``stop_event`` is set (backing off while rounds fail).

        A poll that raises (a locked or unreachable store, a full disk) is logged and counts as a
        failed round: the daemon backs off and polls again rather than stopping for good.
        """
        if poll_s <= 0:
            raise InputError(f"poll_s must be > 0, got {poll_s}")
        self.start()
        failures = 0
        while not stop_event.is_set():
            try:
                status = self.run_once().status
            except Exception:
                log.exception("trainer poll failed; retrying after a back-off")
                status = "failed"
            failures = failures + 1 if status == "failed" else 0
            stop_event.wait(min(poll_s * 2 ** min(failures, 20), max(poll_s, self.config.max_backoff_s)))

    def __repr__(self) -> str:
        return f"TrainerDaemon(store={self.store!r}, registry={self.registry!r})"
