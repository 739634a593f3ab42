"""Safe extraction of one RPM's payload into the per-RPM cache.

Three parts: :mod:`overlays.payload` reads the header and the cpio payload,
:mod:`overlays.safetree` writes without following symlinks, and this module checks each
entry against the header between them and keeps the cache.

Each package is extracted once, into ``<cache>/extracted/<sha256>/``::

    tree/        the payload, rooted at "/" (owned by whoever runs fexstack)
    meta.json    what is in tree/ (schema ``extracted``; see below)

The folder is built under a temp name and renamed into place, so an extraction killed at
any moment is never taken as done.

How an entry gets written: the header is read with python3-rpm (signature and digest
checks off: fetch verified the file's sha256 and signature), the payload (a newc cpio
archive) is decompressed and parsed here, and every entry is checked before anything is
written: its name must be relative with no ``.``, ``..`` or empty component; device nodes
and sockets are refused; the entry must be listed in the header with the same file type
and mode, regular files must match the header's digest, symlinks its link target. Files
are created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` relative to directory fds opened with
``O_NOFOLLOW`` one component at a time (each directory once per extraction: the fds are
kept in a :class:`DirFds` until the package is done), so nothing is ever written through a
symlink, whatever the payload holds.

Policy, recorded in meta.json:
- owners are not applied (the files belong to the user running fexstack; the image step
  makes them root); non-root owners from the header are listed per file;
- setuid/setgid bits are kept and listed (a deps overlay fails the check on them);
- file capabilities are dropped and listed (``caps_dropped``): keeping them would mean
  encoding ``security.capability`` xattrs, and a deps overlay has no use for them;
- FIFOs are created and listed; ``%ghost`` files are not created and are listed;
- every mtime is 0, so trees do not depend on when or in which order they were extracted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rpm

from fexstack import atomic, jsonio
from fexstack.errors import StageError
from overlays.payload import (
    CHUNK,
    DIGEST_ALGOS,
    NEWC_MAGIC,
    STRIPPED_MAGIC,
    TRAILER,
    CpioEntry,
    HeaderFile,
    Reader,
    file_type,
    header_files,
    open_payload,
    read_header,
    text,
)
from overlays.safetree import BAD_PARTS, CREATE_FILE, OPEN_DIR, DirFds, write_all

log = logging.getLogger("fexstack.extract")

EXTRACTED = "extracted"
ELF_MAGIC = b"\x7fELF"
FORMAT = 2  # 2: the record lists which contents are ELF
SCHEMA = "extracted"
META = "meta.json"  # beside tree/


def extracted_dir(cache: Path, sha256: str) -> Path:
    return cache / EXTRACTED / sha256


@dataclass(frozen=True)
class PackageId:
    """The package an RPM's header names."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str


@dataclass(frozen=True)
class ExtractedMeta:
    """``<cache>/extracted/<sha256>/meta.json`` (schema ``extracted``): what ``tree/`` holds.

    Written once by :func:`extract` (:meth:`write`), read back by the cache's reuse and the
    check step's digests (:meth:`read`); both validate against the schema. ``files`` maps
    each installed path to its entry as the schema describes it (type, mode, size, sha256,
    target, setuid, setgid, caps_dropped, user, group).
    """

    rpm_sha256: str
    package: PackageId
    files: Mapping[str, Mapping[str, Any]]
    ghosts: tuple[str, ...]  # %ghost files: in the header, not created
    setuid: tuple[str, ...]  # files with the setuid or setgid bit
    caps_dropped: Mapping[str, str]  # path -> file capabilities the header asked for
    fifos: tuple[str, ...]
    elf: frozenset[str] = frozenset()  # sha256 of the contents that start with the ELF magic

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rpm_sha256": self.rpm_sha256,
            "package": dataclasses.asdict(self.package),
            "files": {path: dict(entry) for path, entry in self.files.items()},
            "ghosts": list(self.ghosts),
            "setuid": list(self.setuid),
            "caps_dropped": dict(self.caps_dropped),
            "fifos": list(self.fifos),
            "elf": sorted(self.elf),
        }

    def write(self, path: Path, *, durable: bool = True) -> None:
        jsonio.write(path, self.to_json(), SCHEMA, durable=durable)

    @classmethod
    def read(cls, path: Path) -> ExtractedMeta:
        """The record at ``path``, validated. A published record never changes, and the
        stage, check and image steps of one build each read every one: this process
        reads and validates each file once, as long as its (device, inode, size, mtime,
        ctime) stays the same (any write moves the ctime)."""
        key = _identity(path)
        if key is None:
            return cls._parse(path)  # which says what is wrong with it
        known = _READ.get(key)
        if known is None:
            known = _READ[key] = cls._parse(path)
        return known

    @classmethod
    def _parse(cls, path: Path) -> ExtractedMeta:
        doc = jsonio.read_record(
            path,
            SCHEMA,
            error=StageError,
            what="extracted-package record",
            hint=f"remove {path.parent} and stage again: the package is extracted anew",
        )
        return cls(
            rpm_sha256=doc["rpm_sha256"],
            package=PackageId(**doc["package"]),
            files=doc["files"],
            ghosts=tuple(doc["ghosts"]),
            setuid=tuple(doc["setuid"]),
            caps_dropped=doc["caps_dropped"],
            fifos=tuple(doc["fifos"]),
            elf=frozenset(doc["elf"]),
        )


