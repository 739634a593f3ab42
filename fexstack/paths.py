"""Where fexstack keeps its caches and outputs."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """``$FEXSTACK_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/fexstack``."""
    explicit = os.environ.get("FEXSTACK_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "fexstack"
