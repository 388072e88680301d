"""``regrpo serve`` (the agent as an OpenAI-compatible endpoint) and ``regrpo serve-model`` (the model).

Flags of ``serve`` map one to one onto :class:`~regrpo.server.config.ServerConfig` fields (``dest`` is
the field name, ``default=None`` means "the config's default"), so the defaults are written once,
in the config.

Both take ``--adapter PATH`` / ``--no-adapter`` (default: the shipped warm start with the in-process
default model). ``serve`` runs its agent with it; ``serve-model`` serves it as a LoRA module under its
folder's name (``"model": "warm-start"``), as ``vllm serve --lora-modules`` would, next to the base
model under the base model's name.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from regrpo.agent.adapters import adapter_folder, adapter_name
from regrpo.cli.common import (
    adapter_options,
    agent_options,
    chosen_adapter,
    confidence_trigger_option,
    make_agent,
    make_policy,
    model_options,
    tool_options,
    verifier_options,
)
from regrpo.server.limits import ConnectionLimits
from regrpo.server.responses import MAX_ERROR_ITEMS, MAX_JSON_VALUES

__all__ = ["register"]


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from regrpo.server.app import run_agent_server
    from regrpo.server.config import ServerConfig

    config = ServerConfig.from_namespace(args)  # checked before the model loads: bad flags fail fast
    agent = make_agent(args, console)
    adapter = agent.policy.active_adapter or "none"
    console.print(
        f"serving the agent (adapter {adapter}) as model {config.model_name!r} on "
        f"http://{args.host}:{args.port}/v1"
    )
    run_agent_server(agent, config, host=args.host, port=args.port, limits=_limits(args))
    return 0


def _limits(args: argparse.Namespace) -> ConnectionLimits:
    return ConnectionLimits(max_connections=args.max_connections, head_timeout_s=args.head_timeout_s)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    defaults = ConnectionLimits()
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="connections before new requests get a 503 at once",
    )
    parser.add_argument(
        "--head-timeout-s",
        type=float,
        default=defaults.head_timeout_s,
        help="seconds a request head may take to arrive before the connection is closed",
    )


def _serve_options(parser: argparse.ArgumentParser) -> None:
    _connection_options(parser)
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    add("--port", type=int, default=8000)
    add("--api-key", dest="api_keys", action="append", help="accepted Bearer key (repeatable)")
    add(
        "--admin-key",
        dest="admin_keys",
        action="append",
        help="Bearer key for the adapter admin routes, which then take no other key (repeatable)",
    )
    add("--model-name", default=None, help="the model id clients send (default: regrpo-agent)")
    add("--max-body-bytes", type=int, default=None)
    add("--max-json-values", type=int, default=None, help="most JSON values a body may hold (100,000)")
    add("--max-error-items", type=int, default=None, help="most errors a validation 400 lists (20)")
    add("--body-timeout-s", type=float, default=None, help="seconds a request body may take (then 408)")
    add("--max-images-per-request", type=int, default=None)
    add("--max-image-pixels", type=int, default=None)
    add("--max-request-pixels", type=int, default=None, help="pixels of all of a request's images together")
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


def cmd_serve_model(args: argparse.Namespace, console: Console) -> int:
    from regrpo.server.model_server import run_model_server

    adapter = chosen_adapter(args)  # checked before the model loads
    folder = adapter_folder(adapter) if adapter is not None else None
    lora_modules = {adapter_name(folder): str(folder)} if folder is not None else {}
    policy = make_policy(args, console)
    served = "".join(f", adapter {name!r} ({path})" for name, path in lora_modules.items())
    console.print(
        f"serving {policy.model_name!r}{served} (vLLM's OpenAI dialect) on http://{args.host}:{args.port}/v1"
    )
    run_model_server(
        policy,  # type: ignore[arg-type]  # serve-model has no --base-url: a LocalPolicy or VisionPolicy
        args.host,
        args.port,
        served_model_name=args.served_model_name,
        api_key=args.api_key,
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
        max_model_len=args.max_model_len,
        lora_modules=lora_modules,
        max_n=args.max_n,
        max_body_bytes=args.max_body_bytes,
        max_json_values=args.max_json_values,
        max_error_items=args.max_error_items,
        lora_roots=args.lora_roots or (),
        limits=_limits(args),
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``serve-model`` to the ``regrpo`` parser."""
    serve = commands.add_parser(
        "serve",
        parents=[agent_options(6, 128), adapter_options(), tool_options(), verifier_options()],
        help="serve the agent as an OpenAI-compatible endpoint",
    )
    confidence_trigger_option(serve)
    _serve_options(serve)
    serve.set_defaults(handler=cmd_serve)

    model = commands.add_parser(
        "serve-model",
        parents=[
            model_options(),
            adapter_options("to serve under its folder's name, as vLLM's --lora-modules"),
        ],
        help="serve the local model with vLLM's OpenAI-compatible API (chat, models, LoRA load/unload); "
        "a vision model folder takes image_url parts (data: URLs)",
    )
    model.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    model.add_argument("--port", type=int, default=8000)
    model.add_argument("--served-model-name", help="the name clients send (default: the model's name)")
    model.add_argument("--api-key", help="require this Bearer key on /v1 routes (as vLLM's --api-key)")
    model.add_argument("--max-loras", type=int, default=4, help="adapters kept loaded at once")
    model.add_argument("--max-lora-rank", type=int, default=64)
    model.add_argument("--max-model-len", type=int, help="context length to report and enforce")
    model.add_argument("--max-n", type=int, default=16, help="most samples (n) one request may ask for")
    model.add_argument("--max-body-bytes", type=int, default=20 * 1024 * 1024, help="largest request body")
    model.add_argument(
        "--max-json-values", type=int, default=MAX_JSON_VALUES, help="most JSON values a body may hold"
    )
    model.add_argument(
        "--max-error-items", type=int, default=MAX_ERROR_ITEMS, help="most errors a validation 400 lists"
    )
    model.add_argument(
        "--lora-root",
        dest="lora_roots",
        action="append",
        help="folder load_lora_adapter may load from (repeatable; default: any local folder, as vLLM)",
    )
    _connection_options(model)
    model.set_defaults(handler=cmd_serve_model)
