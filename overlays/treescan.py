"""Listing a tree for the read-back: every path's type, mode, size, link target and
sha256 (files hashed in threads or forked processes while the walk goes on), and re-scans
that hash only what changed."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import cores
from fexstack.errors import ImageError

# Hashing workers (threads, or forked processes for a caller with no other thread):
# more than 4 gains nothing here.
HASH_JOBS = max(1, min(4, os.cpu_count() or 1))
HASH_BATCH = 64  # files per task handed to a hashing worker
HASH_BATCH_BYTES = 8 << 20  # ... or fewer files holding this many bytes
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


def _hash_batch_in_worker(
    batch: Sequence[tuple[str, str, int]],
) -> tuple[list[tuple[str, str]], tuple[str, str | None] | None]:
    """:func:`_hash_batch` in a worker process: an error comes back as (message, hint),
    which pickling an exception would lose."""
    try:
        return _hash_batch(batch), None
    except ImageError as exc:
        return [], (exc.message, exc.hint)


class _Hashing:
    """Regular files hashed while the walk goes on: handed out in batches (:data:`HASH_BATCH`
    files or :data:`HASH_BATCH_BYTES`, whichever comes first) to ``jobs`` threads, or to
    ``jobs`` forked processes when ``processes`` (the caller must be single-threaded:
    Python's per-file work holds the GIL, so threads share one core for it). Fewer than
    two batches in all are hashed here, without workers."""

    def __init__(self, jobs: int, processes: bool) -> None:
        self.jobs = jobs
        self.processes = processes
        self.batch: list[tuple[str, str, int]] = []
        self.batch_bytes = 0
        self.waiting: list[list[tuple[str, str, int]]] = []
        self.pool: Executor | None = None
        self.futures: list[Future[Any]] = []

    def add(self, path: str, full: str, size: int) -> None:
        self.batch.append((path, full, size))
        self.batch_bytes += size
        if len(self.batch) >= HASH_BATCH or self.batch_bytes >= HASH_BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        if self.pool is None:
            self.waiting.append(batch)
            if self.jobs <= 1 or len(self.waiting) < 2:
                return
            self.pool = self._start()
            waiting, self.waiting = self.waiting, []
            for earlier in waiting:
                self._submit(earlier)
            return
        self._submit(batch)

    def _start(self) -> Executor:
        if self.processes:
            workers = cores.processes(self.jobs, self.jobs)
            if workers > 1:
                context = multiprocessing.get_context("fork")
                return ProcessPoolExecutor(workers, mp_context=context)
        return ThreadPoolExecutor(self.jobs, thread_name_prefix="fexstack-hash")

    def _submit(self, batch: list[tuple[str, str, int]]) -> None:
        assert self.pool is not None
        work = _hash_batch_in_worker if self.processes else _hash_batch
        self.futures.append(self.pool.submit(work, batch))

    def digests(self) -> dict[str, str]:
        """``{path: sha256}`` of every file added."""
        if self.pool is None:
            rest = [f for batch in self.waiting for f in batch] + self.batch
            return dict(_hash_batch(rest))
        if self.batch:
            self._submit(self.batch)
            self.batch = []
        found: dict[str, str] = {}
        try:
            for future in self.futures:
                result = future.result()
                if self.processes:
                    done, error = result
                    if error is not None:
                        raise ImageError(*error)
                else:
                    done = result
                found.update(done)
        except BrokenProcessPool as exc:
            raise ImageError(
                f"a process hashing files died: {exc}",
                "re-run the step; if it fails again, check the kernel log (out of memory?)",
            ) from exc
        finally:
            self.close()
        return found

    def close(self) -> None:
        """Stop the workers (at once: work not yet started is dropped)."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def scan(
    root: Path,
    *,
    previous: Listing | None = None,
    jobs: int | None = None,
    known: Mapping[str, tuple[str, int]] | None = None,
    processes: bool = False,
) -> Listing:
    """List ``root`` like :func:`list_tree`, hashing regular files in ``jobs`` threads
    (forked processes with ``processes``, for a caller with no other thread: see
    :class:`_Hashing`) while the walk goes on.

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
    reuse_before = previous.started_ns - RACY_NS if previous is not None else 0
    entries: dict[str, Entry] = {}
    stats: dict[str, Signature] = {}
    hashing = _Hashing(jobs if jobs is not None else HASH_JOBS, processes)
    hashed: list[tuple[str, int, int]] = []  # path, mode, size of the files being hashed

    def add(path: str, full: str, st: os.stat_result) -> None:
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
                hashing.add(path, full, st.st_size)
                hashed.append((path, mode, st.st_size))
        elif kind == "symlink":
            target = os.readlink(full)
            entries[path] = Entry(path, kind, mode, len(os.fsencode(target)), target=target)
        else:
            entries[path] = Entry(path, kind, mode, 0)

    try:
        add("/", top, st_root)
        stack: list[tuple[str, str]] = [("", top)]
        while stack:
            prefix, folder = stack.pop()
            with os.scandir(folder) as it:
                children = [(e.name, e.path, e.stat(follow_symlinks=False)) for e in it]
            for name, full, st in children:
                _check_name(full, name)
                path = f"{prefix}/{name}"
                add(path, full, st)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path, full))
        digests = hashing.digests()
    finally:
        hashing.close()
    for path, mode, size in hashed:
        entries[path] = Entry(path, "file", mode, size, sha256=digests[path])
    return Listing(dict(sorted(entries.items())), stats, started)


def list_tree(root: Path) -> dict[str, Entry]:
    """Every path under ``root`` (``/`` for ``root`` itself), sorted, symlinks not followed."""
    return scan(root).entries
