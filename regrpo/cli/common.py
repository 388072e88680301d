"""What the ``regrpo`` subcommands share: option groups, building a policy and an agent, step lines.

The heavy imports (torch, transformers) happen inside the functions that need a model, so
``regrpo models`` or ``regrpo --help`` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from regrpo.agent.adapters import WARM_START, WARM_START_MODEL, AdapterChoice, adapter_folder
from regrpo.agent.model_files import DEFAULT_MODEL
from regrpo.paths import default_cache_dir, default_trace_path
from regrpo.traces import Answer, Step, ToolCall, open_store

if TYPE_CHECKING:
    from regrpo.agent.loop import Agent
    from regrpo.agent.policy import Policy
    from regrpo.tools import Tool
    from regrpo.verifier import Verifier

__all__ = [
    "adapter_options",
    "agent_options",
    "chosen_adapter",
    "chosen_tools",
    "confidence_trigger_option",
    "describe_step",
    "make_agent",
    "make_policy",
    "model_options",
    "store_options",
    "tool_options",
]


def store_options() -> argparse.ArgumentParser:
    """``--store`` and ``--cache-dir``: a parent parser for every command that touches them."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--store",
        default=str(default_trace_path()),
        help="trace store: a SQLite file, or a postgresql://user:password@host/db URL",
    )
    options.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="model cache folder")
    return options


def model_options() -> argparse.ArgumentParser:
    """``--model`` (plus the store options): the in-process model a command loads."""
    options = argparse.ArgumentParser(add_help=False, parents=[store_options()])
    options.add_argument("--model", default=DEFAULT_MODEL, help="offline model name or HF folder")
    options.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="weights of the in-process model (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    options.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="most sequences concurrent calls to the in-process model share a forward pass with (1: one "
        "call at a time)",
    )
    return options


def agent_options(max_steps: int, max_new_tokens: int) -> argparse.ArgumentParser:
    """Model, engine and budget options, with per-command defaults.

    A fresh parent per command: argparse shares a parent's actions, so ``set_defaults`` on one
    command would change another's defaults.
    """
    options = argparse.ArgumentParser(add_help=False, parents=[model_options()])
    options.add_argument("--max-steps", type=int, default=max_steps)
    options.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    options.add_argument(
        "--base-url",
        action="append",
        help="use an OpenAI-compatible server (regrpo serve-model, vLLM) instead of the in-process model; "
        "--model is then the served model's name. Repeat it for data-parallel replicas: requests are "
        "spread over them and an adapter is pushed to, and verified on, every one before it is used",
    )
    options.add_argument("--remote-api-key", help="Bearer key for --base-url")
    options.add_argument(
        "--remote-timeout-s",
        type=float,
        default=60.0,
        help="seconds one model call to --base-url may take (a busy CPU server needs more)",
    )
    options.add_argument("--vllm", action="store_true", help="--base-url is vLLM: hot-swap adapters there")
    options.add_argument(
        "--remote-images",
        action="store_true",
        help="the --base-url model takes images (a multimodal vLLM): show it the episode's images as "
        "image_url parts (an in-process --model folder with a vision config is detected by itself)",
    )
    return options


def adapter_options(use: str = "to run") -> argparse.ArgumentParser:
    """``--adapter PATH`` or ``--no-adapter``: what every command that runs the model runs it with.

    ``use`` finishes the help's "a PEFT LoRA adapter folder ..." (``serve-model`` serves it by name).
    """
    options = argparse.ArgumentParser(add_help=False)
    choice = options.add_mutually_exclusive_group()
    choice.add_argument(
        "--adapter",
        type=Path,
        metavar="PATH",
        help=f"a PEFT LoRA adapter folder {use} (default: the shipped RoT warm start, with the "
        f"in-process {WARM_START_MODEL}; none with --base-url or another --model)",
    )
    choice.add_argument("--no-adapter", action="store_true", help="no adapter: the base model only")
    return options


def confidence_trigger_option(parser: argparse.ArgumentParser) -> None:
    """``--confidence-trigger``: the opt-in low-confidence trigger (``Agent(confidence_trigger=True)``)."""
    parser.add_argument(
        "--confidence-trigger",
        action="store_true",
        help="also ask for a reflection after low-confidence successful steps (off: the training data never "
        "teaches it)",
    )


def tool_options() -> argparse.ArgumentParser:
    """``--tool MODULE:NAME`` (repeatable) and ``--no-builtin-tools``: the agent's toolbox.

    ``serve`` runs the agent with them; ``eval``, ``train data``, ``train regrpo`` and ``trainer``
    need the same ones, since they replay and execute calls with the tools the agent ran with.
    """
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--tool",
        dest="tools",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="a tool of your own by import path: a Tool, a typed function or a list of them (repeatable; "
        "added after the built-in tools)",
    )
    options.add_argument(
        "--no-builtin-tools", action="store_true", help="only the --tool tools, not the built-in ones"
    )
    return options


