"""One Debian .deb to one RPM, 1:1, with rpmbuild.

The RPM holds the .deb's files at Debian's own paths (/lib, /bin, /usr/lib/x86_64-linux-gnu
...), byte for byte and with their modes (owner root): rpmbuild is pointed at the extracted
payload as its buildroot and runs no brp script, no strip and makes no build-id links.
Left out: /usr/share/{doc,man,info,locale} and directories that are not empty (a
directory in the .deb that holds nothing else is kept as ``%dir``). No scriptlets.

Metadata: Name is the Debian name; Epoch/Version/Release come from the Debian version
(:mod:`tests.realworld.debcontrol`); Requires from Depends and Pre-Depends; Provides from
Provides; plus rpm's own automatic ELF dependency generator (``elfdeps``, the same one
that gives Fedora's packages ``libgtk-3.so.0()(64bit)``) and no other generator (no
shebang, perl or python dependencies: Debian does not declare those as rpm does). The
package holding the loader also provides ``rtld(GNU_HASH)``, as Fedora's glibc does.

Reproducible: fixed SOURCE_DATE_EPOCH (build time and clamped mtimes) and build host;
``_rpmformat 4``; payload zstd level 3 (a 100 MB library costs seconds, not minutes).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fexstack import command
from tests.realworld.apt import CorpusError
from tests.realworld.debcontrol import Evr, parse_control, parse_version, relations

# Bump when the RPMs this module makes change (it is part of the corpus cache key).
CONVERTER_VERSION = 1
SOURCE_DATE_EPOCH = 1700000000
BUILDHOST = "fexstack-realworld"
PAYLOAD = "w3.zstdio"
DROPPED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
RPM_ARCH = {"amd64": "x86_64", "all": "noarch"}
LOADER_NAME = "ld-linux-x86-64.so.2"

PREAMBLE = f"""\
%global debug_package %{{nil}}
%define _build_id_links none
%global __os_install_post %{{nil}}
%global __arch_install_post %{{nil}}
%global __brp_check_rpaths %{{nil}}
%define __strip /bin/true
%define use_source_date_epoch_as_buildtime 1
%define build_mtime_policy clamp_to_source_date_epoch
%define source_date_epoch_from_changelog 0
%define _buildhost {BUILDHOST}
%define _binaries_in_noarch_packages_terminate_build 0
%define _missing_build_ids_terminate_build 0
%define _unpackaged_files_terminate_build 1
%define __spec_install_pre %{{___build_pre}}
"""


@dataclass(frozen=True)
class Converted:
    """What one conversion made."""

    name: str
    deb_version: str
    evr: Evr
    arch: str  # rpm arch
    rpm: str  # file name
    files: int  # entries in the RPM (files, symlinks, empty dirs)
    dropped: int  # entries left out (docs, man pages, locale)


def elf_only_fileattrs(folder: Path) -> Path:
    """A fileattrs folder holding only rpm's own ELF dependency generator."""
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(command.output(["rpm", "--eval", "%{_fileattrsdir}"]).strip()) / "elf.attr"
    if not source.is_file():
        raise CorpusError(f"rpm has no {source}", "install rpm (rpmbuild) or run through ./devroot")
    shutil.copyfile(source, folder / "elf.attr")
    return folder


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def _files_line(path: str) -> str:
    escaped = _escape(path)
    for char in "\\[]*?{}":
        escaped = escaped.replace(char, "\\" + char)
    return f'"{escaped}"'


def _dropped(rel: str) -> bool:
    return any(rel == d or rel.startswith(d + "/") for d in DROPPED)


def payload_entries(tree: Path) -> Iterator[tuple[str, str]]:
    """(kind, /path) of every file, symlink and empty directory under ``tree``, sorted."""
    for dirpath, dirnames, filenames in os.walk(tree):
        base = Path(dirpath)
        rel_dir = base.relative_to(tree).as_posix()
        if not dirnames and not filenames and rel_dir != ".":
            yield "dir", "/" + rel_dir
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            path = base / name
            kind = "symlink" if path.is_symlink() else "file"
            yield kind, "/" + path.relative_to(tree).as_posix()


