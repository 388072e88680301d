"""Admission control and refusals of the agent server: decide at once, never queue without bound.

``EpisodeGate`` counts: at most ``max_running`` episodes run and ``max_waiting`` wait for a slot;
``reserve()`` is synchronous, so a request beyond that is refused (429 + ``Retry-After``) before any
work or any response byte, and after shutdown begins every new request gets 503 + ``Retry-After``.
A ``Ticket`` is one admitted request: waiting, then running, then released; ``release()`` is
idempotent so every exit path (success, error, timeout, client gone, stream torn down) may call it.

``Refusal`` is the one exception routes raise to answer with an error; it renders the OpenAI error
envelope (vLLM's ``type`` names) with its status, parameter and ``Retry-After``.
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse

from regrpo.server.responses import (
    error_response,
    sanitize_message,
)

__all__ = ["ERROR_TYPES", "EpisodeGate", "Refusal", "Ticket"]

ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
    504: "TimeoutError",
}


class Refusal(Exception):
    """A request we turn down: becomes an OpenAI error envelope with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after = status, message, param, retry_after
        self.reason = reason
        """For 429/503: why the request was turned away (the ``reason`` label of the rejections metric)."""

    def response(self) -> JSONResponse:
        response = error_response(
            self.status, sanitize_message(self.message), ERROR_TYPES.get(self.status, "Error"), self.param
        )
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        return response


class EpisodeGate:
    """At most ``max_running`` episodes run and ``max_waiting`` wait; the rest are refused at once.

    Single event loop only (counters are not locked). ``reserve()`` is synchronous, so the decision
    to refuse is made before any response byte is sent.
    """

    def __init__(self, max_running: int, max_waiting: int, retry_after_s: int) -> None:
        self.max_running, self.max_waiting, self.retry_after_s = max_running, max_waiting, retry_after_s
        self.running = 0
        self.waiting = 0
        self.closed = False
        self._slots = asyncio.Semaphore(max_running)

    def reserve(self) -> Ticket:
        if self.closed:
            raise Refusal(
                503,
                "the server is shutting down; retry shortly",
                retry_after=self.retry_after_s,
                reason="shutdown",
            )
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise Refusal(
                429,
                f"the agent is busy ({self.running} running, {self.waiting} waiting); retry later",
                retry_after=self.retry_after_s,
                reason="overloaded",
            )
        self.waiting += 1
        return Ticket(self)


class Ticket:
    """One admitted request: waiting for a slot, then running, then released (idempotent)."""

    def __init__(self, gate: EpisodeGate) -> None:
        self.gate = gate
        self.state = "waiting"

    async def __aenter__(self) -> Ticket:
        await self.gate._slots.acquire()
        self.gate.waiting -= 1
        self.gate.running += 1
        self.state = "running"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.state == "waiting":
            self.gate.waiting -= 1
        elif self.state == "running":
            self.gate.running -= 1
            self.gate._slots.release()
        self.state = "done"
