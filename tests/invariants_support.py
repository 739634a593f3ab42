"""Helpers shared by the invariants, loader and view tests (no tests of its own)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fexstack import command
from invariants.view import Layer
from testkit.factory import Factory, Package, base_tree, glibc_package

_BASES: dict[tuple[str, bool], Path] = {}


def fedora_base(factory: Factory, root: Path, *, lib64_symlink: bool = False) -> Path:
    """A FEX-RootFS-like base with the real glibc (built once per session and shape)."""
    key = (str(root), lib64_symlink)
    if key not in _BASES:
        dest = root / ("base-lib64" if lib64_symlink else "base")
        base_tree(dest, [glibc_package()], lib64_symlink=lib64_symlink, factory=factory)
        _BASES[key] = dest
    return _BASES[key]


def stage(factory: Factory, packages: Iterable[Package], dest: Path) -> dict[str, str]:
    """Extract the packages' real RPMs into ``dest``; return owners {"/path": "name"}."""
    dest.mkdir(parents=True, exist_ok=True)
    owners: dict[str, str] = {}
    for pkg in packages:
        rpm = factory.rpm(pkg)
        payload = command.run(["rpm2cpio", rpm]).stdout
        command.run(["cpio", "-idmu", "--no-absolute-filenames", "--quiet"], input=payload,
                    cwd=dest)
        listing = command.output(["rpm", "-qp", "--qf", "[%{FILENAMES}\\n]", rpm])
        name = command.output(["rpm", "-qp", "--qf", "%{NAME}", rpm]).strip()
        for line in listing.splitlines():
            if line.startswith("/"):
                owners[line] = name
    return owners


def base_layer(path: Path) -> Layer:
    return Layer("base", path, "base")
