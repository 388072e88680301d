"""``search``: real BM25 (bm25s) ranking, the shipped corpus, and SearxNG over a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from regrpo.errors import ErrorType, InputError
from regrpo.tools import ImageStore, Toolbox, ToolContext, ToolError, TransientToolError
from regrpo.tools.search import (
    DEFAULT_CORPUS,
    BM25Provider,
    SearchProvider,
    SearxNGProvider,
    make_search_tool,
)

DOCS = [
    {
        "id": "a",
        "title": "Quorlan bridge",
        "text": "The Quorlan bridge spans the Vesk river and is 412 metres long.",
    },
    {
        "id": "b",
        "title": "Vesk river",
        "text": "The Vesk river flows north through Duvan for 880 kilometres.",
    },
    {"id": "c", "title": "Mirrow lake", "text": "Mirrow lake lies at 1,204 metres and freezes every winter."},
    {
        "id": "d",
        "title": "Tallin orchard",
        "text": "An orchard of pears, apples and quince on the Duvan plain.",
    },
]


def test_bm25_ranks_the_document_that_names_the_entity_first():
    provider = BM25Provider(DOCS)
    assert isinstance(provider, SearchProvider)
    hits = provider.search("how long is the Quorlan bridge", k=3)
    assert hits[0].id == "a"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert provider.search("Mirrow", k=3)[0].id == "c"
    assert {h.id for h in provider.search("Vesk", k=4)} == {"a", "b"}  # only documents sharing a term


def test_bm25_returns_nothing_for_unknown_words_and_respects_k():
    provider = BM25Provider(DOCS)
    assert provider.search("zzyzx wibble", k=3) == []
    assert provider.search("the of and", k=3) == []  # stop words only
    assert len(provider.search("Duvan river metres", k=2)) == 2


def test_bm25_reads_jsonl_and_rejects_bad_input(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({**d, "attributes": {"x": 1}}) for d in DOCS) + "\n")
    assert BM25Provider.from_jsonl(path).search("orchard pears", k=1)[0].id == "d"
    with pytest.raises(InputError, match="not found"):
        BM25Provider.from_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "title": "t"\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        BM25Provider.from_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="text"):
        BM25Provider([{"id": "x", "title": "t"}])


@pytest.mark.skipif(not DEFAULT_CORPUS.is_file(), reason="the suite's corpus is not written yet")
def test_default_corpus_finds_each_entity_by_its_title():
    rows = [json.loads(line) for line in DEFAULT_CORPUS.read_text().splitlines() if line.strip()]
    provider = BM25Provider.default()
    sample = rows[:: max(1, len(rows) // 25)]
    found = sum(provider.search(row["title"], k=3)[0].id == row["id"] for row in sample)
    assert found >= 0.9 * len(sample)


def test_search_tool_through_the_toolbox():
    toolbox = Toolbox([make_search_tool(BM25Provider(DOCS))])
    context = ToolContext(images=ImageStore())
    outcome = asyncio.run(toolbox.call("search", {"query": "Mirrow lake height", "k": 1}, context))
    assert outcome.ok, outcome.message
    assert outcome.output == {"results": [{"id": "c", "title": DOCS[2]["title"], "text": DOCS[2]["text"]}]}
    bad = asyncio.run(toolbox.call("search", {"query": "x", "k": 50}, context))
    assert not bad.ok and bad.error_type == ErrorType.ARG_INVALID
    empty = asyncio.run(toolbox.call("search", {"query": "  "}, context))
    assert not empty.ok and empty.error_type == ErrorType.ARG_INVALID


class _Server:
    """A real HTTP server on a free port answering ``/search`` from a script of status codes."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.queries: list[dict[str, list[str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
                url = urlparse(self.path)
                server.queries.append(parse_qs(url.query))
                status = server.statuses[min(len(server.queries), len(server.statuses)) - 1]
                body = {"error": "try later"} if status != 200 else {
                    "query": server.queries[-1]["q"][0],
                    "results": [
                        {"title": f"Result {i}", "content": f"about {server.queries[-1]['q'][0]}", "url": f"https://e.x/{i}"}
                        for i in range(5)
                    ],
                }  # fmt: skip
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_searxng_retries_503_twice_then_succeeds():
    with _Server([503, 503, 200]) as server:
        provider = SearxNGProvider(server.url, timeout_s=5, max_attempts=3)
        hits = provider.search("quorlan bridge", k=3)
    assert len(server.queries) == 3 and provider.requests_made == 3
    assert server.queries[0] == {"q": ["quorlan bridge"], "format": ["json"]}
    assert [h.id for h in hits] == ["https://e.x/0", "https://e.x/1", "https://e.x/2"]
    assert hits[0].title == "Result 0" and hits[0].text == "about quorlan bridge"


def test_searxng_gives_up_after_max_attempts_and_the_toolbox_does_not_retry_again():
    with _Server([503]) as server:
        with pytest.raises(ToolError, match="503.*gave up after 2 attempts") as caught:
            SearxNGProvider(server.url, timeout_s=5, max_attempts=2).search("q", k=3)
        assert len(server.queries) == 2
        assert caught.value.kind == ErrorType.TOOL_CRASH and not isinstance(caught.value, TransientToolError)
        toolbox = Toolbox([make_search_tool(SearxNGProvider(server.url, max_attempts=2))], max_attempts=3)
        outcome = asyncio.run(toolbox.call("search", {"query": "q"}, ToolContext(images=ImageStore())))
    assert not outcome.ok and len(server.queries) == 4  # 2 more, not 2 x 3


def test_searxng_does_not_retry_a_400():
    with _Server([400, 200]) as server:
        with pytest.raises(ToolError) as caught:
            SearxNGProvider(server.url, timeout_s=5, max_attempts=3).search("q", k=3)
    assert len(server.queries) == 1
    assert caught.value.kind == ErrorType.ARG_INVALID and not isinstance(caught.value, TransientToolError)


def test_searxng_connection_refused_is_transient_and_reaches_the_model_as_a_crash():
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        closed_port = probe.server_address[1]  # free now, closed once the block ends
    provider = SearxNGProvider(f"http://127.0.0.1:{closed_port}", timeout_s=2, max_attempts=2)
    toolbox = Toolbox([make_search_tool(provider)], max_attempts=3)
    outcome = asyncio.run(toolbox.call("search", {"query": "q"}, ToolContext(images=ImageStore())))
    assert not outcome.ok and outcome.error_type == ErrorType.TOOL_CRASH
    assert "cannot reach" in outcome.message and provider.requests_made == 2


def test_searxng_rejects_a_bad_base_url():
    with pytest.raises(InputError, match="http"):
        SearxNGProvider("localhost:8888")