def render_spec(control: dict[str, str], entries: list[tuple[str, str]], arch: str) -> str:
    """The spec for one package (its payload already in the buildroot)."""
    evr = parse_version(control["Version"])
    description = control.get("Description", control["Package"]).split("\n")
    lines = [PREAMBLE, f"Name: {control['Package']}"]
    if evr.epoch is not None:
        lines.append(f"Epoch: {evr.epoch}")
    lines += [f"Version: {evr.version}", f"Release: {evr.release}"]
    lines.append(f"Summary: {_escape(description[0]) or control['Package']}")
    lines.append("License: Debian-copyright")
    if control.get("Homepage"):
        lines.append(f"URL: {_escape(control['Homepage'])}")
    if arch == "noarch":
        lines.append("BuildArch: noarch")
    lines += ["AutoReq: yes", "AutoProv: yes"]
    requires = relations(control.get("Pre-Depends", "")) + relations(control.get("Depends", ""))
    provides = relations(control.get("Provides", ""))
    if any(path.endswith("/" + LOADER_NAME) for _, path in entries):
        provides.append("rtld(GNU_HASH)")
    lines += [f"Requires: {_escape(r)}" for r in dict.fromkeys(requires)]
    lines += [f"Provides: {_escape(p)}" for p in dict.fromkeys(provides)]
    body = [_escape(line) for line in description[1:] if line != "."]
    lines += ["", "%description", *(body or [control["Package"]])]
    lines += ["", "%install", "", "%files", "%defattr(-,root,root,-)"]
    for kind, path in entries:
        lines.append(("%dir " if kind == "dir" else "") + _files_line(path))
    return "\n".join(lines) + "\n"


def convert(deb: Path, out_dir: Path, work: Path, fileattrs: Path) -> Converted:
    """Convert ``deb`` into ``out_dir/<name>-<version>-<release>.<arch>.rpm``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    control = parse_control(command.output(["dpkg-deb", "-f", str(deb)]))
    deb_arch = control.get("Architecture", "")
    if deb_arch not in RPM_ARCH:
        raise CorpusError(f"{deb.name}: architecture {deb_arch!r} is not amd64 or all", None)
    arch = RPM_ARCH[deb_arch]
    root = work / "root"
    command.run(["dpkg-deb", "-x", str(deb), str(root)], hint=f"{deb} is not a valid .deb")
    all_entries = list(payload_entries(root))
    entries = [(k, p) for k, p in all_entries if not _dropped(p[1:])]
    for rel in DROPPED:
        if (root / rel).is_dir() and not (root / rel).is_symlink():
            shutil.rmtree(root / rel)
    spec = work / f"{control['Package']}.spec"
    spec.write_text(render_spec(control, entries, arch))
    rpms = work / "rpms"
    command.run(
        [
            "rpmbuild", "-bb", "--quiet", "--noclean",
            "--target", arch if arch != "noarch" else "x86_64",
            "--buildroot", str(root),
            "--define", "_rpmformat 4",
            "--define", f"_binary_payload {PAYLOAD}",
            "--define", f"_topdir {work / 'top'}",
            "--define", f"_tmppath {work / 'tmp'}",
            "--define", f"_rpmdir {rpms}",
            "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
            "--define", f"_fileattrsdir {fileattrs}",
            str(spec),
        ],
        env={"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C.UTF-8"},
        hint=f"rpmbuild failed on the spec made from {deb.name} ({spec})",
    )
    built = sorted(rpms.glob("*.rpm"))
    if len(built) != 1:
        raise CorpusError(f"{deb.name}: rpmbuild made {len(built)} RPMs, expected 1", None)
    target = out_dir / built[0].name
    os.replace(built[0], target)
    # createrepo_c records the file's mtime: a fixed one keeps repodata reproducible.
    os.utime(target, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    shutil.rmtree(work)
    return Converted(
        name=control["Package"],
        deb_version=control["Version"],
        evr=parse_version(control["Version"]),
        arch=arch,
        rpm=target.name,
        files=len(entries),
        dropped=len(all_entries) - len(entries),
    )
