"""Bearer-key checks shared by both servers: one ``Authorization`` header, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import Scope

__all__ = ["authorization", "bearer_token", "key_matches"]


def authorization(scope: Scope) -> bytes | None:
    """The request's one ``Authorization`` header, or ``None`` when it has none or several.

    Two ``Authorization`` headers are refused, not resolved: which one a proxy in front reads and
    which one we read could differ (the last one used to win here).
    """
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    return values[0] if len(values) == 1 else None


def bearer_token(scope: Scope) -> bytes | None:
    """The token of the request's one ``Authorization: Bearer <token>`` header, else ``None``."""
    header = authorization(scope)
    if header is None:
        return None
    scheme, _, token = header.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


def key_matches(token: bytes | None, keys: Sequence[bytes]) -> bool:
    """Whether ``token`` is one of ``keys``; every key is compared, so the time says nothing."""
    if token is None:
        return False
    return sum(hmac.compare_digest(token, key) for key in keys) > 0
