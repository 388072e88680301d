"""The ``regrpo`` command line: ``demo``, ``run``, ``eval``, ``compare``, ``serve``, ``serve-model``,
``models``, ``export``, ``train``.

One module per group of subcommands, each a small function over the public API
(``episodes``: run/models/export; ``evaluation``: eval/compare/demo; ``serving``: serve/serve-model).
Bad input ends in a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from regrpo.cli import demo, episodes, evaluation, serving, training
from regrpo.errors import RegrpoError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regrpo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo.register(commands)
    evaluation.register(commands)
    episodes.register(commands)
    serving.register(commands)
    training.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``regrpo`` command; returns the exit status (2 for bad input, 130 when interrupted)."""
    args = _parser().parse_args(argv)
    to_stderr = bool(getattr(args, "json", False))
    stream = sys.stderr if to_stderr else sys.stdout
    # rich assumes 80 columns when output is piped (CI logs, `| tee`): tables would be cut to pieces
    console = Console(stderr=to_stderr, width=None if stream.isatty() else 140)
    try:
        return args.handler(args, console)
    except RegrpoError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (finished episodes are in the trace store)")
        return 130
