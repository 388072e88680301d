"""Request coalescing for an in-process engine: calls that wait for a busy model share its next pass.

Decoding a 135M model one sequence at a time is bound by memory traffic, not arithmetic, so a batch of
8 rows costs little more per step than a batch of 1. :class:`BatchQueue` turns concurrent blocking
calls (threads: ``asyncio.to_thread``, ``run_many``, a server's worker threads) into batches with no
thread of its own: a caller that finds the model free runs the next batch itself, whichever
requests it holds, and the others wait on a condition until their result is in.

* A batch is the oldest waiting request plus every later one with the same ``key`` (for
  ``LocalPolicy``: the temperature), up to ``max_rows`` rows (a request's ``n`` samples are its
  rows). A request with more rows than ``max_rows`` still runs, alone.
* Errors stay with their request: when a batch of several fails, each request is run again alone,
  so one bad request fails by itself and the queue never wedges. The split is logged (a warning with
  the batch's error) and counted (``split_batches``): a batch that fails for no request's fault
  would otherwise cost the batching silently.
* A request cancelled before its batch starts (:meth:`BatchQueue.cancel`, e.g. by an ``agenerate``
  whose task was cancelled) is dropped; once it runs it finishes, and its result is discarded.

This module also holds the two pure pieces of batched decoding, :func:`padded_rows` (the layout of
prompts of different lengths behind a shared, cached prefix) and :class:`RowStops` (stop strings
per row).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

__all__ = ["BatchQueue", "RowStops", "Ticket", "padded_rows"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class Ticket(Generic[T, R]):
    """One queued request and the future its result (or error) lands in."""

    request: T
    future: Future[R] = field(default_factory=Future)


class BatchQueue(Generic[T, R]):
    """Requests waiting for one model, run in batches by whichever waiting caller finds it free.

    Args:
        run_batch: Runs a batch; returns one result per request, in order, or raises.
        max_rows: Most rows in a batch (1: every request runs alone, in arrival order).
        rows: A request's rows (its ``n``).
        key: Only requests with equal keys share a batch.
        window_s: How long a batch that is not full waits for one more request before it starts, in
            seconds (restarted at each arrival). Callers started together (``run_many``'s episodes)
            arrive a few milliseconds apart; without it the first would run alone, the rest after.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_rows: int,
        rows: Callable[[T], int],
        key: Callable[[T], Hashable],
        window_s: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self.max_rows = max_rows
        self.window_s = window_s
        self._rows = rows
        self._key = key
        self._changed = threading.Condition()
        self._pending: deque[Ticket[T, R]] = deque()
        self._busy = False  # a batch is running (the model is taken)
        self.batch_sizes: list[int] = []  # requests per batch run so far, for tests and benchmarks
        self.split_batches = 0  # batches that failed and were rerun request by request (not in batch_sizes)

    def __len__(self) -> int:
        """Requests waiting (not yet in a batch)."""
        with self._changed:
            return len(self._pending)

    def __call__(self, request: T) -> R:
        """Queue ``request`` and block until its result is in (running batches while the model is free)."""
        return self.wait(self.submit(request))

    def submit(self, request: T) -> Ticket[T, R]:
        ticket: Ticket[T, R] = Ticket(request)
        with self._changed:
            self._pending.append(ticket)
            self._changed.notify_all()  # a batch waiting out its window may take it
        return ticket

    def cancel(self, ticket: Ticket[T, R]) -> bool:
        """Drop ``ticket`` if its batch has not started; ``False`` when it is running or done."""
        with self._changed:
            if not ticket.future.cancel():
                return False
            if ticket in self._pending:
                self._pending.remove(ticket)
            self._changed.notify_all()  # its waiting thread returns
            return True

    def wait(self, ticket: Ticket[T, R]) -> R:
        """Block until ``ticket`` is done, running the next batch whenever the model is free.

        Raises:
            concurrent.futures.CancelledError: the ticket was cancelled.
        """
        while True:
            with self._changed:
                while self._busy and not ticket.future.done():
                    self._changed.wait()
                if ticket.future.done():
                    return ticket.future.result()
                # not busy and not done: the ticket is still pending, so there is a batch to run
                self._busy = True
                try:
                    self._gather()
                    batch = self._take()
                except BaseException:  # interrupted while gathering: hand the model back
                    self._busy = False
                    self._changed.notify_all()
                    raise
            try:
                if batch:
                    self.batch_sizes.append(len(batch))
                    self._run(batch)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _gather(self) -> None:
        """Wait for the waiting requests to fill a batch, until ``window_s`` passes with no new one.

        The window restarts at each arrival (hold the condition): a burst of callers a few
        milliseconds apart joins one batch, and the wait ends at once when the batch is full.
        """
        arrived = len(self._pending)
        deadline = time.monotonic() + self.window_s
        while sum(self._rows(t.request) for t in self._pending) < self.max_rows:
            if len(self._pending) > arrived:
                arrived = len(self._pending)
                deadline = time.monotonic() + self.window_s
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(left)

    def _take(self) -> list[Ticket[T, R]]:
        """The next batch, claimed (hold the condition): the oldest request and what fits with it."""
        batch: list[Ticket[T, R]] = []
        rows = 0
        for ticket in list(self._pending):
            if batch and self._key(ticket.request) != self._key(batch[0].request):
                continue
            size = self._rows(ticket.request)
            if batch and rows + size > self.max_rows:
                continue
            self._pending.remove(ticket)
            if ticket.future.set_running_or_notify_cancel():  # False: cancelled, dropped
                batch.append(ticket)
                rows += size
        return batch

    def _run(self, batch: list[Ticket[T, R]]) -> None:
        try:
            results = self._run_batch([ticket.request for ticket in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            # each alone, so the error lands on the request that caused it; said, since a batch that
            # fails for no request's fault silently costs the batching it was for
            self.split_batches += 1
            log.warning(
                "a batch of %d requests failed (%s: %s); running each alone",
                len(batch),
                type(exc).__name__,
                exc,
            )
            for ticket in batch:
                self._run([ticket])
            return
        except BaseException as exc:  # KeyboardInterrupt in the running thread: nobody may hang
            for ticket in batch:
                if not ticket.future.done():
                    ticket.future.set_exception(exc)
            raise
        for ticket, result in zip(batch, results, strict=True):
            ticket.future.set_result(result)


def padded_rows(
    prompts: Sequence[Sequence[int]], prefix_tokens: int, pad_id: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and attention mask of prompts sharing their first ``prefix_tokens`` tokens, as one batch.

    Each row is ``prefix + padding + rest``: the rest is right-aligned so every row's next token is
    predicted from the last column, and the padding sits after the shared prefix so the prefix's
    cached keys and values serve every row (``prefix_tokens=0`` is plain left padding). ``generate``
    numbers positions by the mask's running sum, so a row's positions, and its numbers, are those
    it has alone.
    """
    width = max(len(prompt) for prompt in prompts) - prefix_tokens
    ids, mask = [], []
    for prompt in prompts:
        rest = list(prompt[prefix_tokens:])
        gap = width - len(rest)
        ids.append(list(prompt[:prefix_tokens]) + [pad_id] * gap + rest)
        mask.append([1] * prefix_tokens + [0] * gap + [1] * len(rest))
    return ids, mask


class RowStops:
    """A ``generate`` stopping criterion with each row's own stop strings and token limit.

    ``generate``'s ``stop_strings`` apply to the whole batch, so a row would stop on another
    request's stop string. This only decides when a row may stop early (saving decode steps); where
    it is cut is decided after generation, exactly as for a request alone.

    Args:
        stops: Each row's stop strings.
        limits: Each row's ``max_new_tokens``.
        prompt_width: Columns of the padded prompt (generated tokens start there).
        decode: Token ids to text (special tokens skipped, as completions are decoded).
    """

    def __init__(
        self,
        stops: Sequence[Sequence[str]],
        limits: Sequence[int],
        prompt_width: int,
        decode: Callable[[list[int]], str],
    ) -> None:
        self.stops = [tuple(s) for s in stops]
        self.limits = list(limits)
        self.prompt_width = prompt_width
        self.decode = decode
        self.done = [False] * len(self.stops)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated = input_ids[:, self.prompt_width :]  # (rows, new_tokens)
        for row, stops in enumerate(self.stops):
            if self.done[row]:
                continue
            tokens = generated[row].tolist()
            text = self.decode(tokens) if stops else ""
            self.done[row] = len(tokens) >= self.limits[row] or any(s in text for s in stops)
        return torch.tensor(self.done, device=input_ids.device)
