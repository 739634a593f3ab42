"""The rpmbuild spec file of a fixture :class:`Package`.

The payload is laid out beforehand (:func:`lay_out`) and %install copies it; %files names
every entry explicitly with its owner and mode, so setuid bits and symlinks survive.
Macros switch off everything that would alter the files (stripping, build-id links,
rpath checks, debug packages) and pin the build time, host and mtimes for repeatable
output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from testkit.factory.spec import (
    Content,
    Dir,
    Elf,
    Executable,
    FactoryError,
    File,
    Library,
    Package,
    Symlink,
)

SOURCE_DATE_EPOCH = 1700000000

PREAMBLE = """\
%global debug_package %{nil}
%define _build_id_links none
%global __os_install_post %{nil}
%global __arch_install_post %{nil}
%global __brp_check_rpaths %{nil}
%define __strip /bin/true
%define use_source_date_epoch_as_buildtime 1
%define build_mtime_policy clamp_to_source_date_epoch
%define source_date_epoch_from_changelog 0
%define _buildhost fexstack-factory
%define _binaries_in_noarch_packages_terminate_build 0
%define _missing_build_ids_terminate_build 0
%define _unpackaged_files_terminate_build 1
"""


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def _files_path(path: str) -> str:
    escaped = _escape(path)
    return f'"{escaped}"' if any(c.isspace() for c in path) else escaped


def _entry_mode(item: Content) -> int:
    if isinstance(item, (File, Dir)):
        return item.mode
    if isinstance(item, Library) and item.machine == "bpf":
        return 0o644
    return 0o755


def render(pkg: Package, tree: Path) -> str:
    """The spec text for ``pkg`` whose payload was laid out in ``tree``."""
    lines = [PREAMBLE, f"%define fexstack_tree {tree}"]
    lines.append(f"Name: {pkg.name}")
    if pkg.epoch:
        lines.append(f"Epoch: {pkg.epoch}")
    lines += [f"Version: {pkg.version}", f"Release: {pkg.release}"]
    lines.append(f"Summary: {_escape(pkg.summary or f'fexstack fixture package {pkg.name}')}")
    lines.append(f"License: {_escape(pkg.license)}")
    if pkg.arch == "noarch":
        lines.append("BuildArch: noarch")
    autoprov = pkg.autoreq if pkg.autoprov is None else pkg.autoprov
    lines.append(f"AutoReq: {'yes' if pkg.autoreq else 'no'}")
    lines.append(f"AutoProv: {'yes' if autoprov else 'no'}")
    for tag, values in (
        ("Requires", pkg.requires),
        ("Provides", pkg.provides),
        ("Recommends", pkg.recommends),
        ("Conflicts", pkg.conflicts),
        ("Obsoletes", pkg.obsoletes),
        ("Supplements", pkg.supplements),
    ):
        lines += [f"{tag}: {_escape(v)}" for v in values]
    lines += ["", "%description", f"Fixture package {pkg.name} built by the fexstack test factory."]
    lines += ["", "%install", "cp -a %{fexstack_tree}/. %{buildroot}/", "", "%files"]
    for item in pkg.contents:
        if isinstance(item, Symlink):
            lines.append(_files_path(item.path))
        elif isinstance(item, Dir):
            lines.append(f"%dir %attr({item.mode:04o},root,root) {_files_path(item.path)}")
        else:
            mode = _entry_mode(item)
            lines.append(f"%attr({mode:04o},root,root) {_files_path(_path(item))}")
            if isinstance(item, Library) and item.soname_link:
                lines.append(_files_path(item.soname_link))
    return "\n".join(lines) + "\n"


def _path(item: Content) -> str:
    if isinstance(item, (Library, Executable)):
        return item.install_path
    return item.path


def lay_out(pkg: Package, tree: Path, build_elf: Callable[[Elf], Path]) -> None:
    """Write ``pkg``'s payload into ``tree`` (``build_elf`` supplies compiled ELF files)."""
    for item in pkg.contents:
        target = tree / _path(item).lstrip("/")
        if isinstance(item, Dir):
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, item.mode & 0o7777)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            raise FactoryError(f"package {pkg.name}: {_path(item)} is listed twice", None)
        if isinstance(item, Symlink):
            target.symlink_to(item.target)
            continue
        if isinstance(item, File):
            target.write_bytes(item.content)
        else:
            target.write_bytes(build_elf(item).read_bytes())
            if isinstance(item, Library) and item.soname_link:
                link = tree / item.soname_link.lstrip("/")
                link.symlink_to(os.path.basename(item.install_path))
        os.chmod(target, _entry_mode(item) & 0o7777)
