"""The uptodate checks of the pipeline tasks besides their stamps (tasks/stamp.py): an
output that must still be there, a cache that must still hold the locked RPMs, a check
report that must say the invariants held. Each returns the callable doit asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fexstack.errors import CheckError, FexstackError
from overlays.project import Project


def exists(path: Path) -> Callable[[], bool]:
    """An uptodate check: the output folder is still there."""
    return lambda: path.exists()


def cached_rpms(project: Project, name: str) -> Callable[[], bool]:
    """An uptodate check for fetch: every locked RPM is still in the cache (size matches).

    The fetch step re-hashes what it hands on; this only notices a cache that was wiped.
    """

    def check() -> bool:
        from fexstack.paths import cache_dir
        from overlays import lockfile
        from overlays.fetch import rpm_path

        try:
            lock = lockfile.read(project.lock_path(name))
        except FexstackError:
            return False
        cache = cache_dir()
        for pkg in lock.packages:
            path = rpm_path(cache, pkg.sha256)
            if not path.is_file() or path.stat().st_size != pkg.size:
                return False
        return True

    return check


def report_passed(report: Path) -> Callable[[], bool]:
    """An uptodate check for check: its report exists and says the invariants held.

    A failed check leaves its report for the user; it must never count as done.
    """

    def check() -> bool:
        from invariants.report import Report

        try:
            return not Report.read(report).failed
        except CheckError:  # missing or not a report: the check runs again
            return False

    return check
