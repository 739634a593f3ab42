"""The host's packages: does the host itself provide a path a deps overlay left out?

FEX opens a path in its RootFS first and falls back to the host's, so an x86 process that
runs ``/usr/bin/bwrap`` gets the host's native one when no overlay carries it. Where the
host's rpm database is readable (Fedora), ``rpm -q --whatprovides PATH`` says whether the
host has the same path; elsewhere (no rpm, or an rpm with an empty database, as on a
Debian build machine) the answer is "host unknown".
"""

from __future__ import annotations

from collections.abc import Sequence

from fexstack import command

UNKNOWN = "host unknown"
ABSENT = "not on the host"


def _rpm(dbpath: str | None) -> list[str]:
    return ["rpm", *(["--dbpath", dbpath] if dbpath else [])]


def readable(dbpath: str | None = None) -> bool:
    """Whether the host has rpm and a database holding packages."""
    if command.which("rpm") is None:
        return False
    probe = command.run([*_rpm(dbpath), "-qa", "--qf", "."], check=False)
    return probe.returncode == 0 and bool(probe.stdout.strip())


def providers(paths: Sequence[str], dbpath: str | None = None) -> dict[str, str]:
    """Per path: the host package providing it (name-version-release.arch), ABSENT or
    UNKNOWN. ``dbpath`` queries another rpm database (tests)."""
    if not paths:
        return {}
    if not readable(dbpath):
        return {path: UNKNOWN for path in paths}
    out: dict[str, str] = {}
    for path in paths:
        proc = command.run(
            [*_rpm(dbpath), "-q", "--whatprovides", "--qf", "%{NEVRA}\\n", path], check=False
        )
        names = proc.stdout.decode("utf-8", "replace").split()
        out[path] = ", ".join(sorted(names)) if proc.returncode == 0 and names else ABSENT
    return out