FileIdentity = tuple[str, int, int, int, int, int]  # path, device, inode, size, mtime, ctime
_READ: dict[FileIdentity, ExtractedMeta] = {}  # see ExtractedMeta.read


def _identity(path: Path) -> FileIdentity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember(done: Extracted) -> None:
    """Let :meth:`ExtractedMeta.read` in this process hand out the record another process
    (a stage worker) read and validated, or wrote, for ``done``: its file is identified as
    it is now, so a record rewritten since is read again."""
    key = _identity(done.tree.parent / META)
    if key is not None:
        _READ[key] = done.meta


@dataclass(frozen=True)
class Extracted:
    """One package's extracted payload in the cache."""

    sha256: str
    tree: Path
    meta: ExtractedMeta
    fresh: bool  # extracted by this call (False: reused from the cache)

    @property
    def name(self) -> str:
        return self.meta.package.name

    @property
    def files(self) -> Mapping[str, Mapping[str, Any]]:
        return self.meta.files


def extract(rpm_file: Path, sha256: str, *, cache: Path, package: str) -> Extracted:
    """The extracted payload of ``rpm_file`` (whose sha256 the lock says is ``sha256``).

    Reuses ``<cache>/extracted/<sha256>/`` when it is complete and its files still have
    the recorded types, sizes and modes; otherwise verifies the RPM's sha256 and extracts.
    """
    folder = extracted_dir(cache, sha256)
    reused = _reuse(folder, sha256)
    if reused is not None:
        return reused
    _check_sha256(rpm_file, sha256, package)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}{sha256}.", dir=folder.parent))
    try:
        os.chmod(tmp, 0o755)
        meta = _Extraction(rpm_file, sha256, package, tmp / "tree").run()
        # No fsync: the folder is published by one rename, its files are not fsync'd
        # either, and _reuse audits an entry (record and tree) before handing it out; one
        # fsync per package cost a fifth of a cold stage on a journaled file system.
        meta.write(tmp / META, durable=False)
        published = _publish(tmp, folder, sha256)
    except BaseException:
        atomic.remove(tmp)
        raise
    if published is not None:
        return published
    return Extracted(sha256=sha256, tree=folder / "tree", meta=meta, fresh=True)


def _publish(tmp: Path, folder: Path, sha256: str) -> Extracted | None:
    """Move a finished extraction into place; None when ours is the one in place.

    Another process (a build of another project sharing the cache) may have published
    the same package meanwhile and may be linking files out of it: a complete extraction
    already in place is kept and ours dropped; only a broken one is replaced.
    """
    try:
        os.rename(tmp, folder)
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    theirs = _reuse(folder, sha256)
    if theirs is not None:
        atomic.remove(tmp)
        return theirs
    broken = folder.parent / f"{atomic.TMP_PREFIX}{sha256}.broken.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):  # _reuse may have removed it already
        os.replace(folder, broken)
    os.rename(tmp, folder)
    atomic.remove(broken)
    return None


