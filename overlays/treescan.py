"""Listing a tree for the read-back: every path's type, mode, size, link target and
sha256 (files hashed in threads), and re-scans that hash only what changed."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack.errors import ImageError

# Hashing threads: reads and sha256 release the GIL; more than 4 gains nothing here.
HASH_JOBS = max(1, min(4, os.cpu_count() or 1))
HASH_BATCH = 64  # files per task handed to a hashing thread
SMALL_FILE = 1 << 20  # files up to this size are read in one call
# A file whose ctime is this close to (or after) the start of the scan that hashed it is
# hashed again by a re-scan: a change in the same clock tick could leave its lstat equal.
RACY_NS = 1_000_000_000

# lstat facts that any change to a path's content or metadata changes.
Signature = tuple[int, int, int, int, int, int]

KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class Entry:
    """One path of a tree as the overlay shows it (``path`` is absolute: ``/usr/lib64/x``)."""

    path: str
    kind: str  # one of KINDS' values
    mode: int  # permission bits including setuid, setgid and sticky (stat.S_IMODE)
    size: int  # bytes of a regular file, length of a symlink's target, else 0
    sha256: str | None = None  # regular files only
    target: str | None = None  # symlinks only

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "type": self.kind,
            "mode": f"{self.mode:04o}",
            "size": self.size,
        }
        if self.sha256 is not None:
            doc["sha256"] = self.sha256
        if self.target is not None:
            doc["target"] = self.target
        return doc


@dataclass(frozen=True)
class Listing:
    """A scan of a tree: its entries and, per path, the lstat facts seen when it was read."""

    entries: dict[str, Entry]
    stats: dict[str, Signature]
    started_ns: int  # wall-clock time (time.time_ns) when the scan began


def _check_name(full: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ImageError(
            f"{os.fsencode(full)!r}: file name is not valid UTF-8",
            "rename the file in the package or exclude it; manifests record names as UTF-8",
        ) from exc


def hash_file(full: str, size: int) -> str:
    """The sha256 of the regular file ``full`` (never through a symlink).

    ``size`` (from lstat) only picks the read size: files up to :data:`SMALL_FILE` are read
    in one call, larger ones streamed. The digest is of what is read, whatever the size.
    """
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if size > SMALL_FILE:
            with open(fd, "rb", closefd=False) as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest()
        first = os.read(fd, size + 1)
        digest = hashlib.sha256(first)
        if len(first) != size:  # changed since its lstat (or a short read): read to the end
            while chunk := os.read(fd, SMALL_FILE):
                digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _hash_batch(batch: Sequence[tuple[str, str, int]]) -> list[tuple[str, str]]:
    done: list[tuple[str, str]] = []
    for path, full, size in batch:
        try:
            done.append((path, hash_file(full, size)))
        except OSError as exc:
            raise ImageError(
                f"{full}: cannot read it to hash it: {exc.strerror}",
                "the tree changed while it was read; re-run the step",
            ) from exc
    return done


def _hash_all(todo: Sequence[tuple[str, str, int]], jobs: int) -> dict[str, str]:
    """``{path: sha256}`` of ``todo`` (path, full path, size), hashed in ``jobs`` threads.

    hashlib and file reads release the GIL, so threads overlap on the bytes; the files are
    dealt out in batches (largest first) so that thread hand-over costs little per file.
    """
    if jobs <= 1 or len(todo) < 2 * HASH_BATCH:
        return dict(_hash_batch(todo))
    ordered = sorted(todo, key=lambda t: -t[2])
    batches = [ordered[i : i + HASH_BATCH] for i in range(0, len(ordered), HASH_BATCH)]
    with ThreadPoolExecutor(jobs, thread_name_prefix="fexstack-hash") as pool:
        return {path: digest for done in pool.map(_hash_batch, batches) for path, digest in done}


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def scan(
    root: Path,
    *,
    previous: Listing | None = None,
    jobs: int | None = None,
    known: Mapping[str, tuple[str, int]] | None = None,
) -> Listing:
    """List ``root`` like :func:`list_tree`, hashing regular files in ``jobs`` threads.

    With ``previous`` (an earlier scan of the same tree), a file whose lstat facts (device,
    inode, type and mode, size, mtime and ctime to the nanosecond) are unchanged keeps its
    digest instead of being read again, unless its ctime is within :data:`RACY_NS` of when
    ``previous`` began (a change in the same clock tick could leave the facts equal).

    ``known`` maps paths to the (sha256, size) the tree's maker meant them to have (the
    stage step: the verified extraction cache's digests). A file of that size whose mtime
    is still the stage step's 0 is listed with that digest unread: the listing then says
    what the file should hold, and a read-back compared with it fails if the file (or an
    image made from it) holds anything else.
    """
    started = time.time_ns()
    top = os.fspath(root)
    try:
        st_root = os.lstat(top)
    except FileNotFoundError as exc:
        raise ImageError(f"{root}: not a directory", "run the stage step first") from exc
    if not stat.S_ISDIR(st_root.st_mode):
        raise ImageError(f"{root}: not a directory", "run the stage step first")
    found: list[tuple[str, str, os.stat_result]] = [("/", top, st_root)]
    stack: list[tuple[str, str]] = [("", top)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            children = [(e.name, e.path, e.stat(follow_symlinks=False)) for e in it]
        for name, full, st in children:
            _check_name(full, name)
            path = f"{prefix}/{name}"
            found.append((path, full, st))
            if stat.S_ISDIR(st.st_mode):
                stack.append((path, full))
    reuse_before = previous.started_ns - RACY_NS if previous is not None else 0
    entries: dict[str, Entry] = {}
    stats: dict[str, Signature] = {}
    todo: list[tuple[str, str, int]] = []
    modes: dict[str, int] = {}
    for path, full, st in found:
        fmt = stat.S_IFMT(st.st_mode)
        kind = KINDS.get(fmt)
        if kind is None:
            raise ImageError(f"{full}: unsupported file type {fmt:o}")
        mode = stat.S_IMODE(st.st_mode)
        sig = stats[path] = _signature(st)
        if kind == "file":
            old = previous.entries.get(path) if previous is not None else None
            meant = known.get(path) if known is not None else None
            if meant is not None and meant[1] == st.st_size and st.st_mtime_ns == 0:
                entries[path] = Entry(path, kind, mode, st.st_size, sha256=meant[0])
            elif (
                old is not None
                and old.sha256 is not None
                and previous is not None
                and previous.stats.get(path) == sig
                and st.st_ctime_ns < reuse_before
            ):
                entries[path] = old
            else:
                todo.append((path, full, st.st_size))
                modes[path] = mode
        elif kind == "symlink":
            target = os.readlink(full)
            entries[path] = Entry(path, kind, mode, len(os.fsencode(target)), target=target)
        else:
            entries[path] = Entry(path, kind, mode, 0)
    if todo:
        digests = _hash_all(todo, jobs if jobs is not None else HASH_JOBS)
        for path, _full, size in todo:
            entries[path] = Entry(path, "file", modes[path], size, sha256=digests[path])
    return Listing(dict(sorted(entries.items())), stats, started)


def list_tree(root: Path) -> dict[str, Entry]:
    """Every path under ``root`` (``/`` for ``root`` itself), sorted, symlinks not followed."""
    return scan(root).entries
