"""Sanitize steps: make a modified copy of an AppDir, never touching the cached original.

The one step so far, ``strip-gnu-property``, removes the ``.note.gnu.property`` section
(x86 ISA level and CET properties) from every x86_64 ELF file that has one, with
``objcopy --remove-section``. Untouched files are hardlinked (nothing writes to them);
each modified file is a new file. The evidence lists every modified file with its sha256
before and after and confirms, by reading it back, that no GNU property note remains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

import fexstack
from fexstack import command, jsonio
from fexstack.atomic import temp_dir
from fexstack.digest import sha256_file
from fexstack.errors import RunError

SCHEMA = "sanitize"
EVIDENCE_NAME = "sanitize.json"
APPDIR_NAME = "squashfs-root"
GNU_PROPERTY = ".note.gnu.property"
EM_X86_64 = "EM_X86_64"


@dataclass(frozen=True)
class SanitizeResult:
    """The sanitized AppDir and the evidence (``sanitize.schema.json``)."""

    appdir: Path
    evidence: dict[str, Any]


def _is_x86_64_elf(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.read(4) != b"\x7fELF":
            return False
        try:
            elf = ELFFile(fh)
            return bool(elf["e_machine"] == EM_X86_64 and elf.elfclass == 64)
        except ELFError:
            return False


def gnu_property_remnants(path: Path) -> list[str]:
    """What is left of GNU property notes in ``path`` (empty when none remains)."""
    found: list[str] = []
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        for section in elf.iter_sections():
            if section.name == GNU_PROPERTY:
                found.append(f"section {GNU_PROPERTY}")
            elif isinstance(section, NoteSection):
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_PROPERTY_TYPE_0":
                        found.append(f"NT_GNU_PROPERTY_TYPE_0 note in {section.name}")
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_GNU_PROPERTY" and segment["p_filesz"] > 0:
                found.append(f"PT_GNU_PROPERTY segment of {segment['p_filesz']} bytes")
    return found


def _has_gnu_property(path: Path) -> bool:
    with path.open("rb") as fh:
        return ELFFile(fh).get_section_by_name(GNU_PROPERTY) is not None


def _strip_gnu_property(src: Path, dst: Path) -> None:
    command.run(
        ["objcopy", "--remove-section", GNU_PROPERTY, str(src), str(dst)],
        hint="objcopy (binutils) is needed: dnf install binutils, or run through ./devroot",
    )


# A step: a predicate choosing files, and a rewrite from the original to a new file.
Step = tuple[Callable[[Path], bool], Callable[[Path, Path], None], str]

STEPS: dict[str, Step] = {
    "strip-gnu-property": (_has_gnu_property, _strip_gnu_property, "objcopy"),
}


def check_steps(steps: Sequence[str]) -> tuple[str, ...]:
    """``steps`` as a tuple, or a RunError naming an unknown one and the known ones."""
    for step in steps:
        if step not in STEPS:
            raise RunError(
                f"unknown sanitize step {step!r}",
                f"known steps: {', '.join(sorted(STEPS))} (the [app] sanitize key of the stack)",
            )
    return tuple(steps)


def tree_identity(appdir: Path) -> list[list[Any]]:
    """A stat fingerprint of every entry under ``appdir`` (relative path, type, size, mtime)."""
    rows: list[list[Any]] = []
    for dirpath, dirnames, filenames in os.walk(appdir, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            st = full.lstat()
            rows.append(
                [full.relative_to(appdir).as_posix(), stat.S_IFMT(st.st_mode), st.st_size,
                 st.st_mtime_ns, st.st_ino]
            )
    return rows


def cache_key(appdir: Path, steps: Sequence[str]) -> str:
    identity = {
        "appdir": str(Path(os.path.realpath(appdir))),
        "tree": tree_identity(appdir),
        "steps": list(steps),
        "tools": {STEPS[s][2]: command.tool_version([STEPS[s][2], "--version"]) for s in steps},
        "fexstack": fexstack.__version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _copy_tree(src_root: Path, dst_root: Path, rewrite: Callable[[Path, Path], bool]) -> None:
    """Mirror ``src_root`` at ``dst_root``: symlinks recreated, files rewritten or linked."""
    dst_root.mkdir()
    for dirpath, dirnames, filenames in os.walk(src_root, followlinks=False):
        src_dir = Path(dirpath)
        dst_dir = dst_root / src_dir.relative_to(src_root)
        for name in dirnames + filenames:
            src, dst = src_dir / name, dst_dir / name
            st = src.lstat()
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISDIR(st.st_mode):
                dst.mkdir()
            elif stat.S_ISREG(st.st_mode):
                if rewrite(src, dst):
                    dst.chmod(stat.S_IMODE(st.st_mode))
                else:
                    _link_or_copy(src, dst)
            # fifos and sockets are not part of an app: leave them out.
    for dirpath, _dirnames, _filenames in os.walk(src_root, followlinks=False):
        src_dir = Path(dirpath)
        dst_dir = dst_root / src_dir.relative_to(src_root)
        dst_dir.chmod(stat.S_IMODE(src_dir.stat().st_mode))


def sanitize(appdir: Path, out: Path, *, steps: Sequence[str]) -> SanitizeResult:
    """Apply ``steps`` to a copy of ``appdir``; the copy is ``out/squashfs-root``.

    ``out`` holds the copy and its evidence (``out/sanitize.json``); when the evidence
    there was made from the same AppDir (by a stat fingerprint), steps and tools, it is
    reused. With no steps, ``appdir`` itself is returned with evidence listing nothing.
    """
    steps = check_steps(steps)
    appdir = Path(os.path.realpath(appdir))
    key = cache_key(appdir, steps)
    evidence_path = out / EVIDENCE_NAME
    if evidence_path.is_file():
        try:
            cached = jsonio.read_record(
                evidence_path, SCHEMA, error=RunError, what="sanitize record",
                hint="it is made again",
            )
        except RunError as exc:  # damaged: sanitized again
            print(f"fexstack: {exc.message}; sanitizing again", file=sys.stderr)
            cached = None
        if (
            isinstance(cached, dict)
            and cached.get("key") == key
            and (out / APPDIR_NAME).is_dir()
        ):
            return SanitizeResult(appdir=Path(cached["sanitized_appdir"]), evidence=cached)
    if not steps:
        evidence = _evidence(appdir, appdir, steps, key, [], 0)
        return SanitizeResult(appdir=appdir, evidence=evidence)

    modified: list[dict[str, Any]] = []
    scanned = 0

    def rewrite(src: Path, dst: Path) -> bool:
        nonlocal scanned
        if not _is_x86_64_elf(src):
            return False
        scanned += 1
        applied = [s for s in steps if STEPS[s][0](src)]
        if not applied:
            return False
        before = sha256_file(src)
        current = src
        for index, step in enumerate(applied):
            target = dst if index == len(applied) - 1 else dst.with_name(f"{dst.name}.{index}")
            STEPS[step][1](current, target)
            if current != src:
                current.unlink()
            current = target
        modified.append(
            {
                "path": src.relative_to(appdir).as_posix(),
                "steps": applied,
                "sha256_before": before,
                "sha256_after": sha256_file(dst),
            }
        )
        return True

    final = out / APPDIR_NAME
    with temp_dir(out) as tmp:
        tmp.chmod(0o755)
        _copy_tree(appdir, tmp / APPDIR_NAME, rewrite)
        for record in modified:
            new = tmp / APPDIR_NAME / record["path"]
            remnants = gnu_property_remnants(new)
            record["gnu_property_remaining"] = remnants
            record["original_unchanged"] = sha256_file(appdir / record["path"]) == record[
                "sha256_before"
            ]
            record["new_file"] = not os.path.samefile(new, appdir / record["path"])
            if remnants or not record["original_unchanged"] or not record["new_file"]:
                raise RunError(
                    f"sanitizing {appdir / record['path']} did not work: "
                    f"remaining {remnants}, original unchanged {record['original_unchanged']}",
                    "report this as a bug in fexstack's sanitize step",
                )
        modified.sort(key=lambda r: r["path"])
        evidence = _evidence(appdir, final, steps, key, modified, scanned)
        jsonio.write(tmp / EVIDENCE_NAME, evidence, SCHEMA)
    return SanitizeResult(appdir=final, evidence=evidence)


def _evidence(
    appdir: Path,
    sanitized: Path,
    steps: Sequence[str],
    key: str,
    modified: list[dict[str, Any]],
    scanned: int,
) -> dict[str, Any]:
    evidence = {
        "schema_version": 1,
        "key": key,
        "source_appdir": str(appdir),
        "sanitized_appdir": str(sanitized),
        "steps": list(steps),
        "tools": {STEPS[s][2]: command.tool_version([STEPS[s][2], "--version"]) for s in steps},
        "fexstack_version": fexstack.__version__,
        "elf_x86_64_scanned": scanned,
        "modified": modified,
        "verified": all(not r["gnu_property_remaining"] for r in modified),
    }
    jsonio.validate(evidence, SCHEMA)
    return evidence