def _reuse(folder: Path, sha256: str) -> Extracted | None:
    meta_path = folder / META
    if not meta_path.exists():
        return None
    try:
        meta = ExtractedMeta.read(meta_path)  # written by extract(); audited against tree/
        if meta.rpm_sha256 != sha256:
            problem: str | None = f"written for another RPM ({meta.rpm_sha256})"
        else:
            problem = _audit(folder / "tree", meta)
    except StageError as exc:  # missing since, unreadable, or not an extracted record
        problem = exc.message
    except OSError as exc:  # the audit's lstat
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return Extracted(sha256=sha256, tree=folder / "tree", meta=meta, fresh=False)
    log.warning("extracted cache %s is damaged (%s); extracting again", folder, problem)
    atomic.remove(folder)
    return None


def _audit(tree: Path, meta: ExtractedMeta) -> str | None:
    """Cheap check that ``tree`` still holds what ``meta`` says (types, sizes, modes)."""
    root = str(tree)  # string joins: pathlib per file costs more than the lstat
    for path, entry in meta.files.items():
        if not path.startswith("/") or not BAD_PARTS.isdisjoint(path.split("/")[1:]):
            return f"{path!r} is not a clean absolute path"
        try:
            st = os.lstat(root + path)
        except FileNotFoundError:
            return f"{path} is missing"
        if file_type(st.st_mode) != entry["type"] or stat.S_IMODE(st.st_mode) != entry["mode"]:
            return f"{path} changed type or mode"
        if entry["type"] == "file" and st.st_size != entry["size"]:
            return f"{path} changed size"
    return None


