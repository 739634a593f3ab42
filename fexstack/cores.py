"""How many worker processes a step may start."""

from __future__ import annotations

import multiprocessing
import os


def processes(limit: int, jobs: int) -> int:
    """Worker processes for ``jobs`` tasks: at most ``limit`` and the usable cores; 1 (work
    in this process) inside a daemonic process, which cannot have children."""
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(limit, len(os.sched_getaffinity(0)), jobs))
