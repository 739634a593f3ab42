"""Helpers for the fetch and stage tests: locks made from fixture RPMs, and hostile RPMs.

:func:`craft` takes a real RPM (built by the fixture factory) and swaps its payload for a
newc cpio archive of our choosing, compressed with zstd as the header says. The header is
left as it was, so the result is what an attacker who controls a package's bytes could
serve: rpm reads it (digest checks off), and only the extractor's own checks stand between
the payload and the disk.
"""

from __future__ import annotations

import hashlib
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from compression import zstd

from overlays.lockfile import Lock, LockedPackage, Reason

LEAD = 96


@dataclass(frozen=True)
class Entry:
    """One cpio entry: ``name`` exactly as stored (e.g. ``./usr/x`` or ``../../x``)."""

    name: str
    mode: int = stat.S_IFREG | 0o644
    data: bytes = b""
    ino: int = 0
    nlink: int = 1
    rdev: tuple[int, int] = (0, 0)


def payload_offset(data: bytes) -> int:
    """Where the payload starts: after the lead, the padded signature header, the header."""

    def end(offset: int) -> int:
        assert data[offset : offset + 3] == b"\x8e\xad\xe8", f"no header at {offset}"
        count, size = struct.unpack(">II", data[offset + 8 : offset + 16])
        return offset + 16 + 16 * count + size

    signature_end = end(LEAD)
    return end((signature_end + 7) // 8 * 8)


def cpio(entries: Iterable[Entry]) -> bytes:
    """A newc cpio archive of ``entries`` and the trailer."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    items = [*entries, Entry("TRAILER!!!", mode=0)]
    for number, entry in enumerate(items, start=1):
        name = entry.name.encode() + b"\0"
        fields = [
            entry.ino or number,
            entry.mode,
            0,
            0,
            entry.nlink,
            0,
            len(entry.data),
            0,
            0,
            entry.rdev[0],
            entry.rdev[1],
            len(name),
            0,
        ]
        out.extend(b"070701" + b"".join(b"%08x" % f for f in fields))
        out.extend(name)
        pad()
        out.extend(entry.data)
        pad()
    return bytes(out)


def craft(base: Path, out: Path, entries: Sequence[Entry]) -> Path:
    """Write ``out``: ``base``'s lead and headers followed by a payload of ``entries``."""
    data = base.read_bytes()
    head = data[: payload_offset(data)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(head + zstd.compress(cpio(entries)))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locked(
    name: str, rpm: Path, *, url: str | None = None, repo: str = "test", version: str = "1.0"
) -> LockedPackage:
    """A lock entry for the RPM file ``rpm`` (its URL defaults to the file's URI)."""
    return LockedPackage(
        name=name,
        epoch=0,
        version=version,
        release="1",
        arch="x86_64",
        repo=repo,
        url=url if url is not None else rpm.as_uri(),
        sha256=sha256(rpm),
        size=rpm.stat().st_size,
        reasons=(Reason(seed="test"),),
    )


def lock_of(packages: Iterable[LockedPackage], stack: str = "demo") -> Lock:
    """A lock holding ``packages`` in the order given."""
    return Lock(
        stack=stack,
        release="44",
        arch="x86_64",
        inputs="sha256:" + "0" * 64,
        base="sha256:" + "0" * 64,
        packages=tuple(packages),
    )
