"""AppImages: find the payload of a Type 2 AppImage and extract it host-side.

The AppImage runtime is an x86_64 ELF that cannot run on an aarch64 host (and needs FUSE
in the guest), so fexstack never executes it. :func:`inspect` reads the ELF headers to find
where the runtime ends and the payload begins; :func:`extract` lists the SquashFS payload,
refuses names that could land outside the target, extracts it with ``unsquashfs -o`` into
a cache and checks that the extracted tree is exactly what was listed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import fexstack
from fexstack import atomic, command, paths
from fexstack.errors import RunError, ToolError

PayloadFormat = Literal["squashfs", "dwarfs"]

ELF_MAGIC = b"\x7fELF"
AI_TYPE1 = b"AI\x01"
AI_TYPE2 = b"AI\x02"
SQUASHFS_MAGIC = b"hsqs"
DWARFS_MAGIC = b"DWARFS"
SQUASHFS_SUPERBLOCK_SIZE = 96
SHT_NOBITS = 8  # a section that occupies no bytes in the file (.bss)

# How the payload is extracted; part of the cache key, so a change re-extracts.
EXTRACT_RECIPE = "unsquashfs -no-xattrs, listing checked, setuid/setgid cleared, v1"
APPDIR_NAME = "squashfs-root"

ReadAt = Callable[[int, int], bytes]


@dataclass(frozen=True)
class AppImageInfo:
    """What :func:`inspect` found: the AppImage type and where its payload starts."""

    path: Path
    type: int
    payload_offset: int
    payload_format: PayloadFormat
    size: int


@dataclass(frozen=True)
class Extraction:
    """An extracted AppDir, whether it came from the cache, and how long it took."""

    appdir: Path
    cache_hit: bool
    seconds: float


@dataclass(frozen=True)
class Entry:
    """One entry of an ``unsquashfs -lln`` listing."""

    path: str  # relative to the AppDir, "/"-separated, never empty
    kind: str  # the ls type letter: "-", "d", "l", "c", "b", "p", "s"
    mode: str  # the nine permission letters
    target: str | None = None  # symlink target


# --- inspection ------------------------------------------------------------------------


def _not_appimage(path: Path, why: str) -> RunError:
    return RunError(
        f"{path} is not an AppImage: {why}",
        "pass the .AppImage file itself (a Type 2 AppImage: an ELF runtime with the "
        "bytes 'AI\\x02' at offset 8, followed by a SquashFS image)",
    )


def elf_end(header: bytes, read_at: ReadAt, path: Path) -> int:
    """Where the ELF file described by ``header`` ends: the payload offset of an AppImage.

    The end of the section header table or of the last section holding file bytes,
    whichever is later; honours the ELF class (32/64-bit) and byte order.
    """
    ei_class, ei_data = header[4], header[5]
    if ei_data == 1:
        order = "<"
    elif ei_data == 2:
        order = ">"
    else:
        raise _not_appimage(path, f"ELF byte order {ei_data} is neither 1 (LSB) nor 2 (MSB)")
    if ei_class == 1:
        shoff = struct.unpack_from(order + "I", header, 0x20)[0]
        shentsize, shnum = struct.unpack_from(order + "HH", header, 0x2E)
        sh_fmt, sh_min = order + "IIIIII", 24  # name type flags addr offset size
    elif ei_class == 2:
        shoff = struct.unpack_from(order + "Q", header, 0x28)[0]
        shentsize, shnum = struct.unpack_from(order + "HH", header, 0x3A)
        sh_fmt, sh_min = order + "IIQQQQ", 40
    else:
        raise _not_appimage(path, f"ELF class {ei_class} is neither 1 (32-bit) nor 2 (64-bit)")
    if shnum == 0 or shoff == 0:
        raise _not_appimage(path, "its ELF runtime has no section headers to find its end by")
    if shentsize < sh_min:
        raise _not_appimage(path, f"ELF section header size {shentsize} is too small")
    end = shoff + shentsize * shnum
    table = read_at(shoff, shentsize * shnum)
    if len(table) < shentsize * shnum:
        raise RunError(
            f"{path} is truncated: its section header table ends at byte {end}, "
            "past the end of the file",
            "download the AppImage again; the file is incomplete",
        )
    for index in range(shnum):
        _name, sh_type, _flags, _addr, sh_offset, sh_size = struct.unpack_from(
            sh_fmt, table, index * shentsize
        )
        if sh_type != SHT_NOBITS:
            end = max(end, int(sh_offset) + int(sh_size))
    return int(end)


def inspect(path: Path) -> AppImageInfo:
    """Identify a Type 2 AppImage and locate its SquashFS payload.

    Raises :class:`RunError` for a Type 1 AppImage, a DwarFS payload, a file that is not
    an AppImage, or a truncated one.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        fh = path.open("rb")
    except OSError as exc:
        raise RunError(
            f"cannot read AppImage {path}: {exc.strerror or exc}",
            "check the path (the [app] appimage key of the stack, or the command line)",
        ) from exc
    with fh:

        def read_at(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        header = read_at(0, 64)
        if header[:4] != ELF_MAGIC:
            raise _not_appimage(path, "it is not an ELF file (no \\x7fELF magic)")
        magic = header[8:11]
        if magic == AI_TYPE1:
            raise RunError(
                f"{path} is a Type 1 AppImage (an ISO 9660 image); fexstack supports "
                "Type 2 AppImages only",
                "convert it: extract it (bsdtar -xf FILE -C AppDir, or 7z x FILE -oAppDir) "
                "and repack the AppDir with appimagetool, or ask its publisher for a Type 2 "
                "build",
            )
        if magic != AI_TYPE2:
            raise _not_appimage(path, "an ELF file without the AppImage magic 'AI' at byte 8")
        if len(header) < 64:
            raise RunError(
                f"{path} is truncated: its ELF header is incomplete ({len(header)} bytes)",
                "download the AppImage again; the file is incomplete",
            )
        offset = elf_end(header, read_at, path)
        if offset >= size:
            raise RunError(
                f"{path} is truncated: the payload should start at byte {offset} but the "
                f"file has {size} bytes",
                "download the AppImage again; the file is incomplete",
            )
        payload = read_at(offset, SQUASHFS_SUPERBLOCK_SIZE)
        if payload.startswith(DWARFS_MAGIC):
            raise RunError(
                f"{path} has a DwarFS payload (at byte {offset}); fexstack extracts SquashFS "
                "payloads only",
                "extracting it needs dwarfsextract from the dwarfs project "
                f"(dwarfsextract -i FILE -O {offset} -o AppDir), which fexstack does not "
                "package; or ask the publisher for a SquashFS build",
            )
        if not payload.startswith(SQUASHFS_MAGIC):
            raise _not_appimage(
                path, f"no SquashFS ('hsqs') or DwarFS magic at the payload offset {offset}"
            )
        if len(payload) < SQUASHFS_SUPERBLOCK_SIZE:
            raise RunError(
                f"{path} is truncated: the SquashFS superblock at byte {offset} is incomplete",
                "download the AppImage again; the file is incomplete",
            )
        bytes_used = struct.unpack_from("<Q", payload, 40)[0]
        if offset + bytes_used > size:
            raise RunError(
                f"{path} is truncated: its SquashFS payload needs {bytes_used} bytes from "
                f"byte {offset} (up to {offset + bytes_used}) but the file has {size} bytes",
                "download the AppImage again; the file is incomplete",
            )
    return AppImageInfo(
        path=path, type=2, payload_offset=offset, payload_format="squashfs", size=size
    )


# --- listing ---------------------------------------------------------------------------

# "lrwxrwxrwx 0/0   11 1970-01-01 00:00 /AppRun -> usr/bin/app"; devices show "1,  3".
_LINE = re.compile(
    r"^(?P<kind>[-dlcbps])(?P<mode>[-rwxsStT]{9}) +\d+/\d+ +(?P<size>\d+|\d+, *\d+) "
    r"+\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)? (?P<name>.*)$"
)


def parse_listing(text: str, source: Path) -> list[Entry]:
    """Parse ``unsquashfs -lln -d ''`` output into entries; refuse unsafe names.

    A line that is not an entry continues the previous name (a newline in a name). Names
    with an empty, ``.`` or ``..`` component are refused, as are duplicate names and
    device nodes: extraction must never write outside its target.
    """
    entries: list[tuple[str, str, int, str]] = []
    for line in text.split("\n"):
        match = _LINE.match(line)
        if match:
            size = match["size"]
            entries.append(
                (match["kind"], match["mode"], int(size) if size.isdigit() else -1, match["name"])
            )
        elif entries:
            kind, mode, size, name = entries[-1]
            entries[-1] = (kind, mode, size, name + "\n" + line)
        elif line.strip():
            raise RunError(
                f"cannot read the listing of {source}: unexpected line {line!r}",
                "the SquashFS payload may be damaged; download the AppImage again",
            )
    # unsquashfs ends its output with a newline: drop the empty continuation it makes.
    if entries and entries[-1][3].endswith("\n"):
        kind, mode, size, name = entries[-1]
        entries[-1] = (kind, mode, size, name[:-1])
    result: list[Entry] = []
    seen: set[str] = set()
    for kind, mode, size, name in entries:
        target = None
        if kind == "l":
            # The size of a symlink is its target's length: split there, not at " -> ".
            cut = len(name) - size - len(" -> ")
            if size < 0 or cut < 0 or name[cut : cut + 4] != " -> ":
                raise RunError(
                    f"cannot read the listing of {source}: symlink line {name!r}",
                    "the SquashFS payload may be damaged; download the AppImage again",
                )
            name, target = name[:cut], name[cut + 4 :]
        if name == "" and kind == "d":
            continue  # the root directory
        check_name(name, source)
        rel = name[1:]
        if rel in seen:
            raise RunError(
                f"{source} lists {name!r} twice; refusing to extract it (a duplicate name "
                "can make an extractor write through a symlink)",
                "the AppImage is malformed or hostile; do not run it",
            )
        seen.add(rel)
        if kind in "cb":
            raise RunError(
                f"{source} contains a device node {name!r}; refusing to extract it",
                "an AppImage has no business shipping device nodes; do not run it",
            )
        result.append(Entry(path=rel, kind=kind, mode=mode, target=target))
    return result


def check_name(name: str, source: Path) -> None:
    """Refuse a listed name that is not ``/`` followed by plain components."""
    parts = name.split("/")
    if not name.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]) or "\0" in name:
        raise RunError(
            f"{source} contains an entry named {name!r} that would escape or confuse the "
            "extraction directory; refusing to extract it",
            "the AppImage is malformed or hostile; do not run it",
        )


