"""Connection limits on a real socket (issue 14, item 2): slow heads are closed, excess connections 503.

Loopback only, bounded counts and times: every wait is a blocking ``recv`` with a deadline, which
returns as soon as the server acts.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from regrpo.errors import InputError
from regrpo.server.background import start_in_thread
from regrpo.server.limits import ConnectionLimits

REQUEST = b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n"


def app() -> Starlette:
    async def ok(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/ok", ok)])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (reads until EOF); fails past ``seconds``."""
    started = time.perf_counter()
    sock.settimeout(seconds)
    while sock.recv(4096):
        pass
    return time.perf_counter() - started


@pytest.mark.parametrize(
    "sent", [b"", b"GET /ok HTTP/1.1\r\nHost: te", b"G"], ids=["idle", "half-sent-head", "drip-fed"]
)
def test_a_request_head_that_does_not_arrive_in_time_is_closed(sent):
    with start_in_thread(app(), limits=ConnectionLimits(head_timeout_s=0.5)) as server:
        with contextlib.closing(connect(server.port)) as sock:
            sock.sendall(sent)
            assert closed_within(sock, 10) < 5
        with contextlib.closing(connect(server.port)) as sock:  # a prompt request is served
            sock.sendall(REQUEST)
            assert b"200 OK" in sock.recv(4096)


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_its_next_head():
    with start_in_thread(app(), limits=ConnectionLimits(head_timeout_s=0.5, keep_alive_s=30)) as server:
        with contextlib.closing(connect(server.port)) as sock:
            sock.sendall(REQUEST)
            assert b"200 OK" in sock.recv(4096)
            sock.sendall(b"GET /ok HT")  # the keep-alive timer stops at new data; the head timer does not
            assert closed_within(sock, 10) < 5


def test_connections_past_the_limit_get_a_503_at_once():
    with start_in_thread(app(), limits=ConnectionLimits(max_connections=3, head_timeout_s=30)) as server:
        idle = [connect(server.port) for _ in range(3)]
        try:
            with contextlib.closing(connect(server.port)) as sock:
                sock.sendall(REQUEST)
                assert b"503" in sock.recv(4096).split(b"\r\n", 1)[0]
        finally:
            for sock in idle:
                sock.close()


def test_limits_must_be_positive():
    with pytest.raises(InputError, match="head_timeout_s"):
        ConnectionLimits(head_timeout_s=0)


def test_a_drip_fed_body_is_a_408_after_the_body_timeout(store):
    """The head arrives at once; the body never does: the agent server answers 408, not a held slot."""
    from regrpo import Agent, ScriptedPolicy
    from regrpo.server.app import build_agent_app
    from regrpo.server.config import ServerConfig
    from regrpo.tools.calculator import calculator

    agent = Agent(ScriptedPolicy(["<answer>ok</answer>"], cycle=True), tools=[calculator], store=store)
    agent_app = build_agent_app(agent, ServerConfig(body_timeout_s=0.5))
    with start_in_thread(agent_app) as server, contextlib.closing(connect(server.port)) as sock:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        sock.sendall(head + b"Content-Length: 100\r\n\r\n{")
        assert b"408" in sock.recv(4096).split(b"\r\n", 1)[0]
