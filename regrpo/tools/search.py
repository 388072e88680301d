"""``search``: look facts up through a :class:`SearchProvider` (offline BM25 or a SearxNG server).

Two providers behind one small protocol, ``search(query, k) -> list[SearchResult]``:

* :class:`BM25Provider` ranks a local document collection with ``bm25s`` (Okapi BM25 over title and
  text, English stop words removed, no stemming so names match exactly). ``BM25Provider.default()``
  indexes the suite's shipped corpus ``regrpo/data/search_corpus.jsonl``, whose entities are
  fictional so a model cannot answer from memory. Documents sharing no term with the query are not
  returned: zero results is an honest empty observation, which the runtime's trigger handles.
* :class:`SearxNGProvider` calls a SearxNG-compatible JSON API (``GET /search?q=...&format=json``)
  with httpx. Failures are translated once, here: connection errors, timeouts, 429 and 5xx are
  :class:`TransientToolError` and retried with tenacity (exponential back-off, ``max_attempts`` in
  all); any other 4xx is a plain :class:`ToolError` at once (400/422 ``ArgInvalid``, other 4xx
  ``ToolMismatch``: the service cannot serve this request), as is a body that is not the expected JSON.
  The provider does its own retrying; a transient error that outlives ``max_attempts`` becomes a
  plain ``ToolCrash`` ``ToolError``, so the Toolbox does not retry it again (which would multiply
  the attempts).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

import httpx
import tenacity
from pydantic import Field

from regrpo.errors import ErrorType, InputError
from regrpo.tools.base import FunctionTool, tool
from regrpo.tools.errors import ToolError, TransientToolError

__all__ = [
    "DEFAULT_CORPUS",
    "BM25Provider",
    "SearchProvider",
    "SearchResult",
    "SearxNGProvider",
    "make_search_tool",
    "shared_search_provider",
]

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "search_corpus.jsonl"
"""The suite's fictional-facts corpus (written by ``regrpo.tasks.facts``), shipped as package data."""
MAX_RESULTS = 10


@dataclass(frozen=True)
class SearchResult:
    """One hit: a stable id (a document id or a URL), its title, its text and the provider's score."""

    id: str
    title: str
    text: str
    score: float = 0.0

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "text": self.text}


@runtime_checkable
class SearchProvider(Protocol):
    """Anything that answers a text query with at most ``k`` results, best first."""

    def search(self, query: str, k: int) -> list[SearchResult]:
        """Raise :class:`ToolError` for failures the model should see; ``[]`` when nothing matches."""
        ...


class BM25Provider:
    """Okapi BM25 (``bm25s``) over an in-memory collection of ``{"id", "title", "text"}`` documents.

    Args:
        documents: Mappings with string ``id``, ``title`` and ``text``; other keys are ignored.
    """

    def __init__(self, documents: Iterable[Mapping[str, Any]]) -> None:
        import bm25s
        from bm25s.tokenization import Tokenizer

        self.documents: list[SearchResult] = []
        for n, doc in enumerate(documents):
            missing = [key for key in ("id", "title", "text") if not isinstance(doc.get(key), str)]
            if missing:
                raise InputError(
                    f"search document {n} needs string fields id, title and text; bad: {missing}"
                )
            self.documents.append(SearchResult(doc["id"], doc["title"], doc["text"]))
        if not self.documents:
            raise InputError("BM25Provider needs at least one document")
        self._tokenizer = Tokenizer(stopwords="en")
        texts = [f"{d.title}\n{d.text}" for d in self.documents]
        corpus_ids = self._tokenizer.tokenize(texts, return_as="ids", show_progress=False)
        self._index = bm25s.BM25()
        self._index.index(corpus_ids, show_progress=False)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> BM25Provider:
        """Index a JSON-lines file, one ``{"id", "title", "text", ...}`` object per line."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"search corpus not found: {str(path)!r}")
        documents = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number} is not valid JSON: {exc}") from exc
        return cls(documents)

    @classmethod
    def default(cls) -> BM25Provider:
        """The suite's shipped corpus, ``regrpo/data/search_corpus.jsonl``."""
        return cls.from_jsonl(DEFAULT_CORPUS)

    def search(self, query: str, k: int) -> list[SearchResult]:
        query_ids = self._tokenizer.tokenize(
            [query], update_vocab=False, return_as="ids", show_progress=False
        )
        if not any(query_ids[0]):  # only stop words or words no document contains
            return []
        k = min(k, len(self.documents))
        found, scores = self._index.retrieve(query_ids, k=k, show_progress=False)
        hits = []
        for index, score in zip(found[0], scores[0], strict=True):
            if score > 0:
                doc = self.documents[int(index)]
                hits.append(SearchResult(doc.id, doc.title, doc.text, float(score)))
        return hits


