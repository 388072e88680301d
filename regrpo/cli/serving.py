"""``regrpo serve`` (the agent as an OpenAI-compatible endpoint) and ``regrpo serve-model`` (the model).

Flags of ``serve`` map one to one onto :class:`~regrpo.server.config.ServerConfig` fields (``dest`` is
the field name, ``default=None`` means "the config's default"), so the defaults are written once,
in the config.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from regrpo.cli.common import agent_options, make_agent

__all__ = ["register"]


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from regrpo.server.app import run_agent_server
    from regrpo.server.config import ServerConfig

    config = ServerConfig.from_namespace(args)  # checked before the model loads: bad flags fail fast
    agent = make_agent(args, console)
    console.print(f"serving the agent as model {config.model_name!r} on http://{args.host}:{args.port}/v1")
    run_agent_server(agent, config, host=args.host, port=args.port)
    return 0


def _serve_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    add("--port", type=int, default=8000)
    add("--api-key", dest="api_keys", action="append", help="accepted Bearer key (repeatable)")
    add("--model-name", default=None, help="the model id clients send (default: regrpo-agent)")
    add("--max-body-bytes", type=int, default=None)
    add("--max-images-per-request", type=int, default=None)
    add("--max-image-pixels", type=int, default=None)
    add("--max-image-bytes", type=int, default=None)
    add("--image-root", dest="image_roots", action="append", help="folder whose images requests may name")
    add("--allow-http-images", action="store_true", default=None, help="fetch http(s) image URLs")
    add("--http-host", dest="http_host_allowlist", action="append", help="host allowed for http(s) images")
    add("--http-max-bytes", type=int, default=None)
    add("--http-timeout-s", type=float, default=None)
    add("--max-concurrency", type=int, default=None, help="episodes running at once")
    add("--max-queue", type=int, default=None, help="episodes waiting; beyond it: 429 + Retry-After")
    add("--request-timeout-s", type=float, default=None)
    add("--retry-after-s", type=int, default=None)
    add("--registry-dir", default=None, help="adapter registry folder (enables the adapter admin routes)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``serve-model`` to the ``regrpo`` parser."""
    serve = commands.add_parser(
        "serve", parents=[agent_options(6, 128)], help="serve the agent as an OpenAI-compatible endpoint"
    )
    _serve_options(serve)
    serve.set_defaults(handler=cmd_serve)
