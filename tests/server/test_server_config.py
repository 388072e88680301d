"""ServerConfig: safe defaults, checked values, and construction from CLI flags."""

from __future__ import annotations

import argparse
import os

import pytest

from regrpo.errors import InputError
from regrpo.server.config import ServerConfig


def test_defaults_fetch_nothing_and_bound_the_queue():
    config = ServerConfig()
    assert config.image_roots == () and config.allow_http_images is False
    assert config.max_queue >= 0 and config.max_concurrency >= 1 and config.max_body_bytes > 0


def test_from_namespace_uses_the_flags_it_finds(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    args = argparse.Namespace(
        api_keys=["k1", "k2"],
        image_roots=[str(tmp_path / "link")],
        http_host_allowlist=["Images.Example.com", "[::1]"],
        max_concurrency=2,
        max_queue=None,  # not given: the default stays
        registry_dir=str(tmp_path / "adapters"),
        unrelated_flag=True,
    )
    config = ServerConfig.from_namespace(args)
    assert config.api_keys == ("k1", "k2") and config.max_concurrency == 2
    assert config.max_queue == ServerConfig().max_queue
    assert config.image_roots == ((tmp_path / "real").resolve(),)  # symlinks resolved once, up front
    assert config.http_host_allowlist == ("images.example.com", "::1")
    assert config.registry_dir == tmp_path / "adapters"


@pytest.mark.parametrize(
    "bad",
    [
        {"max_concurrency": 0},
        {"max_body_bytes": -1},
        {"max_json_values": 0},
        {"max_error_items": 0},
        {"max_queue": -1},
        {"api_keys": (" padded ",)},
        {"api_keys": ("",)},
        {"model_name": " "},
        {"image_roots": ("/no/such/folder",)},
    ],
)
def test_bad_values_are_input_errors(bad):
    with pytest.raises(InputError):
        ServerConfig(**bad)