def listing(info: AppImageInfo) -> list[Entry]:
    """The payload's entries, checked by :func:`parse_listing`."""
    try:
        out = command.output(
            ["unsquashfs", "-o", str(info.payload_offset), "-lln", "-d", "", str(info.path)]
        )
    except ToolError as exc:
        raise RunError(
            f"cannot list the SquashFS payload of {info.path} (at byte "
            f"{info.payload_offset}); refusing to extract it:\n{exc.stderr_tail or exc.message}",
            "the payload is damaged or holds names that would escape the extraction "
            "directory; download the AppImage again, and do not run it if this persists",
        ) from exc
    return parse_listing(out, info.path)


# --- extraction ------------------------------------------------------------------------


def extractor_version() -> str:
    """``unsquashfs -version``'s first line (part of the cache key)."""
    return command.tool_version(["unsquashfs", "-version"])


def cache_key(path: Path) -> str:
    """The extraction cache key: path, inode, mtime, size, extractor and fexstack version."""
    st = path.stat()
    identity = {
        "path": str(path.resolve()),
        "inode": st.st_ino,
        "device": st.st_dev,
        "mtime_ns": st.st_mtime_ns,
        "size": st.st_size,
        "extractor": extractor_version(),
        "recipe": EXTRACT_RECIPE,
        "fexstack": fexstack.__version__,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{path.name[:40]}-{digest[:24]}"


def default_cache() -> Path:
    return paths.cache_dir() / "appimages"


def extract(path: Path, *, cache: Path | None = None) -> Extraction:
    """Extract an AppImage's SquashFS payload into the cache; return the AppDir.

    The cache entry is ``<cache>/<key>/squashfs-root`` (``cache`` defaults to
    ``<cache_dir()>/appimages``), built in a temp dir and renamed into place, so an
    interrupted extraction is never reused, and a complete entry is never replaced.
    """
    path = Path(path).absolute()
    start = time.monotonic()
    info = inspect(path)
    root = cache if cache is not None else default_cache()
    entry_dir = root / cache_key(path)
    appdir = entry_dir / APPDIR_NAME
    if appdir.is_dir() and not appdir.is_symlink():
        return Extraction(appdir=appdir, cache_hit=True, seconds=time.monotonic() - start)
    entries = listing(info)
    root.mkdir(parents=True, exist_ok=True)
    atomic.sweep(root)  # extractions a killed run left behind
    tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}{entry_dir.name}.", dir=root))
    try:
        tmp.chmod(0o755)
        target = tmp / APPDIR_NAME
        try:
            command.run(
                [
                    "unsquashfs", "-o", str(info.payload_offset), "-no-xattrs", "-no-progress",
                    "-quiet", "-d", str(target), str(info.path),
                ]
            )
        except ToolError as exc:
            raise RunError(
                f"extracting {info.path} failed:\n{exc.stderr_tail or exc.message}",
                "the payload may be damaged (download the AppImage again), or the disk "
                f"holding {root} is full",
            ) from exc
        verify_tree(target, entries, path)
        _publish(tmp, entry_dir)
    finally:
        atomic.remove(tmp)
    if not appdir.is_dir():
        raise RunError(
            f"the extraction of {path} vanished from the cache ({entry_dir})",
            "is something else cleaning the cache? run again",
        )
    return Extraction(appdir=appdir, cache_hit=False, seconds=time.monotonic() - start)


