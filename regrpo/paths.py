"""Where regrpo keeps files by default: a cache (de-quantised models) and a data folder (traces).

Both follow the XDG base-directory convention (``XDG_CACHE_HOME``, ``XDG_DATA_HOME``), the only
environment variables regrpo reads; every API that uses these folders also takes an explicit path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "default_trace_path"]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/regrpo``, else ``~/.cache/regrpo``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "regrpo"


def default_trace_path() -> Path:
    """``$XDG_DATA_HOME/regrpo/traces.sqlite``, else ``~/.local/share/regrpo/traces.sqlite``."""
    root = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(root) / "regrpo" / "traces.sqlite"
