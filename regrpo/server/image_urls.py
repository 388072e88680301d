"""Turn a chat request's ``image_url`` parts into images, refusing everything unsafe with a clear 400.

Three sources, each off unless it is safe or configured (:class:`~regrpo.server.config.ServerConfig`):

* ``data:image/...;base64,...`` — always accepted; the encoded length is checked before decoding.
* A local path or ``file://`` URL — only inside ``image_roots``. The path is resolved with
  ``os.path.realpath`` (symlinks and ``..`` collapsed) *before* the containment check, so neither
  traversal nor a symlink planted inside a root can reach outside it.
* ``http(s)://`` — only with ``allow_http_images``. SSRF guard: the host is resolved once, every
  address must be public (not loopback, private, link-local, multicast, reserved, unspecified, nor
  an IPv4-mapped form of those) unless the host is on ``http_host_allowlist``, and the connection
  goes to *that* resolved address (the URL's host is kept for ``Host`` and TLS SNI/verification), so
  a DNS answer that changes between check and connect (DNS rebinding) cannot redirect the fetch.
  Redirects are refused rather than followed: a redirect is exactly how an allowed host points a
  fetcher at an internal one. The body is streamed and cut at ``http_max_bytes``; the whole fetch
  has one deadline (a slow-drip server cannot hold a worker).

Decimal and hex IPv4 forms (``http://2130706433/``) are covered because the check runs on what the
resolver returns, not on the spelling of the host. Every image's size is read from its header
(decompression bombs): :meth:`ImageResolver.resolve` returns the still-encoded bytes with that
size, :func:`checked_request_pixels` bounds a request's total, and the pixels are decoded later, by
the agent in a worker thread once the episode has a slot (so queued requests never hold pixels).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from regrpo.errors import ImageError
from regrpo.server.config import ServerConfig

__all__ = ["EncodedImage", "ImageURLError", "ImageResolver", "checked_request_pixels"]


class ImageURLError(ImageError):
    """An ``image_url`` was refused or unusable; the server answers 400 with this message."""


@dataclass(frozen=True)
class EncodedImage:
    """An image's file bytes (PNG, JPEG, ...) and the size its header declares, not yet decoded."""

    data: bytes
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _checked(data: bytes, limit: int, what: str) -> EncodedImage:
    """Read the size from the header only (PIL opens lazily) and refuse images over ``limit`` pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ImageURLError(f"{what} is not a readable image: {exc}") from exc
    if width * height > limit:
        raise ImageURLError(f"{what} is {width}x{height} pixels, over this server's limit of {limit:,}")
    return EncodedImage(data, width, height)


def checked_request_pixels(images: Sequence[EncodedImage], limit: int) -> None:
    """Refuse a request whose images hold more than ``limit`` pixels together."""
    total = sum(image.pixels for image in images)
    if total > limit:
        raise ImageURLError(
            f"the request's {len(images)} images hold {total:,} pixels together, over this server's "
            f"limit of {limit:,} per request; send fewer or smaller images"
        )


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return _is_public(inner)
    return address.is_global and not address.is_multicast and not address.is_reserved


class ImageResolver:
    """Resolves ``image_url`` strings under one :class:`ServerConfig` (holds no per-request state).

    Args:
        config: The server's limits and switches.
        transport: An httpx transport for http(s) fetches (tests pass one to reach a local server).
    """

    def __init__(self, config: ServerConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._transport = transport

    async def resolve(self, url: str) -> EncodedImage:
        """The image at ``url``, its header checked but not decoded, or :class:`ImageURLError`."""
        if not isinstance(url, str) or not url.strip():
            raise ImageURLError("image_url.url must be a non-empty string")
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            data, what = self._data_url(url), "the data: URL"
        elif scheme in ("http", "https"):
            data, what = await self._fetch(url), f"the image at {url!r}"
        elif scheme == "file" or url.startswith(("/", "~")):
            data, what = self._local_file(url), "the local image"
        else:
            raise ImageURLError(
                f"image_url must be a data: URL, an http(s) URL or an absolute path; got {url[:64]!r}"
            )
        return await asyncio.to_thread(_checked, data, self.config.max_image_pixels, what)

    # -- data: ---------------------------------------------------------------------------------------

    def _data_url(self, url: str) -> bytes:
        header, sep, payload = url.partition(",")
        if not sep:
            raise ImageURLError("data: URL has no ',' between its header and its data")
        params = header[len("data:") :].lower().split(";")
        media_type = params[0]
        if "base64" not in params[1:]:
            raise ImageURLError("data: URL must be base64-encoded (data:image/png;base64,...)")
        if media_type and not media_type.startswith("image/"):
            raise ImageURLError(f"data: URL has media type {media_type!r}; send an image/* type")
        limit = self.config.max_image_bytes
        if len(payload) * 3 // 4 > limit:
            raise ImageURLError(f"data: URL image is over this server's {limit:,}-byte limit")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageURLError(f"data: URL is not valid base64: {exc}") from exc
        if not data:
            raise ImageURLError("data: URL holds no data")
        return data

    # -- local files -----------------------------------------------------------------------------------

    def _local_file(self, url: str) -> bytes:
        roots = self.config.image_roots
        if not roots:
            raise ImageURLError("this server does not accept local image paths (no image roots configured)")
        if url.lower().startswith("file:"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise ImageURLError(f"file: URL names host {parts.netloc!r}; only local files are allowed")
            raw = unquote(parts.path)
        else:
            raw = os.path.expanduser(url)
        if "\x00" in raw or not os.path.isabs(raw):
            raise ImageURLError("a local image must be an absolute path")
        real = Path(os.path.realpath(raw))
        if not any(real == root or real.is_relative_to(root) for root in roots):
            raise ImageURLError("that image path is outside the folders this server may read")
        try:
            size = real.stat().st_size
            if not real.is_file():
                raise ImageURLError("that image path is not a file")
            if size > self.config.max_image_bytes:
                raise ImageURLError(
                    f"that image file is over this server's {self.config.max_image_bytes:,}-byte limit"
                )
            return real.read_bytes()
        except OSError as exc:
            # the message names no path: it must not tell a caller what exists on the server
            raise ImageURLError(f"cannot read that image file ({type(exc).__name__})") from None

    # -- http(s) ---------------------------------------------------------------------------------------

    async def _fetch(self, url: str) -> bytes:
        config = self.config
        if not config.allow_http_images:
            raise ImageURLError("this server does not fetch http(s) image URLs; send a data: URL instead")
        try:
            parts = urlsplit(url)
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError as exc:
            raise ImageURLError(f"image URL is malformed: {exc}") from exc
        if not host:
            raise ImageURLError("image URL has no host")
        if parts.username or parts.password:
            raise ImageURLError("image URLs with credentials are not fetched")
        trusted = host in config.http_host_allowlist
        if config.http_host_allowlist and not trusted:
            raise ImageURLError(f"host {host!r} is not on this server's image host allowlist")
        address = await self._public_address(host, port or (443 if parts.scheme == "https" else 80), trusted)
        # Connect to the checked address, keep the name for Host and TLS (no second DNS lookup).
        netloc = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{netloc}:{port}" if port else netloc).geturl()
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            return await asyncio.wait_for(self._download(pinned, headers, extensions), config.http_timeout_s)
        except TimeoutError:
            raise ImageURLError(f"fetching the image took over {config.http_timeout_s:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
            raise ImageURLError(f"cannot fetch the image: {type(exc).__name__}: {exc}") from None

    async def _public_address(self, host: str, port: int, trusted: bool) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise ImageURLError(f"cannot resolve image host {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise ImageURLError(f"image host {host!r} has no addresses")
        if not trusted:
            for address in addresses:
                if not _is_public(address):
                    raise ImageURLError(
                        f"image host {host!r} resolves to a non-public address; "  # which: not said
                        "only public hosts are fetched unless a host is allowlisted"
                    )
        return str(addresses[0])

    async def _download(self, url: str, headers: dict[str, str], extensions: dict[str, str]) -> bytes:
        limit = self.config.http_max_bytes
        async with httpx.AsyncClient(
            transport=self._transport,
            follow_redirects=False,
            timeout=self.config.http_timeout_s,
            trust_env=False,
        ) as client:
            request = client.build_request("GET", url, headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                if response.is_redirect:
                    raise ImageURLError(
                        "the image URL redirects; redirects are not followed, send the final URL"
                    )
                if response.status_code != 200:
                    raise ImageURLError(f"the image URL answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise ImageURLError(
                        f"the image is {int(declared):,} bytes, over the {limit:,}-byte limit"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ImageURLError(f"the image is over the {limit:,}-byte limit")
                return bytes(body)
            finally:
                await response.aclose()
