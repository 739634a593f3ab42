"""A synthetic rpmdb that makes a base's packages count as installed for libdnf5.

libdnf5 has no call that adds packages to its installed set (@System) directly: it reads
the installed set from the rpmdb of its installroot. A base package list (kiwi
``.packages`` or a base stack's lock) has only NEVRAs, so fexstack writes one header-only
package per base package (same name, epoch, version, release and arch, no files, the
Provides copied from the repositories' metadata so that sonames such as
``libc.so.6()(64bit)`` resolve against the base) and records them all with one
``rpm --dbpath DB -i --justdb`` call. ``--dbpath`` rather than ``--root``: rpm chroots
into a ``--root`` even for ``--justdb``, which needs root privileges.

The finished tree is cached under ``cache_dir()/dnf/base-rpmdb/<key>`` where the key is
the digest of the generated spec files, i.e. of exactly what went into the rpmdb (the
base list and the metadata Provides). Each resolution copies it into its own installroot.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fexstack import atomic, command, paths
from fexstack.errors import LockError

RECIPE = 1
SPEC_NAME = "fexstack-base-synthetic"
_UNSAFE = frozenset(",\n\r\t{}")


@dataclass(frozen=True)
class Header:
    """One synthetic installed package: a base package and what it provides."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    provides: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # paths other packages may require (/usr/bin/sh)

    @property
    def nevra(self) -> str:
        prefix = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{prefix}{self.version}-{self.release}.{self.arch}"


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def _usable(dep: str) -> bool:
    """Whether ``dep`` can be written as one ``Provides:`` line of a spec file."""
    if not dep or _UNSAFE & set(dep):
        return False
    parts = dep.split(" ")
    return len(parts) == 1 or (len(parts) == 3 and parts[1] in ("=", "<", ">", "<=", ">="))


def render(target: str, headers: Sequence[Header]) -> str:
    """A spec file whose subpackages are ``headers`` (each name once), built for ``target``."""
    lines = [
        "%global debug_package %{nil}",
        "%global __os_install_post %{nil}",
        f"Name: {SPEC_NAME}",
        "Version: 1",
        "Release: 1",
        "Summary: packages of a fexstack base, recorded as installed",
        "License: MIT",
        "AutoReqProv: no",
        "%description",
        "Header-only packages standing for the packages of a base image.",
    ]
    for h in sorted(headers, key=lambda h: h.name):
        lines += [
            "",
            f"%package -n {_escape(h.name)}",
            f"Version: {_escape(h.version)}",
            f"Release: {_escape(h.release)}",
        ]
        if h.epoch:
            lines.append(f"Epoch: {h.epoch}")
        if h.arch == "noarch" and target != "noarch":
            lines.append("BuildArch: noarch")
        lines += ["Summary: base package", "AutoReqProv: no"]
        for dep in sorted(set(h.provides) | set(h.files)):
            if _usable(dep):
                lines.append(f"Provides: {_escape(dep)}")
        lines += [
            f"%description -n {_escape(h.name)}",
            "Installed in the base image.",
            f"%files -n {_escape(h.name)}",
        ]
    return "\n".join(lines) + "\n"


def _groups(headers: Sequence[Header], default_arch: str) -> list[tuple[str, list[Header]]]:
    """Headers split into spec files: one target arch each, every name at most once."""
    groups: dict[tuple[str, int], list[Header]] = {}
    seen: dict[tuple[str, str], int] = {}
    for h in sorted(headers, key=lambda h: (h.name, h.arch, h.epoch, h.version, h.release)):
        target = default_arch if h.arch == "noarch" else h.arch
        index = seen.get((target, h.name), 0)
        seen[(target, h.name)] = index + 1
        groups.setdefault((target, index), []).append(h)
    return [(target, members) for (target, _), members in sorted(groups.items())]


def specs(headers: Sequence[Header], default_arch: str) -> list[tuple[str, str]]:
    """``(target arch, spec text)`` for every spec file the base needs."""
    return [(target, render(target, members)) for target, members in _groups(headers, default_arch)]


def key(headers: Sequence[Header], default_arch: str) -> str:
    """The cache key of the rpmdb made from ``headers``."""
    digest = hashlib.sha256(f"fexstack base rpmdb recipe {RECIPE}\n".encode())
    for target, text in specs(headers, default_arch):
        digest.update(f"--- {target}\n".encode())
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:32]


def dbpath() -> str:
    """rpm's database path inside a root (``%_dbpath``), as librpm (and libdnf5) use it."""
    path = command.output(["rpm", "--eval", "%{_dbpath}"]).strip()
    if not path.startswith("/"):
        raise LockError(
            f"rpm reports the database path {path!r}, not an absolute path",
            "check the rpm installation (rpm --eval %_dbpath)",
        )
    return path


def _build(headers: Sequence[Header], default_arch: str, root: Path, work: Path) -> None:
    rpms: list[Path] = []
    for number, (target, text) in enumerate(specs(headers, default_arch)):
        top = work / f"spec{number}"
        (top / "SPECS").mkdir(parents=True)
        spec = top / "SPECS" / f"{SPEC_NAME}.spec"
        spec.write_text(text, encoding="utf-8")
        command.run(
            [
                "rpmbuild",
                "-bb",
                "--quiet",
                "--target",
                target,
                "--define",
                f"_topdir {top}",
                "--define",
                "_rpmformat 4",
                "--define",
                "_build_id_links none",
                spec,
            ],
            hint="rpmbuild (rpm-build) is needed to record the base's packages",
        )
        rpms += sorted((top / "RPMS").glob("*/*.rpm"))
    db = Path(str(root) + dbpath())
    db.mkdir(parents=True, exist_ok=True)
    command.run(["rpm", "--dbpath", db, "--initdb"])
    if rpms:
        command.run(
            [
                "rpm",
                "--dbpath",
                db,
                "-i",
                "--justdb",
                "--nodeps",
                "--noscripts",
                "--notriggers",
                "--ignorearch",
                "--ignoreos",
                "--ignoresize",
                *rpms,
            ],
            hint="rpm could not record the base's packages in a scratch rpmdb",
        )


def cached_root(
    headers: Sequence[Header],
    default_arch: str,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """A directory holding the rpmdb of ``headers`` (built once per key, then reused)."""
    target = paths.cache_dir() / "dnf" / "base-rpmdb" / key(headers, default_arch)
    if (target / ".complete").exists():
        return target
    if progress is not None:
        progress(f"recording {len(headers)} base packages in a scratch rpmdb")
    with atomic.temp_dir(target) as tmp:
        root = tmp / "root"
        work = Path(tempfile.mkdtemp(prefix="build.", dir=tmp))
        _build(headers, default_arch, root, work)
        shutil.rmtree(work)
        for item in root.iterdir():
            item.rename(tmp / item.name)
        root.rmdir()
        (tmp / ".complete").write_text("\n".join(h.nevra for h in headers) + "\n")
    return target


def install(
    headers: Sequence[Header],
    installroot: Path,
    default_arch: str,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Give ``installroot`` an rpmdb in which ``headers`` are the installed packages."""
    source = cached_root(headers, default_arch, progress)
    for item in source.iterdir():
        if item.name == ".complete":
            continue
        if item.is_dir():
            shutil.copytree(item, installroot / item.name, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(item, installroot / item.name)
