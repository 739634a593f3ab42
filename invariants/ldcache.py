"""glibc's /etc/ld.so.cache, parsed: the new format ``glibc-ld.so.cache1.1`` and the old
``ld.so-1.7.0`` one (alone, or in front of a new one as older ldconfig wrote it).

:meth:`LdCache.lookup` picks the entry glibc's loader would pick for a soname: entries for
another architecture are skipped (x86_64 wants flags ``FLAG_ELF_LIBC6 | FLAG_X8664_LIB64``),
a glibc-hwcaps entry the CPU supports wins by the subdirectory's priority, otherwise the
first plain entry is taken.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fexstack.errors import CheckError

MAGIC_NEW = b"glibc-ld.so.cache"
VERSION_NEW = b"1.1"
MAGIC_OLD = b"ld.so-1.7.0"
NEW_HEADER = struct.Struct("<17s3sIIB3sI12x")  # magic, version, nlibs, len_strings, flags
NEW_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
OLD_ENTRY = struct.Struct("<iII")
EXTENSION_MAGIC = 0xEAA42174
EXTENSION_TAG_HWCAPS = 1
HWCAP_EXTENSION = 1 << 62

FLAG_ELF_LIBC6 = 0x0003
FLAG_X8664_LIB64 = 0x0300
X86_64_FLAGS = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64


@dataclass(frozen=True)
class CacheEntry:
    soname: str
    path: str
    flags: int
    hwcaps: str | None = None  # glibc-hwcaps subdirectory name, e.g. "x86-64-v3"

    @property
    def x86_64(self) -> bool:
        return self.flags == X86_64_FLAGS


@dataclass(frozen=True)
class LdCache:
    """The entries of one ld.so.cache, in file order."""

    format: str  # "new", "old" or "old+new"
    entries: tuple[CacheEntry, ...]

    def lookup(self, soname: str, hwcaps: Sequence[str] = ()) -> str | None:
        """The path the x86_64 loader takes for ``soname`` (``hwcaps``: supported
        glibc-hwcaps subdirectories, most preferred first), or None."""
        best: tuple[int, str] | None = None
        plain: str | None = None
        for entry in self.entries:
            if entry.soname != soname or not entry.x86_64:
                continue
            if entry.hwcaps is not None:
                if entry.hwcaps in hwcaps:
                    rank = list(hwcaps).index(entry.hwcaps)
                    if best is None or rank < best[0]:
                        best = (rank, entry.path)
            elif plain is None:
                plain = entry.path
        return best[1] if best is not None else plain

    def as_json(self) -> list[dict[str, object]]:
        return [
            {"soname": e.soname, "path": e.path, "flags": e.flags, "hwcaps": e.hwcaps}
            for e in self.entries
        ]

    @classmethod
    def from_json(cls, fmt: str, rows: list[dict[str, object]]) -> LdCache:
        entries = tuple(
            CacheEntry(str(r["soname"]), str(r["path"]), int(str(r["flags"])),
                       None if r.get("hwcaps") is None else str(r["hwcaps"]))
            for r in rows
        )
        return cls(fmt, entries)


def read(path: Path) -> LdCache:
    """Parse the cache file at ``path`` (raises CheckError when it is not one)."""
    return parse(path.read_bytes(), str(path))


def parse(data: bytes, where: str = "ld.so.cache") -> LdCache:
    try:
        if data.startswith(MAGIC_NEW):
            return LdCache("new", _parse_new(data, 0))
        if data.startswith(MAGIC_OLD):
            return _parse_old(data)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        raise CheckError(
            f"{where} is truncated or corrupt ({exc})",
            "regenerate it with ldconfig -r ROOT, or rebuild the base image",
        ) from exc
    raise CheckError(
        f"{where} is not a glibc ld.so.cache (magic {data[:20]!r})",
        "regenerate it with ldconfig -r ROOT, or rebuild the base image",
    )


def _cstr(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("utf-8")


def _parse_new(data: bytes, start: int) -> tuple[CacheEntry, ...]:
    _magic, version, nlibs, _len_strings, flags, _pad, ext_offset = NEW_HEADER.unpack_from(
        data, start
    )
    if version != VERSION_NEW:
        raise ValueError(f"unknown new-format version {version!r}")
    if flags & 3 == 3:
        raise ValueError("big-endian caches are not supported")
    hwcap_names = _hwcap_names(data, start, ext_offset)
    entries = []
    base = start + NEW_HEADER.size
    for i in range(nlibs):
        eflags, key, value, _osv, hwcap = NEW_ENTRY.unpack_from(data, base + i * NEW_ENTRY.size)
        sub: str | None = None
        if hwcap & HWCAP_EXTENSION:
            index = hwcap & 0xFFFFFFFF
            sub = hwcap_names[index] if index < len(hwcap_names) else f"#{index}"
        elif hwcap:
            continue  # legacy hwcaps subdirectories: glibc 2.37 and later ignore them
        entries.append(
            CacheEntry(_cstr(data, start + key), _cstr(data, start + value), eflags, sub)
        )
    return tuple(entries)


def _hwcap_names(data: bytes, start: int, ext_offset: int) -> list[str]:
    if not ext_offset or start + ext_offset + 8 > len(data):
        return []
    magic, count = struct.unpack_from("<II", data, start + ext_offset)
    if magic != EXTENSION_MAGIC:
        return []
    for i in range(count):
        at = start + ext_offset + 8 + 16 * i
        tag, _flags, offset, size = struct.unpack_from("<IIII", data, at)
        if tag == EXTENSION_TAG_HWCAPS:
            offsets = struct.unpack_from(f"<{size // 4}I", data, start + offset)
            return [_cstr(data, start + o) for o in offsets]
    return []


def _parse_old(data: bytes) -> LdCache:
    (nlibs,) = struct.unpack_from("<I", data, 12)
    entries_at = 16
    strings = entries_at + nlibs * OLD_ENTRY.size
    new_at = (strings + 7) & ~7
    if data[new_at:new_at + len(MAGIC_NEW)] == MAGIC_NEW:
        return LdCache("old+new", _parse_new(data, new_at))
    entries = []
    for i in range(nlibs):
        flags, key, value = OLD_ENTRY.unpack_from(data, entries_at + i * OLD_ENTRY.size)
        entries.append(CacheEntry(_cstr(data, strings + key), _cstr(data, strings + value), flags))
    return LdCache("old", tuple(entries))
