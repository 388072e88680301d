"""The servers' error bodies: the OpenAI error envelope, vLLM's path scrubbing, and safe JSON decoding.

Shared by ``regrpo serve`` (:mod:`regrpo.server.app`) and ``regrpo serve-model``
(:mod:`regrpo.server.model_server`); the wire objects themselves are :mod:`regrpo.openai_wire`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from regrpo.openai_wire import ErrorInfo, ErrorResponse

__all__ = [
    "JSON_ONLY",
    "MAX_ERROR_CHARS",
    "MAX_ERROR_ITEMS",
    "InvalidBody",
    "BodyRefused",
    "NotJSONText",
    "RequestError",
    "error_response",
    "parse_json_text",
    "read_json_body",
    "read_limited_body",
    "sanitize_message",
    "validation_error_response",
]


def error_response(status: int, message: str, type: str, param: str | None = None) -> JSONResponse:
    """A JSON error response in the OpenAI envelope with HTTP status ``status``."""
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status)


# vLLM's sanitize_message (contract §1): absolute paths under system roots, and anything that looks
# like a path ending in a file extension, become "<path>" so error text never leaks the file system.
# Linear time (issue 14, item 1): a match starts only where a word does (the lookbehind fails at once
# inside a run of word characters) and every run is bounded, so a 60 KB run of letters in a request's
# ``model`` cannot make each error take seconds; messages are cut to MAX_ERROR_CHARS first.
_PATH = re.compile(
    r"(?:/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[^\s'\"<>,;:]{0,4096})?)"
    r"|(?:(?<![\w.\-~/])[\w.\-~]{0,256}/[^\s'\"<>,;:]{0,4096}\.[A-Za-z0-9]{1,8}\b)"
)
MAX_ERROR_CHARS = 2000
"""Error messages longer than this are cut (the cut is marked), before paths are scrubbed."""


def sanitize_message(message: str) -> str:
    """``message`` with file-system paths replaced by ``<path>`` (vLLM does this to every error).

    A message over :data:`MAX_ERROR_CHARS` is cut to that length first, so an echoed input cannot
    make the error large or slow to build.
    """
    if len(message) > MAX_ERROR_CHARS:
        cut = len(message) - MAX_ERROR_CHARS
        message = f"{message[:MAX_ERROR_CHARS]}… ({cut} more characters cut)"
    return _PATH.sub("<path>", message)


class RequestError(Exception):
    """A request answered with an error envelope (raised inside handlers, turned into a response).

    ``regrpo serve-model``'s, in vLLM's wording; the message is path-scrubbed when sent."""

    def __init__(self, status: int, message: str, type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type, param

    def response(self) -> JSONResponse:
        return error_response(self.status, sanitize_message(self.message), self.type, self.param)


class BodyRefused(Exception):
    """A request body that was not read whole: too large (413), too slow (408), cut off (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_limited_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The body, read chunk by chunk and refused (:class:`BodyRefused`) as soon as it is over ``limit``
    bytes (a declared ``Content-Length`` is checked first), or not all there within ``timeout_s``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(
            413, f"request body is {int(declared):,} bytes, over this server's byte limit: at most {limit:,}"
        )
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyRefused(413, f"request body is over this server's {limit:,}-byte limit")
    except ClientDisconnect:
        raise BodyRefused(400, "the client closed the connection before sending the whole body") from None
    except TimeoutError:
        raise BodyRefused(408, f"the request body did not arrive within {timeout_s:g} s") from None
    return bytes(body)


JSON_ONLY = "Unsupported Media Type: Only 'application/json' is allowed"
"""Both servers' (and vLLM's) message for a POST whose ``Content-Type`` is not JSON."""


async def read_json_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """A JSON request's body as :func:`read_limited_body` reads it, after checking its media type:
    anything but ``application/json`` (parameters such as ``charset`` aside) is a 400
    :class:`BodyRefused` before a byte of the body is read."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise BodyRefused(400, JSON_ONLY)
    return await read_limited_body(request, limit, timeout_s)


class NotJSONText(ValueError):
    """A request body the servers refuse to parse: bad syntax, too deep, too many values, a lone surrogate."""


MAX_JSON_VALUES = 100_000
"""Most JSON values a request body may hold by default (``--max-json-values``), bounded before
parsing by counting ``,``, ``{`` and ``[`` (inside strings too: an over-count, never an
under-count). Parsing and validating run in a worker thread, but ``json.loads`` and pydantic hold
the GIL throughout: a 1.2 MB body of 300,000 ``{}`` items stalled the health checks of both servers
for 1.4-2.9 s (benchmarks/health_under_abuse.py)."""


def parse_json_text(body: bytes | str, max_values: int = MAX_JSON_VALUES) -> Any:
    """``json.loads(body)``, refusing what the servers could not handle later as :class:`NotJSONText`.

    Bodies holding more than ``max_values`` values (:data:`MAX_JSON_VALUES`), nesting deeper than the parser's
    recursion limit, and strings holding a lone UTF-16 surrogate (``"\\ud800"``: valid JSON, but not
    Unicode text; it broke tokenising, trace writes and responses), are refused here with the
    reason, so no handler sees them.
    """
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    values = raw.count(b",") + raw.count(b"{") + raw.count(b"[")
    if values > max_values:
        raise NotJSONText(
            f"the body holds about {values:,} JSON values (counting ',', '{{' and '['), over the limit of "
            f"{max_values:,}; send fewer items per request"
        )
    try:
        data = json.loads(body)
    except RecursionError:
        raise NotJSONText("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise NotJSONText(exc.args[0] if isinstance(exc, json.JSONDecodeError) else str(exc)) from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotJSONText("a string holds a lone UTF-16 surrogate (not Unicode text)") from None
    except RecursionError:
        raise NotJSONText("nested too deeply") from None
    return data


MAX_ERROR_ITEMS = 20
"""A validation error lists at most this many items by default (``--max-error-items``; a body of
100,000 bad items made a 195 MiB 400)."""


class InvalidBody(Exception):
    """A request body that failed its schema, with how many of its errors the 400 may list."""

    def __init__(self, error: ValidationError, max_items: int = MAX_ERROR_ITEMS) -> None:
        super().__init__(f"{error.error_count()} validation errors")  # not str(error): it formats them all
        self.error, self.max_items = error, max_items


def validation_error_response(
    exc: ValidationError, *, prefix: str = "body", max_items: int = MAX_ERROR_ITEMS
) -> JSONResponse:
    """A pydantic error as vLLM's 400: ``type`` "Bad Request", ``param`` the first error's location.

    The message lists each error's location, kind and text (at most ``max_items`` of them); it never
    holds the input (which may be large or private) or a traceback.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    lines = []
    for err in errors[:max_items]:
        loc = ".".join(str(part) for part in (prefix, *err["loc"]))
        lines.append(str({"type": err["type"], "loc": loc, "msg": err["msg"]}))
    first = errors[0]["loc"] if errors else ()
    param = ".".join(str(part) for part in (prefix, *first))
    count = len(errors)
    if count > max_items:
        lines.append(f"... and {count - max_items} more")
    message = f"{count} validation error{'s' if count != 1 else ''}:\n  " + "\n  ".join(lines)
    return error_response(400, message, "Bad Request", param)
