"""The model server's HTTP plumbing: body parsing like vLLM's, its ``--api-key`` middleware, error mapping.

Split from :mod:`regrpo.server.model_server` (which keeps the routes and the engine calls) so each
file has one job; nothing here knows about the model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from regrpo.server.auth import authorization, key_matches
from regrpo.server.responses import (
    JSON_ONLY,
    BodyRefused,
    InvalidBody,
    NotJSONText,
    RequestError,
    error_response,
    parse_json_text,
    read_json_body,
    validation_error_response,
)

__all__ = ["GUARDED_PREFIXES", "BearerAuth", "handled", "http_error", "parse_body", "shown"]

GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")
"""Route prefixes vLLM's ``--api-key`` guards."""

_log = logging.getLogger("regrpo.server.model_server")

T = TypeVar("T", bound=BaseModel)


async def parse_body(
    request: Request, model: type[T], max_body_bytes: int, max_json_values: int, max_error_items: int
) -> T:
    """The request body as ``model``, or a 400 like vLLM's (media type, JSON syntax, schema).

    Bodies over ``max_body_bytes`` are refused (413) while they are read, before they are buffered
    whole, and bodies of more than ``max_json_values`` values before they are parsed (400; a schema
    error lists at most ``max_error_items`` of its errors); nesting too deep for the JSON parser and
    strings that are not Unicode text (lone surrogates such as ``"\\ud800"``) are 400s, never 500s.
    """
    try:
        raw = await read_json_body(request, max_body_bytes)
    except BodyRefused as exc:
        error_type = "Bad Request" if exc.message == JSON_ONLY else "BadRequestError"  # vLLM's own types
        raise RequestError(exc.status, exc.message, error_type) from None

    def parsed() -> T:  # off the event loop: a 20 MiB body takes a while to decode and validate
        try:
            data = parse_json_text(raw, max_json_values)
        except NotJSONText as exc:
            raise RequestError(
                400, f"1 validation error:\n  JSON decode error: {exc}", "Bad Request", "body"
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise InvalidBody(exc, max_error_items) from None
        except RecursionError:
            raise RequestError(400, "request body is nested too deeply", "Bad Request", "body") from None

    return await anyio.to_thread.run_sync(parsed)


def shown(name: str, limit: int = 200) -> str:
    """A client-sent name as echoed in an error: cut past ``limit`` characters (the cut says so)."""
    return name if len(name) <= limit else f"{name[:limit]}… ({len(name)} characters)"


class BearerAuth:
    """vLLM's ``--api-key`` middleware: guarded prefixes need ``Authorization: Bearer <key>``."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.expected = app, [f"Bearer {api_key}".encode()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"].startswith(GUARDED_PREFIXES)
        ):
            # vLLM compares the whole header exactly; a second Authorization header is refused
            if not key_matches(authorization(scope), self.expected):
                await JSONResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def handled(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a route so our request errors become error envelopes (validation, contract errors)."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as exc:
            return exc.response()
        except InvalidBody as exc:
            return validation_error_response(exc.error, max_items=exc.max_items)
        except Exception:  # a bug, not the client's fault: a JSON 500 without the traceback, logged here
            _log.exception("unhandled error in %s %s", request.method, request.url.path)
            return error_response(500, "Internal server error (logged on the server).", "InternalServerError")

    return route


async def http_error(request: Request, exc: Exception) -> Response:
    # FastAPI's default body for routing errors (contract §1: "unknown route" is {"detail": "Not Found"}).
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
