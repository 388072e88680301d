"""``TraceLogger``: writes one episode to a :class:`TraceStore` as it happens.

The logger owns the in-memory :class:`Episode` and mirrors every change to the store at once, so the
store never lags the agent by more than the write in progress.
"""

from __future__ import annotations

import time

from regrpo.traces.schema import Episode, EpisodeStatus, Message, Step
from regrpo.traces.store import TraceStore

__all__ = ["TraceLogger"]


class TraceLogger:
    """Record one episode: ``start`` it, add messages and steps, ``finish`` it."""

    def __init__(self, store: TraceStore, episode: Episode) -> None:
        self.store = store
        self.episode = episode
        self.update_header()

    def message(self, message: Message) -> None:
        self.store.append_message(self.episode.trace_id, len(self.episode.messages), message)
        self.episode.messages.append(message)

    def step(self, step: Step) -> None:
        """Record a finished step, and beat the episode's heartbeat (``updated_at``)."""
        self.store.append_step(self.episode.trace_id, step)
        self.episode.steps.append(step)
        self.update_header()

    def update_header(self) -> None:
        """Write header fields changed in place (images, system prompt, usage) and the heartbeat."""
        self.episode.updated_at = time.time()
        self.store.put_header(self.episode)

    def finish(
        self, status: EpisodeStatus, *, answer: str | None = None, error: str | None = None
    ) -> Episode:
        self.episode.status = status
        self.episode.answer = answer
        self.episode.error = error
        self.episode.ended_at = self.episode.updated_at = time.time()
        self.episode.usage.wall_s = self.episode.ended_at - self.episode.started_at
        self.store.put_header(self.episode)
        return self.episode