class SearxNGProvider:
    """A SearxNG-compatible JSON search API over HTTP.

    Args:
        base_url: Server root, e.g. ``http://localhost:8888``; ``/search`` is appended.
        timeout_s: Seconds each HTTP request may take (connect and read).
        max_attempts: Tries per query when failures are transient (1 = no retry).
        api_key: Sent as ``Authorization: Bearer <key>`` when given.
    """

    def __init__(
        self, base_url: str, timeout_s: float = 10.0, max_attempts: int = 3, api_key: str | None = None
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout_s <= 0 or max_attempts < 1:
            raise InputError(f"need timeout_s > 0 and max_attempts >= 1, got {timeout_s} and {max_attempts}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.requests_made = 0
        """HTTP requests sent so far, retries included (handy to see the retry policy at work)."""

    def _request_once(self, query: str) -> Any:
        self.requests_made += 1
        try:
            response = httpx.get(
                f"{self.base_url}/search",
                params={"q": query, "format": "json"},
                headers=self._headers,
                timeout=self.timeout_s,
            )
        except httpx.TimeoutException as exc:
            raise TransientToolError(f"search server timed out after {self.timeout_s:g} s") from exc
        except httpx.TransportError as exc:  # connection refused or reset, DNS failure
            raise TransientToolError(f"cannot reach the search server: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientToolError(f"search server answered HTTP {status}")
        if status >= 400:
            kind = ErrorType.ARG_INVALID if status in (400, 422) else ErrorType.TOOL_MISMATCH
            raise ToolError(f"search server rejected the query: HTTP {status} {response.text[:200]}", kind)
        try:
            return response.json()
        except ValueError as exc:
            raise ToolError("search server did not answer with JSON", ErrorType.TOOL_CRASH) from exc

    def search(self, query: str, k: int) -> list[SearchResult]:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientToolError),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        try:
            body = retrying(self._request_once, query)
        except TransientToolError as exc:  # retried enough here: the Toolbox must not retry it again
            raise ToolError(
                f"{exc} (gave up after {self.max_attempts} attempts)", ErrorType.TOOL_CRASH
            ) from exc
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise ToolError("search server's JSON has no 'results' list", ErrorType.TOOL_CRASH)
        hits = []
        for item in results:
            if isinstance(item, dict) and (item.get("title") or item.get("content")):
                url = str(item.get("url") or "")
                hits.append(SearchResult(url, str(item.get("title") or ""), str(item.get("content") or "")))
        return hits[:k]


@functools.cache
def shared_search_provider() -> BM25Provider:
    """The process's BM25 index over the shipped corpus, built on first use."""
    return BM25Provider.default()


def make_search_tool(provider: SearchProvider | None = None) -> FunctionTool:
    """The ``search`` tool over ``provider`` (default :func:`shared_search_provider`, built on first call)."""

    @tool(name="search")
    def search(query: str, k: Annotated[int, Field(ge=1, le=MAX_RESULTS)] = 3) -> dict[str, Any]:
        """Search documents for facts; returns the best matches with id, title and text.

        Args:
            query: What to look up, in a few words.
            k: How many results to return, 1 to 10.
        """
        if not query.strip():
            raise ToolError("query is empty; say what to look up")
        hits = (provider or shared_search_provider()).search(query, k)
        return {"results": [hit.as_json() for hit in hits]}

    return search
