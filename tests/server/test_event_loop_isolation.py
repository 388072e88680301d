"""Slow work never runs on the agent server's event loop (issue 14, items 5 and 6).

A trace store whose write lock another connection holds (SQLite's 10 s busy timeout) used to freeze
``/healthz`` for as long, because the episode wrote on the loop; images were decoded before a request
had a slot, so queued requests held their pixels. Both run on a real socket here, synchronised on what
the server reports (``running`` in ``/healthz``), never on sleeps.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import threading

import httpx
from PIL import Image
from server_helpers import data_url, image_message

from regrpo import Agent, ScriptedPolicy, TraceStore
from regrpo.server.app import build_agent_app
from regrpo.server.background import start_in_thread
from regrpo.server.config import ServerConfig
from regrpo.tools.calculator import calculator


def test_health_answers_while_an_episode_waits_on_a_locked_trace_store(tmp_path):
    path = tmp_path / "traces.db"
    agent = Agent(
        ScriptedPolicy(["<answer>ok</answer>"], cycle=True), tools=[calculator], store=TraceStore(path)
    )
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer, as far as SQLite knows
    other.execute("BEGIN IMMEDIATE")  # holds the write lock: the episode's first write must wait
    answers: list[httpx.Response] = []
    with start_in_thread(build_agent_app(agent, ServerConfig())) as server:
        chat = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{server.url}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "say ok"}]},
                    timeout=60,
                )
            )
        )
        chat.start()
        try:
            for _ in range(200):  # each poll is answered at once while the loop is free
                health = httpx.get(f"{server.url}/healthz", timeout=2).json()
                if health["running"] == 1:
                    break
            assert health["running"] == 1, "the episode never took its slot"
            # the episode is now blocked on the store's lock, in a worker thread: health still answers
            assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
            assert not answers
        finally:
            other.execute("COMMIT")
            other.close()
            chat.join(60)
    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "ok"


def test_a_request_whose_images_exceed_the_pixel_budget_is_refused_before_decoding(store):
    agent = Agent(ScriptedPolicy(["<answer>ok</answer>"], cycle=True), tools=[calculator], store=store)
    app = build_agent_app(agent, ServerConfig(max_request_pixels=2_000_000))
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 1000), "white").save(buffer, "PNG")
    big = data_url(buffer.getvalue())  # 1 M pixels, a few KB encoded

    async def send(*urls: str) -> httpx.Response:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return await client.post(
                "/v1/chat/completions", json={"messages": [image_message("read it", *urls)]}
            )

    refused = asyncio.run(send(big, big, big))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert "3,000,000 pixels" in error["message"] and "2,000,000 per request" in error["message"]
    assert error["param"] == "messages.0.content"
    assert list(store.episodes()) == []  # refused before an episode (or a decode) began
    ok = asyncio.run(send(big, big))
    assert ok.status_code == 200, ok.text
    (episode,) = list(store.episodes())
    assert [(i.width, i.height) for i in episode.images] == [(1000, 1000), (1000, 1000)]
