"""Reading an RPM: its header (python3-rpm) and its payload, a newc cpio archive.

The payload is decompressed in-process (gzip, bzip2, xz, zstd on Python 3.14+; rpm2cpio
otherwise) and parsed entry by entry by :class:`Reader`; nothing here writes a file.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import rpm

from fexstack import command
from fexstack.errors import StageError, ToolError

try:  # Python 3.14+; older Pythons decompress zstd payloads through rpm2cpio
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover
    zstd = None

CHUNK = 1 << 20
BUFFER = 1 << 18  # decompressed bytes read at a time for the cpio headers
RPMFILE_GHOST = 1 << 6
LEAD_SIZE = 96
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
NEWC_MAGIC = b"070701"
STRIPPED_MAGIC = b"07070X"  # rpm 6 (v6 packages): no names, an index into the header
TRAILER = "TRAILER!!!"
DIGEST_ALGOS = {
    1: "md5",
    2: "sha1",
    8: "sha256",
    9: "sha384",
    10: "sha512",
    11: "sha224",
    12: "sha3_256",
    14: "sha3_512",
}


def file_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "char device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return f"unknown type {mode:o}"


@dataclass
class HeaderFile:
    index: int
    inode: int
    nlink: int
    mode: int
    size: int
    digest: str
    linkto: str
    caps: str
    user: str
    group: str
    ghost: bool


@dataclass
class CpioEntry:
    name: str
    ino: int
    mode: int
    nlink: int
    size: int


def payload_offset(fh: IO[bytes], rpm_file: Path, package: str) -> int:
    """Offset of the payload: after the lead, the signature header (8-aligned), the header."""

    def header_end(offset: int) -> int:
        fh.seek(offset)
        intro = fh.read(16)
        if len(intro) != 16 or intro[:4] != HEADER_MAGIC:
            raise StageError(
                f"package {package}: {rpm_file} is not an RPM (no header at byte {offset})",
                "run the fetch step again; if it persists the package is broken upstream",
            )
        count, data = struct.unpack(">II", intro[8:16])
        return int(offset + 16 + 16 * count + data)

    signature_end = header_end(LEAD_SIZE)
    return header_end((signature_end + 7) // 8 * 8)


def read_header(rpm_file: Path, package: str) -> rpm.hdr:
    """The RPM header, read without signature or digest checks (fetch did those)."""
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    fd = os.open(rpm_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return ts.hdrFromFdno(fd)
    except rpm.error as exc:
        raise StageError(
            f"package {package}: rpm cannot read the header of {rpm_file}: {exc}",
            "run the fetch step again; if it persists the package is broken upstream",
        ) from exc
    finally:
        os.close(fd)


def header_files(hdr: rpm.hdr) -> dict[str, HeaderFile]:
    files: dict[str, HeaderFile] = {}
    for index, f in enumerate(rpm.files(hdr)):
        files[f.name] = HeaderFile(
            index=index,
            inode=f.inode,
            nlink=f.nlink,
            mode=f.mode,
            size=f.size,
            digest=f.digest or "",
            linkto=f.linkto or "",
            caps=f.caps or "",
            user=f.user or "root",
            group=f.group or "root",
            ghost=bool(f.fflags & RPMFILE_GHOST),
        )
    return files


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def open_payload(rpm_file: Path, hdr: rpm.hdr, package: str) -> Iterator[IO[bytes]]:
    """The decompressed payload as a stream."""
    compressor = text(hdr[rpm.RPMTAG_PAYLOADCOMPRESSOR] or "gzip")
    fmt = text(hdr[rpm.RPMTAG_PAYLOADFORMAT] or "cpio")
    if fmt != "cpio":
        raise StageError(
            f"package {package}: payload format {fmt!r} is not supported (only cpio)",
            "this package was built by an rpm fexstack does not know; report it",
        )
    with open(rpm_file, "rb") as raw:
        raw.seek(payload_offset(raw, rpm_file, package))
        stream = decompressor(compressor, raw)
        if stream is None:
            yield io.BytesIO(rpm2cpio(rpm_file, package))
            return
        with stream:
            yield stream


def decompressor(compressor: str, raw: IO[bytes]) -> IO[bytes] | None:
    """A stream decompressing ``raw``, or None to let rpm2cpio do it."""
    if compressor == "zstd":
        return zstd.ZstdFile(raw) if zstd is not None else None
    if compressor in ("xz", "lzma"):
        return lzma.LZMAFile(raw)
    if compressor == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if compressor == "bzip2":
        return bz2.BZ2File(raw)
    if compressor in ("identity", "none"):
        return raw
    return None


def rpm2cpio(rpm_file: Path, package: str) -> bytes:
    try:
        return command.run(["rpm2cpio", rpm_file]).stdout or b""
    except ToolError as exc:
        raise StageError(
            f"package {package}: cannot decompress the payload of {rpm_file}",
            "install rpm2cpio or use Python 3.14+ (compression.zstd)",
        ) from exc


class Reader:
    """Exact reads from the decompressed payload, tracking the offset for padding.

    Reads the stream in blocks of :data:`BUFFER` and slices entries' small fields from
    them: one ``read`` of a decompressing file per field costs more than the field.
    """

    def __init__(self, stream: IO[bytes], package: str) -> None:
        self.stream = stream
        self.package = package
        self.offset = 0
        self.buf = b""
        self.pos = 0

    def exact(self, size: int) -> bytes:
        pos = self.pos
        end = pos + size
        if end <= len(self.buf):
            self.pos = end
            self.offset += size
            return self.buf[pos:end]
        chunks = [self.buf[pos:]]
        have = len(chunks[0])
        while have < size:
            block = self.stream.read(max(BUFFER, size - have))
            if not block:
                raise StageError(
                    f"package {self.package}: the payload ends early (truncated cpio archive)",
                    "run the fetch step again; if it persists the package is broken upstream",
                )
            chunks.append(block)
            have += len(block)
        joined = b"".join(chunks)
        self.buf = joined
        self.pos = size
        self.offset += size
        return joined if have == size else joined[:size]

    def align(self) -> None:
        pad = -self.offset % 4
        if pad:
            self.exact(pad)
