"""``ServerConfig``: every limit and switch of ``regrpo serve``, with its default, in one place.

A frozen dataclass (not pydantic): it is built by our own code (the CLI or a Python caller), so the
checks are plain ``__post_init__`` tests that raise :class:`~regrpo.errors.InputError`. Defaults are
safe for a server on a network: no local files and no http(s) fetches unless configured, bounded
queues, 20 MiB bodies. The one deliberate exception: with no ``api_keys`` the server is open, which
is convenient on loopback; ``run_agent_server`` warns when that is combined with a public bind.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regrpo.errors import InputError
from regrpo.server.responses import MAX_ERROR_ITEMS, MAX_JSON_VALUES

__all__ = ["ServerConfig"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Limits and switches of the agent server (``regrpo serve``)."""

    api_keys: tuple[str, ...] = ()
    """Accepted ``Authorization: Bearer <key>`` values. Empty = no authentication (loopback use only)."""
    admin_keys: tuple[str, ...] = ()
    """Keys for the adapter admin routes (promote, rollback): when set, only these open those routes
    (they open every other route too, e.g. for a trainer's verification probe); empty = the admin
    routes take ``api_keys`` like every other route."""
    model_name: str = "regrpo-agent"
    """The model id clients send in ``model`` and that ``GET /v1/models`` lists."""
    max_body_bytes: int = 20 * MiB
    """Largest request body, counted while it is read (a base64 image is 4/3 of its file size)."""
    max_json_values: int = MAX_JSON_VALUES
    """Most JSON values a body may hold, counted before it is parsed (``json.loads`` and pydantic hold
    the GIL while they run: 300,000 ``{}`` items stalled ``/healthz`` 1.4 s before this bound)."""
    max_error_items: int = MAX_ERROR_ITEMS
    """Most errors a validation 400 lists (then "... and N more")."""
    body_timeout_s: float = 30.0
    """Seconds the whole request body may take to arrive (a drip-fed body is a 408 after it)."""
    max_images_per_request: int = 8
    """Most ``image_url`` parts in the task message."""
    max_image_pixels: int = 16_000_000
    """Largest image (width x height), checked from the header before the pixels are decoded."""
    max_request_pixels: int = 32_000_000
    """Most pixels of all of one request's images together, checked from their headers. Images are
    decoded only once the request has a slot, so at most ``max_concurrency`` times this many pixels
    are ever decoded at once (3 bytes each); a queued request holds its encoded bytes only."""
    max_image_bytes: int = 15 * MiB
    """Largest encoded image from a ``data:`` URL or a local file."""
    image_roots: tuple[Path, ...] = ()
    """Folders whose files (and sub-folders') may be named by path or ``file://`` URL. Empty = none."""
    allow_http_images: bool = False
    """Fetch ``http(s)://`` image URLs (off by default: a server that fetches URLs is an SSRF risk)."""
    http_host_allowlist: tuple[str, ...] = ()
    """Hosts that may be fetched. Empty = any host whose addresses are all public. A listed host is
    trusted even when it resolves to a private or loopback address (an internal image server)."""
    http_max_bytes: int = 10 * MiB
    """Largest image fetched over http(s)."""
    http_timeout_s: float = 10.0
    """Deadline of a whole http(s) fetch (connect + headers + body)."""
    max_concurrency: int = 4
    """Episodes running at once."""
    max_queue: int = 16
    """Episodes waiting for a slot; beyond it a request gets 429 + Retry-After at once."""
    request_timeout_s: float = 300.0
    """Deadline of one episode (its queue wait included); past it the request gets 504."""
    retry_after_s: int = 1
    """The ``Retry-After`` value (seconds) sent with 429 and 503."""
    registry_dir: Path | None = None
    """Adapter registry folder for the admin endpoints; ``None`` = no adapter admin (404)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form labels shown in ``GET /healthz`` (deployment name, git sha, ...)."""

    def __post_init__(self) -> None:
        positive = (
            "max_body_bytes",
            "max_json_values",
            "max_error_items",
            "body_timeout_s",
            "max_images_per_request",
            "max_image_pixels",
            "max_request_pixels",
            "max_image_bytes",
            "http_max_bytes",
            "http_timeout_s",
            "max_concurrency",
            "request_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise InputError(f"ServerConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_queue < 0 or self.retry_after_s < 0:
            raise InputError("ServerConfig.max_queue and retry_after_s must be >= 0")
        if not self.model_name.strip():
            raise InputError("ServerConfig.model_name must not be empty")
        if any(not key or key != key.strip() for key in (*self.api_keys, *self.admin_keys)):
            raise InputError("API keys must be non-empty and have no surrounding whitespace")
        if set(self.api_keys) & set(self.admin_keys):
            raise InputError("an admin key must differ from every API key (admin keys are the only way in)")
        # realpath once, so later checks compare resolved paths (symlinks cannot escape a root)
        roots = tuple(Path(os.path.realpath(Path(root).expanduser())) for root in self.image_roots)
        for root in roots:
            if not root.is_dir():
                raise InputError(f"image root {str(root)!r} is not a folder")
        object.__setattr__(self, "image_roots", roots)
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        object.__setattr__(self, "admin_keys", tuple(self.admin_keys))
        object.__setattr__(
            self, "http_host_allowlist", tuple(h.lower().strip("[]") for h in self.http_host_allowlist)
        )

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> ServerConfig:
        """Build from parsed CLI flags: every attribute of ``args`` named like a field is used.

        List flags (``--api-key`` with ``action="append"``) may be lists; ``None`` means "default".
        """
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            value: Any = getattr(args, spec.name, None)
            if value is None:
                continue
            if spec.name in ("api_keys", "admin_keys", "image_roots", "http_host_allowlist"):
                value = tuple(value)
            if spec.name == "registry_dir":
                value = Path(value)
            values[spec.name] = value
        return cls(**values)
