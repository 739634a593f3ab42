"""A base shaped like Fedora's FEX RootFS, made from the corpus's own RPMs.

:func:`install_tree` installs the base packages with ``rpm -i --root`` into a merged-/usr
tree (``bin``, ``sbin``, ``lib`` and ``lib64`` symlinks into ``usr``, as Fedora's
filesystem package lays them out), so Debian's /lib and /lib64 payload paths land under
/usr exactly as rpm writes through those symlinks. No scriptlets run. :func:`strip` then
removes what the kiwi profile's config.sh removes (shared/docs/FACTS.md, 2026 facts), and
:func:`ld_cache` writes /etc/ld.so.cache with the toolchain's ``ldconfig -r`` (root).
:func:`loader_dirs` asks the tree's own loader (``ld.so --help`` in a chroot) for its
system search path: those are the base's ``lib_dirs``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from fexstack import command
from tests.realworld.apt import CorpusError

USRMERGE_LINKS = (
    ("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")
)
LOADER = "/usr/lib64/ld-linux-x86-64.so.2"
DBPATH = "/var/lib/rpm"  # inside the tree; removed with /var, so the image has no rpmdb
KEEP_SHARE = ("wine", "mesa-demos", "drirc.d", "vulkan", "licenses")
KEEP_ETC = ("alternatives", "ld.so*", "*.kiwi")
KEEP_SBIN = ("ldconfig",)
KEEP_BIN = (
    "wine*", "vk*", "vulkan*", "clinfo", "eglinfo", "glxinfo", "ldd", "env", "sh", "bash",
    "ls", "stat", "dirname", "realpath", "readlink", "basename", "nproc", "uname", "arch",
)
REMOVED = ("usr/libexec", "var", "run", "tmp")
_SYSTEM_DIR = re.compile(r"^\s+(/\S*)\s+\(system search path\)\s*$")


def install_tree(tree: Path, rpms: Sequence[Path]) -> None:
    """``rpm -i`` the RPMs into a fresh merged-/usr ``tree`` (dependencies checked)."""
    tree.mkdir(parents=True)
    for name, target in USRMERGE_LINKS:
        (tree / target).mkdir(parents=True, exist_ok=True)
        (tree / name).symlink_to(target)
    command.run(
        [
            "rpm", "-i", "--root", str(tree), "--dbpath", DBPATH,
            "--noscripts", "--notriggers", "--nosignature", "--excludedocs",
            "--define", "_install_langs all",
            *map(str, rpms),
        ],
        env={"LC_ALL": "C.UTF-8"},
        hint="the base packages' RPMs do not install together: a converter bug or a "
        "package missing from the base seeds",
    )


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _keep_only(folder: Path, patterns: Iterable[str]) -> list[str]:
    removed = []
    if not folder.is_dir() or folder.is_symlink():
        return removed
    kept = tuple(patterns)
    for entry in sorted(os.listdir(folder)):
        if not any(fnmatch.fnmatchcase(entry, p) for p in kept):
            _remove(folder / entry)
            removed.append(entry)
    return removed


def strip(tree: Path) -> dict[str, list[str]]:
    """Remove what Fedora's FEX-RootFS config.sh removes; what went, per folder."""
    removed: dict[str, list[str]] = {}
    for rel in REMOVED:
        if (tree / rel).exists() or (tree / rel).is_symlink():
            _remove(tree / rel)
            removed[rel] = ["*"]
    for rel, keep in (
        ("usr/share", KEEP_SHARE),
        ("etc", KEEP_ETC),
        ("usr/sbin", KEEP_SBIN),
        ("usr/bin", KEEP_BIN),
    ):
        removed[rel] = _keep_only(tree / rel, keep)
    return removed


def ld_cache(tree: Path) -> None:
    """Write ``/etc/ld.so.conf`` (Fedora's, when no package shipped one) and the cache."""
    conf = tree / "etc" / "ld.so.conf"
    conf.parent.mkdir(exist_ok=True)
    if not conf.exists():
        conf.write_text("include /etc/ld.so.conf.d/*.conf\n")
    command.run(["ldconfig", "-X", "-r", str(tree)], hint="ldconfig -r needs root")
    if not (tree / "etc" / "ld.so.cache").is_file():
        raise CorpusError(f"ldconfig wrote no ld.so.cache in {tree}", None)


def loader_dirs(tree: Path) -> list[str]:
    """The system search path the tree's own loader prints (``ld.so --help``)."""
    if not (tree / LOADER.lstrip("/")).exists():
        raise CorpusError(f"the base has no {LOADER}", "libc6 must be in the base seeds")
    text = command.output(["chroot", str(tree), LOADER, "--help"], hint="chroot needs root")
    dirs = [m[1] for line in text.splitlines() if (m := _SYSTEM_DIR.match(line))]
    if not dirs:
        raise CorpusError(f"{LOADER} --help lists no system search path:\n{text}", None)
    return dirs


def kiwi_line(name: str, epoch: int | None, version: str, release: str, arch: str) -> str:
    """One kiwi ``.packages`` line (rpm query style: unset fields read ``(none)``)."""
    none = "(none)"
    return "|".join(
        [name, str(epoch) if epoch is not None else none, version, release, arch, none,
         "Debian-copyright"]
    )