def _check_sha256(rpm_file: Path, sha256: str, package: str) -> None:
    try:
        with open(rpm_file, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError as exc:
        raise StageError(
            f"package {package}: {rpm_file} is not in the cache",
            "run the fetch step first (doit fetch:<name>)",
        ) from exc
    if actual != sha256:
        raise StageError(
            f"package {package}: cached {rpm_file} has sha256 {actual}, the lock says {sha256}",
            "run the fetch step again: it replaces a damaged cached package",
        )


class _Extraction:
    """One extraction run: header facts, the tree being written, what was recorded."""

    def __init__(self, rpm_file: Path, sha256: str, package: str, tree: Path) -> None:
        self.rpm_file = rpm_file
        self.sha256 = sha256
        self.package = package
        self.tree = tree
        self.files: dict[str, dict[str, Any]] = {}
        self.dir_modes: dict[str, int] = {}
        self.digests: dict[str, str] = {}
        self.elf: set[str] = set()  # sha256 of contents that start with the ELF magic
        self.header: dict[str, HeaderFile] = {}
        self.by_index: list[str] = []
        self.last_link: dict[int, int] = {}  # inode -> highest index of its hardlink set
        self.algo = 0
        self.root_fd = -1
        self.dirs: DirFds | None = None

    def run(self) -> ExtractedMeta:
        hdr = read_header(self.rpm_file, self.package)
        self.header = header_files(hdr)
        self.by_index = sorted(self.header, key=lambda p: self.header[p].index)
        for known in self.header.values():
            if known.index > self.last_link.get(known.inode, -1):
                self.last_link[known.inode] = known.index
        self.algo = int(hdr[rpm.RPMTAG_FILEDIGESTALGO] or 1)  # absent means md5
        self.tree.mkdir(mode=0o755)
        self.root_fd = os.open(self.tree, OPEN_DIR)
        self.dirs = DirFds(self.root_fd, self._made)
        try:
            with open_payload(self.rpm_file, hdr, self.package) as stream:
                self._entries(Reader(stream, self.package))
            self._finish_dirs()
        finally:
            self.dirs.close()
            os.close(self.root_fd)
        missing = sorted(
            p for p, h in self.header.items() if not h.ghost and p not in self.files and p != "/"
        )
        if missing:
            raise self._error(missing[0], "is listed in the header but not in the payload")
        return self._meta(hdr)

    def _error(self, path: str, what: str) -> StageError:
        return StageError(
            f"package {self.package} ({self.rpm_file.name}): payload entry {path!r} {what}",
            "the package is malformed or hostile; nothing was staged from it "
            "(drop it from the stack's seeds or exclude it, then re-lock)",
        )

    def _entries(self, reader: Reader) -> None:
        pending: dict[int, list[str]] = {}  # hardlink groups still waiting for their data
        written: dict[int, str] = {}  # hardlink groups: inode -> path holding the data
        assert self.dirs is not None
        while True:
            self.dirs.trim()
            entry = self._next(reader)
            if entry.name == TRAILER:
                break
            if entry.name in (".", "./") and stat.S_ISDIR(entry.mode) and "/" in self.header:
                self._skip(reader, entry)  # the root itself (a base's filesystem package)
                continue
            path = self._check(entry)
            kind = file_type(entry.mode)
            if kind == "file" and entry.nlink > 1:
                if entry.ino in written:
                    self._skip(reader, entry)
                    self._link(written[entry.ino], path)
                elif entry.size == 0:
                    pending.setdefault(entry.ino, []).append(path)
                    self._record(path, entry)
                    continue
                else:
                    self._file(reader, path, entry)
                    written[entry.ino] = path
                    for other in pending.pop(entry.ino, []):
                        self._link(path, other)
                self._record(path, entry)
            elif kind == "file":
                self._file(reader, path, entry)
                self._record(path, entry)
            elif kind == "dir":
                self._skip(reader, entry)
                self._dir(path, entry.mode)
                self._record(path, entry)
            elif kind == "symlink":
                if not 0 < entry.size <= 4096:
                    raise self._error(path, f"is a symlink with a {entry.size}-byte target")
                target = reader.exact(entry.size)
                reader.align()
                self._symlink(path, target)
                self._record(path, entry, target=target)
            elif kind == "fifo":
                self._skip(reader, entry)
                parent, name = self._parent(path)
                os.mkfifo(name, stat.S_IMODE(entry.mode), dir_fd=parent)
                self._stamp(path)
                self._record(path, entry)
            else:
                raise self._error(path, f"is a {kind}: refused (no device nodes or sockets)")
        for group in pending.values():  # empty hardlinked files: no entry carried data
            self.dirs.trim()
            first, *others = group
            self._write(first, b"", self.files[first]["mode"])
            for other in others:
                self._link(first, other)
        for path, record in self.files.items():
            if record["type"] == "file" and "sha256" not in record:
                self.dirs.trim()
                self._check_digest(path, self._hash(path))

    def _next(self, reader: Reader) -> CpioEntry:
        magic = reader.exact(6)
        if magic == STRIPPED_MAGIC:
            return self._next_stripped(reader)
        if magic != NEWC_MAGIC:
            raise StageError(
                f"package {self.package}: payload entry at byte {reader.offset - 6} is not "
                f"a cpio header (magic {magic!r})",
                "the package is malformed, or uses a payload layout fexstack does not read",
            )
        head = magic + reader.exact(104)
        try:
            fields = [int(head[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise StageError(
                f"package {self.package}: corrupt cpio header at byte {reader.offset - 110}",
                "the package is malformed",
            ) from exc
        namesize = fields[11]
        if not 1 <= namesize <= 4096:
            raise StageError(
                f"package {self.package}: cpio entry name of {namesize} bytes",
                "the package is malformed",
            )
        raw = reader.exact(namesize)
        reader.align()
        try:
            name = raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(repr(raw), "is not a UTF-8 file name") from exc
        if "\0" in name:
            raise self._error(name, "contains a NUL byte")
        return CpioEntry(name=name, ino=fields[0], mode=fields[1], nlink=fields[4], size=fields[6])

    def _next_stripped(self, reader: Reader) -> CpioEntry:
        """An entry of rpm 6's stripped cpio: a file index into the header, then the data.

        Metadata comes from the header. Data follows for regular files (for a hardlink set,
        only the member with the highest index) and for symlinks (the target).
        """
        raw = reader.exact(8)
        reader.align()
        try:
            index = int(raw, 16)
            path = self.by_index[index]
        except (ValueError, IndexError) as exc:
            raise StageError(
                f"package {self.package}: payload names file index {raw!r}, which is not "
                "in the header",
                "the package is malformed",
            ) from exc
        known = self.header[path]
        size = 0
        if stat.S_ISLNK(known.mode):
            size = len(known.linkto.encode("utf-8"))
        elif stat.S_ISREG(known.mode) and (
            known.nlink <= 1 or index == self.last_link[known.inode]
        ):
            size = known.size
        return CpioEntry(
            name="." + path, ino=known.inode, mode=known.mode, nlink=known.nlink, size=size
        )

    def _check(self, entry: CpioEntry) -> str:
        """The entry's absolute path, once its name, type and header record check out."""
        name = entry.name
        if name.startswith("./"):
            name = name[2:]
        if name.startswith("/"):
            raise self._error(entry.name, "is an absolute name: refused")
        parts = name.split("/")
        if ".." in parts:
            raise self._error(entry.name, "has a '..' component: refused")
        if any(p in ("", ".") for p in parts):
            raise self._error(entry.name, "has an empty or '.' component: refused")
        path = "/" + name
        kind = file_type(entry.mode)
        if kind not in ("file", "dir", "symlink", "fifo"):
            raise self._error(path, f"is a {kind}: refused (no device nodes or sockets)")
        if path in self.files:
            raise self._error(path, "appears twice in the payload")
        known = self.header.get(path)
        if known is None or known.ghost:
            raise self._error(path, "is not listed in the package's header")
        if known.mode != entry.mode:
            raise self._error(path, f"has mode {entry.mode:o} but the header says {known.mode:o}")
        return path

    def _parent(self, path: str) -> tuple[int, str]:
        """An fd of ``path``'s parent (made if missing, never through a symlink) and its name.

        The fd belongs to ``self.dirs`` (closed when the extraction ends): do not close it.
        """
        assert self.dirs is not None
        try:
            return self.dirs.parent(path)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._error(
                    path, f"would be written through {exc.filename}, which is not a directory"
                ) from exc
            if exc.errno == errno.EINVAL:
                raise self._error(path, "has an empty, '.' or '..' component: refused") from exc
            raise

    def _made(self, path: str) -> None:
        self.dir_modes.setdefault(path, 0o755)

    def _skip(self, reader: Reader, entry: CpioEntry) -> None:
        remaining = entry.size
        while remaining:
            remaining -= len(reader.exact(min(CHUNK, remaining)))
        reader.align()

    def _file(self, reader: Reader, path: str, entry: CpioEntry) -> None:
        parent, name = self._parent(path)
        digest = hashlib.sha256()
        try:
            fd = os.open(name, CREATE_FILE, 0o600, dir_fd=parent)
        except FileExistsError as exc:
            raise self._error(path, "is written twice") from exc
        elf = False
        try:
            remaining = entry.size
            while remaining:
                chunk = reader.exact(min(CHUNK, remaining))
                if remaining == entry.size:
                    elf = chunk.startswith(ELF_MAGIC)
                remaining -= len(chunk)
                digest.update(chunk)
                write_all(fd, chunk)
            os.fchmod(fd, stat.S_IMODE(entry.mode))
            os.utime(fd, ns=(0, 0))
        finally:
            os.close(fd)
        reader.align()
        self._check_digest(path, digest.hexdigest())
        if elf:
            self.elf.add(digest.hexdigest())

    def _write(self, path: str, data: bytes, mode: int) -> None:
        parent, name = self._parent(path)
        fd = os.open(name, CREATE_FILE, 0o600, dir_fd=parent)
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            os.utime(fd, ns=(0, 0))
        finally:
            os.close(fd)

    def _hash(self, path: str) -> str:
        parent, name = self._parent(path)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        with os.fdopen(fd, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    def _check_digest(self, path: str, sha256: str) -> None:
        """Compare a written file with the header's digest; remember its sha256."""
        known = self.header[path]
        algo = DIGEST_ALGOS.get(self.algo)
        if algo is None:
            raise self._error(path, f"uses file digest algorithm {self.algo}, which is unknown")
        if algo == "sha256":
            actual = sha256
        else:
            parent, name = self._parent(path)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            with os.fdopen(fd, "rb") as fh:
                actual = hashlib.file_digest(fh, algo).hexdigest()
        if actual != known.digest:
            raise self._error(path, f"has {algo} {actual} but the header says {known.digest}")
        self.digests[path] = sha256
        if path in self.files:
            self.files[path]["sha256"] = sha256

    def _link(self, source: str, path: str) -> None:
        if self.header[source].mode != self.header[path].mode:
            raise self._error(path, f"is a hardlink of {source} with a different mode")
        src_parent, src_name = self._parent(source)
        dst_parent, dst_name = self._parent(path)
        try:
            os.link(
                src_name,
                dst_name,
                src_dir_fd=src_parent,
                dst_dir_fd=dst_parent,
                follow_symlinks=False,
            )
        except FileExistsError as exc:
            raise self._error(path, "is written twice") from exc

    def _dir(self, path: str, mode: int) -> None:
        parent, name = self._parent(path)
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise self._error(path, "is a directory and also something else") from None
        self.dir_modes[path] = stat.S_IMODE(mode)

    def _symlink(self, path: str, target: bytes) -> None:
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(path, "is a symlink whose target is not UTF-8") from exc
        if not text or "\0" in text:
            raise self._error(path, "is a symlink with an empty or NUL-holding target")
        if text != self.header[path].linkto:
            raise self._error(
                path, f"links to {text!r} but the header says {self.header[path].linkto!r}"
            )
        parent, name = self._parent(path)
        try:
            os.symlink(text, name, dir_fd=parent)
        except FileExistsError as exc:
            raise self._error(path, "is written twice") from exc
        self._stamp(path)

    def _stamp(self, path: str) -> None:
        parent, name = self._parent(path)
        os.utime(name, ns=(0, 0), dir_fd=parent, follow_symlinks=False)

    def _finish_dirs(self) -> None:
        """Apply directory modes and zero mtimes, deepest first (children change parents)."""
        assert self.dirs is not None
        for path in sorted(self.dir_modes, key=lambda p: (-p.count("/"), p)):
            self.dirs.trim()
            parent, name = self._parent(path)
            os.chmod(name, self.dir_modes[path], dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=(0, 0), dir_fd=parent, follow_symlinks=False)
        os.chmod(self.root_fd, 0o755)
        os.utime(self.root_fd, ns=(0, 0))

    def _record(self, path: str, entry: CpioEntry, target: bytes | None = None) -> None:
        known = self.header[path]
        kind = file_type(entry.mode)
        mode = stat.S_IMODE(entry.mode)
        record: dict[str, Any] = {"type": kind, "mode": mode}
        if kind == "file":
            record["size"] = known.size if entry.nlink > 1 else entry.size
            if path in self.digests:
                record["sha256"] = self.digests[path]
        if target is not None:
            record["target"] = target.decode("utf-8")
        if kind != "dir" and mode & stat.S_ISUID:
            record["setuid"] = True
        if kind != "dir" and mode & stat.S_ISGID:
            record["setgid"] = True
        if known.caps:
            record["caps_dropped"] = known.caps
        if known.user != "root":
            record["user"] = known.user
        if known.group != "root":
            record["group"] = known.group
        self.files[path] = record

    def _meta(self, hdr: rpm.hdr) -> ExtractedMeta:
        epoch = hdr[rpm.RPMTAG_EPOCH]
        package = PackageId(
            name=text(hdr[rpm.RPMTAG_NAME]),
            epoch=int(epoch) if epoch is not None else 0,
            version=text(hdr[rpm.RPMTAG_VERSION]),
            release=text(hdr[rpm.RPMTAG_RELEASE]),
            arch=text(hdr[rpm.RPMTAG_ARCH] or "noarch"),
        )
        files = self.files
        return ExtractedMeta(
            rpm_sha256=self.sha256,
            package=package,
            files=files,
            ghosts=tuple(sorted(p for p, h in self.header.items() if h.ghost)),
            setuid=tuple(
                sorted(p for p, f in files.items() if f.get("setuid") or f.get("setgid"))
            ),
            caps_dropped={p: f["caps_dropped"] for p, f in files.items() if "caps_dropped" in f},
            fifos=tuple(sorted(p for p, f in files.items() if f["type"] == "fifo")),
            elf=frozenset(self.elf),
        )
