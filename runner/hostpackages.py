"""Which host package provides each path a base declares in ``host_provides``.

On Asahi the host fallback is made of the aarch64 host's own packages (bubblewrap for
/usr/bin/bwrap, shared-mime-info for /usr/share/mime, ...): the host's rpmdb says which
package and version the app will meet there, and the run report records it next to the
files taken from the host. Where rpm is missing or the rpmdb does not know a path (a
Debian host, a file made by hand) the answer is None with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import command
from fexstack.errors import RunError

QUERY_FORMAT = "%{NEVRA}\\n"


@dataclass(frozen=True)
class HostOwner:
    """The host package owning ``path`` (NEVRA; None with ``note`` when none does)."""

    path: str
    package: str | None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "package": self.package, "note": self.note}


def query_argv(path: str, root: Path | None = None) -> list[str]:
    """``rpm -qf`` for one path (``root``: another rpmdb root, as ``rpm --root``)."""
    return ["rpm", *(["--root", str(root)] if root is not None else []), "-qf",
            "--queryformat", QUERY_FORMAT, path]  # fmt: skip


def owners(paths: Sequence[str], root: Path | None = None) -> list[HostOwner]:
    """The host package of each path, from the host's rpmdb (see the module docstring)."""
    if not paths:
        return []
    if command.which("rpm") is None:
        return [HostOwner(p, None, "rpm is not installed on this host") for p in paths]
    out = []
    for path in paths:
        proc = command.run(query_argv(path, root), check=False)
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        packages = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
        missing = f"error: file {path}: No such file or directory"
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error:") and ln != missing]
        if errors:  # e.g. an unreadable rpmdb, which rpm still answers "not owned" for
            raise RunError(
                f"rpm could not say which host package owns {path}: {errors[-1]}",
                "check the host's rpmdb (does rpm -qa work?), or drop the path from "
                "host_provides",
            )
        if proc.returncode == 0 and packages:
            out.append(HostOwner(path, ", ".join(packages)))
        elif "is not owned by any package" in stdout + stderr:
            out.append(HostOwner(path, None, "not owned by any package of the host's rpmdb"))
        elif "No such file or directory" in stderr:
            out.append(HostOwner(path, None, "the host has no such file"))
        else:
            raise RunError(
                f"rpm could not say which host package owns {path}: "
                f"{stderr or stdout or f'exit status {proc.returncode}'}",
                "check the host's rpmdb (rpm -qa works?), or drop the path from host_provides",
            )
    return out
