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
    """An uptodate check for fetch: every RPM it fetched is still in the cache (size matches).

    The fetch step re-hashes what it hands on; this only notices a cache that was wiped.
    It reads the fetch record, not the lock: a lock that changed since is a changed
    file_dep of the step, which runs again anyway, and a record is a JSON list where the
    lock of 1,000 packages is TOML that takes a tenth of a second to parse on every no-op.
    """

    def check() -> bool:
        from fexstack.paths import cache_dir
        from overlays.fetch import fetched, rpm_path

        try:
            rpms = fetched(project.record(name, "fetch"))
        except FexstackError:
            return False
        cache = cache_dir()
        for rpm in rpms:
            path = rpm_path(cache, rpm.sha256)
            if not path.is_file() or path.stat().st_size != rpm.size:
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
