"""ELF facts, read once per file content with pyelftools.

:func:`facts` returns what the invariants and the loader model need from one file: class,
machine, type, PT_INTERP, DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1 and the x86
ISA bits of ``.note.gnu.property``. Results are cached by the file's identity (device,
inode, size, mtime), so several invariants asking about one file parse it once; ``PARSES``
counts the real parses. A file that starts like ELF but cannot be parsed yields facts with
``error`` set, never an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

MAGIC = b"\x7fELF"

# .note.gnu.property, GNU_PROPERTY_X86_ISA_1_* bits.
ISA_BASELINE = 1
ISA_V2 = 2
ISA_V3 = 4
ISA_V4 = 8
ISA_NAMES = ((ISA_V4, "x86-64-v4"), (ISA_V3, "x86-64-v3"), (ISA_V2, "x86-64-v2"),
             (ISA_BASELINE, "x86-64-baseline"))
# GNU_PROPERTY_X86_FEATURE_2_* bits that mean AVX-512 state (zmm registers, mask registers).
FEATURE2_ZMM = 1 << 5
FEATURE2_MASK = 1 << 11

DF_1_NODEFLIB = 0x800

PARSES = 0  # real parses done by this process (tests assert "once per file")

_CACHE: dict[tuple[int, int, int, int], ElfFacts | None] = {}


@dataclass(frozen=True)
class ElfFacts:
    """What fexstack reads from one ELF file."""

    elf_class: int = 0  # 32 or 64
    machine: str = ""  # pyelftools' name, e.g. "EM_X86_64"
    machine_id: int = 0
    e_type: str = ""  # "ET_DYN", "ET_EXEC", "ET_REL", ...
    interp: str | None = None
    needed: tuple[str, ...] = ()
    soname: str | None = None
    rpath: str | None = None
    runpath: str | None = None
    flags_1: int = 0
    isa_needed: int = 0
    isa_used: int = 0
    feature2_needed: int = 0
    feature2_used: int = 0
    error: str | None = None

    @property
    def is_x86_64(self) -> bool:
        return self.error is None and self.elf_class == 64 and self.machine == "EM_X86_64"

    @property
    def is_i386(self) -> bool:
        return self.error is None and self.elf_class == 32 and self.machine == "EM_386"

    @property
    def is_dynamic(self) -> bool:
        return self.e_type in ("ET_DYN", "ET_EXEC")

    @property
    def isa_level(self) -> str | None:
        """The highest x86-64 ISA level the file says it needs, or None."""
        return isa_name(self.isa_needed)

    @property
    def needs_avx512(self) -> bool:
        return bool(self.isa_needed & ISA_V4) or bool(
            self.feature2_needed & (FEATURE2_ZMM | FEATURE2_MASK)
        )

    @property
    def arch(self) -> str:
        """A short human name: ``x86_64``, ``i386``, ``aarch64``, ``bpf``..."""
        names = {"EM_X86_64": "x86_64", "EM_386": "i386", "EM_AARCH64": "aarch64",
                 "EM_BPF": "bpf", "EM_ARM": "arm"}
        name = names.get(self.machine, self.machine or "unknown")
        if name == "x86_64" and self.elf_class == 32:
            return "x32"
        return name


def isa_name(bits: int) -> str | None:
    for bit, name in ISA_NAMES:
        if bits & bit:
            return name
    return None


def is_elf(path: Path) -> bool:
    """True when ``path`` is a regular file starting with the ELF magic (no parse)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def facts(path: Path) -> ElfFacts | None:
    """The facts of the regular file at ``path``, None when it is not ELF at all.

    Symlinks are followed (callers pass files, or a symlink resolved on purpose).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    result = _parse(path)
    _CACHE[key] = result
    return result


def clear_cache() -> None:
    _CACHE.clear()


# Dynamic tags whose value is a string, and the attribute pyelftools gives it.
_STRING_TAGS = {"DT_SONAME": "soname", "DT_RPATH": "rpath", "DT_RUNPATH": "runpath"}


def _tag_string(tag: Any, attribute: str) -> str:
    """The string value of a dynamic tag (pyelftools sets these attributes at run time)."""
    return str(getattr(tag, attribute))


def _parse(path: Path) -> ElfFacts | None:
    global PARSES
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below; open may fail alone
    except OSError:
        return None
    with fh:
        if fh.read(4) != MAGIC:
            return None
        fh.seek(0)
        PARSES += 1
        try:
            return _read(ELFFile(fh))
        except Exception as exc:  # pyelftools raises many kinds on malformed input
            return ElfFacts(error=f"{type(exc).__name__}: {exc}".strip())


def _read(elf: ELFFile) -> ElfFacts:
    out: dict[str, Any] = {
        "elf_class": elf.elfclass,
        "machine": str(elf["e_machine"]),
        "machine_id": _machine_id(elf),
        "e_type": str(elf["e_type"]),
    }
    needed: list[str] = []
    for seg in elf.iter_segments():
        kind = seg["p_type"]
        if kind == "PT_INTERP" and isinstance(seg, InterpSegment):
            out["interp"] = seg.get_interp_name()
        elif kind == "PT_DYNAMIC" and isinstance(seg, DynamicSegment):
            for tag in seg.iter_tags():
                name = tag.entry.d_tag
                if name == "DT_NEEDED":
                    needed.append(_tag_string(tag, "needed"))
                elif name in _STRING_TAGS:
                    out[_STRING_TAGS[name]] = _tag_string(tag, _STRING_TAGS[name])
                elif name == "DT_FLAGS_1":
                    out["flags_1"] = int(tag.entry.d_val)
    out["needed"] = tuple(needed)
    out.update(_properties(elf))
    return ElfFacts(**out)


def _machine_id(elf: ELFFile) -> int:
    elf.stream.seek(18)
    raw: bytes = elf.stream.read(2)
    return int.from_bytes(raw, "little" if elf.little_endian else "big")


def _properties(elf: ELFFile) -> dict[str, int]:
    """x86 ISA/feature bits from NT_GNU_PROPERTY_TYPE_0 notes (section, else segments)."""
    found = {"isa_needed": 0, "isa_used": 0, "feature2_needed": 0, "feature2_used": 0}
    names = {
        "GNU_PROPERTY_X86_ISA_1_NEEDED": "isa_needed",
        "GNU_PROPERTY_X86_ISA_1_USED": "isa_used",
        "GNU_PROPERTY_X86_FEATURE_2_NEEDED": "feature2_needed",
        "GNU_PROPERTY_X86_FEATURE_2_USED": "feature2_used",
    }
    sources: list[Any] = []
    section = elf.get_section_by_name(".note.gnu.property")
    if section is not None:
        sources.append(section)
    else:
        sources += [s for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"]
    for source in sources:
        for note in source.iter_notes():
            if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0":
                continue
            for prop in note["n_desc"]:
                key = names.get(str(prop["pr_type"]))
                if key is not None and isinstance(prop["pr_data"], int):
                    found[key] |= prop["pr_data"]
    return found
