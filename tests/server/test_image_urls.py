"""Image URL resolution: data: URLs, local files under roots only, http(s) behind an SSRF guard.

The http tests fetch from a real Starlette server on a loopback socket; the SSRF tests check that
non-public addresses are refused *before* any connection (the message says so).
"""

from __future__ import annotations

import asyncio
import os

import pytest
from server_helpers import data_url, png_bytes
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from regrpo.server.app import start_in_thread
from regrpo.server.config import ServerConfig
from regrpo.server.image_urls import ImageResolver, ImageURLError
from regrpo.tools import load_image


def resolve(config: ServerConfig, url: str):
    """The checked image's bytes, decoded as the agent decodes them."""
    return load_image(asyncio.run(ImageResolver(config).resolve(url)).data)


def refused(config: ServerConfig, url: str) -> str:
    with pytest.raises(ImageURLError) as error:
        resolve(config, url)
    return str(error.value)


# -- data: URLs -------------------------------------------------------------------------------------------


def test_data_url_decodes_to_rgb_pixels():
    image = resolve(ServerConfig(), data_url(png_bytes(7, 5)))
    assert image.shape == (5, 7, 3) and image.dtype.name == "uint8"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png,abc", "base64"),
        ("data:text/html;base64,PGgxPg==", "media type"),
        ("data:image/png;base64,@@@", "not valid base64"),
        ("data:image/png;base64", "no ','"),
        ("data:image/png;base64,", "holds no data"),
        ("data:image/png;base64,aGVsbG8=", "not a readable image"),
        ("gopher://x/y", "must be a data: URL"),
        ("", "non-empty"),
    ],
)
def test_bad_data_urls_are_refused_with_the_reason(url, message):
    assert message in refused(ServerConfig(), url)


def test_size_and_pixel_limits_are_checked_before_decoding():
    assert "byte limit" in refused(ServerConfig(max_image_bytes=100), data_url(png_bytes(40, 40)))
    # a 4000x4000 PNG of zeros is a few KB: only its header is read before the refusal
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4000)).save(buffer, "PNG")
    message = refused(ServerConfig(max_image_pixels=1_000_000), data_url(buffer.getvalue()))
    assert "4000x4000" in message and "1,000,000" in message


