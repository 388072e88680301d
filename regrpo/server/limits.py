"""Connection limits for both servers: how many connections, and how long a request head may take.

uvicorn's defaults let any number of connections stay open, and a connection whose request head
never completes (idle after connecting, half-sent, drip-fed one byte at a time) is never closed:
uvicorn arms its keep-alive timer only after a response. Found by an adversarial run (issue 14,
item 2): 300 idle connections exhausted the open-file limit and the health check timed out.

:func:`uvicorn_config` builds the ``uvicorn.Config`` both servers run with:

* ``max_connections`` is uvicorn's ``limit_concurrency``: past it a new request is answered 503 at
  once instead of queueing on a socket the process may not be able to open;
* ``head_timeout_s``: a connection is closed when a request head (request line and headers) has not
  fully arrived within this many seconds of the connection opening or of the previous response
  (a small subclass of uvicorn's h11 protocol: uvicorn has no such setting);
* ``keep_alive_s`` and ``max_head_bytes`` are uvicorn's ``timeout_keep_alive`` and
  ``h11_max_incomplete_event_size``.

A slow *body* is the app's to bound (the agent server reads bodies under ``ServerConfig``'s
``body_timeout_s``). Behind a reverse proxy (nginx, Envoy) the proxy's own limits apply first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from regrpo.errors import InputError

__all__ = ["ConnectionLimits", "uvicorn_config"]


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process connection limits (defaults are safe on a network; see the module docstring)."""

    max_connections: int = 256
    """Connections (and requests in flight) before new requests get a 503 at once."""
    head_timeout_s: float = 10.0
    """Seconds a request head may take to arrive, from connect or from the previous response."""
    keep_alive_s: int = 5
    """Seconds an idle keep-alive connection stays open after a response."""
    max_head_bytes: int = 64 * 1024
    """Largest request head (request line + headers); bigger is a 400."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "head_timeout_s", "keep_alive_s", "max_head_bytes"):
            if getattr(self, name) <= 0:
                raise InputError(f"ConnectionLimits.{name} must be > 0, got {getattr(self, name)!r}")


def _head_timeout_protocol(timeout_s: float) -> type[H11Protocol]:
    class HeadTimeoutH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE and self._head_timer is not None:
                self._head_timer.cancel()  # the head is in: the app bounds the body
                self._head_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()  # the next request on this connection gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(timeout_s, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutH11Protocol


def uvicorn_config(
    app: Any, host: str, port: int, limits: ConnectionLimits, **options: Any
) -> uvicorn.Config:
    """A ``uvicorn.Config`` for ``app`` with ``limits`` applied (``options``: other uvicorn settings)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_head_timeout_protocol(limits.head_timeout_s),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        **options,
    )