def _publish(tmp: Path, entry_dir: Path) -> None:
    """Rename a finished extraction into place, never replacing a complete one.

    Renaming a directory onto an empty directory (a half-made entry) succeeds; onto a
    complete entry that a concurrent extraction published first, it fails, and that
    entry (which a running app may be using) is kept.
    """
    if entry_dir.is_symlink() or (entry_dir.exists() and not entry_dir.is_dir()):
        atomic.remove(entry_dir)
    elif entry_dir.is_dir() and not (entry_dir / APPDIR_NAME).is_dir():
        atomic.remove(entry_dir)  # a key dir left without its AppDir
    try:
        os.rename(tmp, entry_dir)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def verify_tree(target: Path, entries: list[Entry], source: Path) -> None:
    """Check the extracted tree is exactly the listing; clear setuid and setgid bits.

    Anything listed but missing (or present but unlisted) means the extractor wrote
    somewhere else, so the extraction is refused.
    """
    expected = {e.path: e for e in entries}
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(target).as_posix()
            found.add(rel)
            entry = expected.get(rel)
            st = full.lstat()
            if entry is None:
                continue
            if entry.kind == "l" and not stat.S_ISLNK(st.st_mode):
                raise RunError(
                    f"extracting {source}: {rel} should be a symlink but is not",
                    "the extractor followed a symlink; refusing this extraction",
                )
            if entry.kind == "l" and os.readlink(full) != entry.target:
                raise RunError(
                    f"extracting {source}: symlink {rel} points at {os.readlink(full)!r}, "
                    f"the listing says {entry.target!r}",
                    "refusing this extraction",
                )
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(full, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
    missing = sorted(set(expected) - found)
    extra = sorted(found - set(expected))
    if missing or extra:
        raise RunError(
            f"extracting {source} did not produce the listed tree (missing: "
            f"{missing[:5]}, unlisted: {extra[:5]})",
            "an entry may have been written outside the extraction directory; "
            "do not run this AppImage",
        )