# -- local files -----------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path):
    """(config, root, outside): a root holding a.png, a secret PNG outside it, a symlink out of it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.png").write_bytes(png_bytes(6, 4))
    (outside / "secret.png").write_bytes(png_bytes(3, 3))
    os.symlink(outside / "secret.png", root / "link.png")
    os.symlink(outside, root / "dirlink")
    return ServerConfig(image_roots=(root,)), root, outside


def test_files_under_a_root_are_read_by_path_or_file_url(roots):
    config, root, _ = roots
    assert resolve(config, str(root / "sub" / "a.png")).shape == (4, 6, 3)
    assert resolve(config, f"file://{root}/sub/a.png").shape == (4, 6, 3)
    assert resolve(config, f"file://localhost{root}/sub/%61.png").shape == (4, 6, 3)


def test_traversal_symlinks_and_other_hosts_are_refused(roots):
    config, root, outside = roots
    attempts = [
        f"{root}/../outside/secret.png",
        f"{root}/sub/../../outside/secret.png",
        f"file://{root}/%2e%2e/outside/secret.png",
        f"{root}/link.png",  # a symlink inside the root pointing out of it
        f"{root}/dirlink/secret.png",
        "/etc/passwd",
        "file:///etc/passwd",
        f"file://{root}/../outside/secret.png",
    ]
    for url in attempts:
        assert "outside the folders" in refused(config, url), url
    assert "only local files" in refused(config, f"file://evil.example{root}/sub/a.png")
    assert "absolute path" in refused(config, "file:relative.png")
    message = refused(config, f"{root}/sub/missing.png")
    assert "cannot read" in message and "missing" not in message  # no hint of what exists
    assert "no image roots" in refused(ServerConfig(), str(root / "sub" / "a.png"))


# -- http(s) -------------------------------------------------------------------------------------------------


def image_server_app(never: asyncio.Event | None = None) -> Starlette:
    async def image(request):
        return Response(png_bytes(5, 5), media_type="image/png")

    async def big(request):
        return Response(b"\x89PNG" + b"0" * 50_000, media_type="image/png")

    async def endless(request):  # no Content-Length: the size limit must be enforced while reading
        async def chunks():
            for _ in range(1000):
                yield b"0" * 10_000

        return StreamingResponse(chunks(), media_type="image/png")

    async def stall(request):  # sends headers, then nothing: the fetch deadline must end it
        async def chunks():
            yield b"\x89PNG"
            await asyncio.Event().wait()

        return StreamingResponse(chunks(), media_type="image/png")

    async def redirect(request):
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def missing(request):
        return Response("nope", status_code=404)

    return Starlette(
        routes=[
            Route("/img.png", image),
            Route("/big.png", big),
            Route("/endless.png", endless),
            Route("/stall.png", stall),
            Route("/redirect.png", redirect),
            Route("/missing.png", missing),
        ]
    )


@pytest.fixture(scope="module")
def image_server():
    with start_in_thread(image_server_app()) as server:
        yield server


def test_http_is_off_by_default(image_server):
    assert "does not fetch http" in refused(ServerConfig(), f"{image_server.url}/img.png")


def test_an_allowlisted_internal_host_is_fetched_within_limits(image_server):
    config = ServerConfig(
        allow_http_images=True, http_host_allowlist=("127.0.0.1",), http_max_bytes=20_000, http_timeout_s=2
    )
    assert resolve(config, f"{image_server.url}/img.png").shape == (5, 5, 3)
    assert "50,004 bytes, over" in refused(config, f"{image_server.url}/big.png")  # Content-Length
    assert "over the 20,000-byte limit" in refused(config, f"{image_server.url}/endless.png")  # counted
    assert "redirects" in refused(config, f"{image_server.url}/redirect.png")
    assert "HTTP 404" in refused(config, f"{image_server.url}/missing.png")
    assert "took over 2 s" in refused(config, f"{image_server.url}/stall.png")
    port = image_server.port
    assert "not on this server's image host allowlist" in refused(config, f"http://localhost:{port}/img.png")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://2130706433/x.png",  # 127.0.0.1 as one decimal number
        "http://0x7f000001/x.png",  # ... as hex
        "http://017700000001/x.png",  # ... as octal
        "http://127.1/x.png",
        "http://0.0.0.0/x.png",
        "http://10.0.0.1/x.png",
        "http://192.168.1.1/x.png",
        "http://100.64.0.1/x.png",  # carrier-grade NAT
        "http://[::ffff:127.0.0.1]/x.png",  # IPv4-mapped IPv6
        "http://[fe80::1]/x.png",
        "http://224.0.0.1/x.png",
        "http://localhost/x.png",  # a DNS name that resolves to loopback
        "https://localhost:8443/x.png",
    ],
)
def test_ssrf_targets_are_refused_before_connecting(url):
    config = ServerConfig(allow_http_images=True)
    message = refused(config, url)
    assert "non-public address" in message or "cannot resolve" in message, message


def test_credentials_in_urls_and_hostless_urls_are_refused():
    config = ServerConfig(allow_http_images=True)
    assert "credentials" in refused(config, "http://user:pw@example.com/x.png")
    assert "no host" in refused(config, "http:///x.png")


def test_a_refusal_does_not_name_the_internal_address_a_host_resolved_to():
    message = refused(ServerConfig(allow_http_images=True), "http://localhost/x.png")
    assert "non-public address" in message
    assert "127.0.0.1" not in message and "::1" not in message


@pytest.mark.parametrize(
    "path", ["/x\x01.png", "/" + "a" * 70_000 + ".png"], ids=["control-char", "over-64k"]
)
def test_an_url_httpx_cannot_build_is_a_clear_refusal(image_server, path):
    """Issue 14, item 8: ``build_request`` raises ``httpx.InvalidURL``, not an ``HTTPError``: it was a 500."""
    config = ServerConfig(allow_http_images=True, http_host_allowlist=("127.0.0.1",))
    assert "cannot fetch the image" in refused(config, f"{image_server.url}{path}")
