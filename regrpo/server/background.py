"""Run an ASGI app with uvicorn on a real socket in a background thread, and know when it listens.

For tests, examples and benchmarks: ``start_in_thread(app)`` binds a free loopback port (``port=0``),
waits on an event set by uvicorn's own start-up (no polling, no sleeps), yields the server (``.url``,
``.port``) and stops it at the end of the ``with`` block.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from regrpo.server.limits import ConnectionLimits, uvicorn_config

__all__ = ["BackgroundServer", "start_in_thread"]


class BackgroundServer(uvicorn.Server):
    """A uvicorn server in a daemon thread that signals when it is listening (tests, examples, benchmarks)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, name="regrpo-server", daemon=True)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @property
    def port(self) -> int:
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        self.should_exit = True
        self.thread.join(timeout)


@contextlib.contextmanager
def start_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 60.0,
    limits: ConnectionLimits | None = None,
) -> Iterator[BackgroundServer]:
    """Run ``app`` on a real socket (``port=0``: a free one) for the ``with`` block; yields the server.

    ``limits`` as the servers run with (default :class:`~regrpo.server.limits.ConnectionLimits`).
    """
    config = uvicorn_config(app, host, port, limits or ConnectionLimits(), log_level="warning", lifespan="on")
    server = BackgroundServer(config)
    server.thread.start()
    if not server.ready.wait(timeout):
        server.stop()
        raise RuntimeError(f"the server did not start within {timeout:g} s")
    try:
        yield server
    finally:
        server.stop()