def verifier_options() -> argparse.ArgumentParser:
    """``--verifier MODULE:NAME``: the app's verifier, scoring every episode's answer (its feedback)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--verifier",
        metavar="MODULE:NAME",
        help="a function (task, answer) -> float in [0, 1] by import path: it scores every episode's "
        "answer, recorded as the episode's feedback, which the trainer learns from",
    )
    return options


def chosen_verifier(args: argparse.Namespace) -> Verifier | None:
    """The function ``--verifier`` names (``None`` without one), or an :class:`InputError` saying why not."""
    from regrpo.verifier import import_verifier

    name = getattr(args, "verifier", None)
    return import_verifier(name) if name is not None else None


def chosen_tools(args: argparse.Namespace) -> list[Tool] | None:
    """The toolbox :func:`tool_options` chose; ``None`` for the built-in one (each command's default)."""
    from regrpo.tools.importing import toolbox_from_names

    return toolbox_from_names(args.tools, builtin=not args.no_builtin_tools)


def chosen_adapter(args: argparse.Namespace) -> AdapterChoice:
    """The adapter :func:`adapter_options` chose: ``--adapter``, ``None`` (``--no-adapter``) or the default.

    The default is the shipped warm start where it fits, the in-process model it was trained on;
    a remote server (``--base-url``) or another ``--model`` runs as it is. A local folder is checked
    here, so a bad ``--adapter`` fails before the model loads rather than after.
    """
    remote = bool(getattr(args, "base_url", None))
    if args.no_adapter:
        return None
    if args.adapter is None:
        return WARM_START if not remote and str(args.model).lower() == WARM_START_MODEL.lower() else None
    if not remote:
        adapter_folder(args.adapter)
    return Path(args.adapter)


def make_policy(args: argparse.Namespace, console: Console) -> Policy:
    """The engine the options ask for: a remote OpenAI-compatible server, or the local model (a
    ``VisionPolicy`` for a vision model folder, else a ``LocalPolicy``)."""
    if getattr(args, "base_url", None):
        from regrpo.agent.openai_policy import OpenAIPolicy

        key, vllm, timeout_s = args.remote_api_key, args.vllm, args.remote_timeout_s
        images = bool(getattr(args, "remote_images", False))
        replicas = [
            OpenAIPolicy(url, args.model, api_key=key, vllm=vllm, timeout_s=timeout_s, images=images)
            for url in args.base_url
        ]
        if len(replicas) == 1:
            return replicas[0]
        from regrpo.agent.replicas import ReplicaPolicy

        return ReplicaPolicy(replicas)
    from transformers.utils import logging as hf_logging

    from regrpo.agent.local import LocalPolicy
    from regrpo.agent.model_files import is_cached, is_vision_model_folder

    hf_logging.disable_progress_bar()  # our own output is enough
    if is_vision_model_folder(args.model):
        from regrpo.agent.vision import VisionPolicy

        return VisionPolicy(args.model, dtype=args.dtype)
    if not is_cached(args.model, args.cache_dir):
        console.print(f"[dim]first use of {args.model}: de-quantising its weights once (about 40 s)...[/]")
    return LocalPolicy(
        args.model, cache_dir=args.cache_dir, dtype=args.dtype, max_batch_size=args.max_batch_size
    )


def make_agent(args: argparse.Namespace, console: Console) -> Agent:
    """An agent over :func:`make_policy` with the command's adapter, budgets, trigger and trace store."""
    from regrpo.agent import Agent

    adapter = chosen_adapter(args)  # before the model loads: a bad --adapter, --tool or --verifier fails fast
    tools = chosen_tools(args)
    verifier = chosen_verifier(args)
    return Agent(
        make_policy(args, console),
        tools=tools,
        store=open_store(args.store),
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        confidence_trigger=args.confidence_trigger,
        adapter=adapter,
        verifier=verifier,
    )


def describe_step(step: Step) -> str:
    """One step as rich markup: the action, any reflection, what the tool returned, the time taken."""
    action = step.action
    if isinstance(action, Answer):
        what = f"[bold green]answer[/] {action.text!r}"
    elif isinstance(action, ToolCall):
        what = f"[cyan]{action.name}[/] {json.dumps(action.arguments)}"
    else:
        what = f"[red]unparseable[/] ({action.reason})"
    line = f"step {step.index}  {what}"
    if step.reflection is not None:
        r = step.reflection
        line = f"step {step.index}  [magenta]reflection[/] {r.error_type}: {r.fix_plan!r}\n        {what}"
    elif step.reflection_requested:
        line = (
            f"step {step.index}  [magenta]no valid reflection[/] ({step.reflection_problem})\n        {what}"
        )
    obs = step.observation
    if obs is not None:
        shown = obs.error_message if not obs.ok else json.dumps(obs.output)
        line += f"\n        → {'[green]ok[/]' if obs.ok else f'[red]{obs.error_type}[/]'} {shown[:160]}"
    return line + f"  [dim]({step.timings.total_s:.1f} s)[/]"
