"""``regrpo serve`` (the agent as an OpenAI-compatible endpoint) and ``regrpo serve-model`` (the model)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``serve-model`` to the ``regrpo`` parser (wired when the server lands)."""
