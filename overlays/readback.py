"""Reading an EROFS image back and comparing it with its tree.

As root, the image is read through the kernel from a mount private to a child process
(:mod:`overlays.imagemount`: nothing is written). Otherwise (or with
``FEXSTACK_READBACK=extract``) it is unpacked with ``fsck.erofs --extract`` (which also
checks that every file decodes) into a scratch folder. Both trees are listed the same way,
and any difference in
paths, types, permission bits, sizes, symlink targets or file contents (sha256 of every
regular file, on both sides) is an :class:`~fexstack.errors.ImageError`. Ownership and
timestamps are not compared: the image makes every file root's and every timestamp 0 on
purpose.

Cost: the scratch folder is in a tmpfs (``$XDG_RUNTIME_DIR``, else ``/dev/shm``) when one
has room for the unpacked image, since creating 30,000 files on a disk can take many
seconds; otherwise beside the image. The image's files (mounted or extracted) are listed
and hashed in a child process that forks hashing processes (:mod:`overlays.imagemount`);
the staged tree's, when it must be read, in threads. The staged tree can be scanned while
mkfs.erofs runs and re-scanned after it (:func:`scan` with ``previous``), re-reading only
files whose lstat facts changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fexstack import atomic, command
from fexstack.errors import FexstackError, ImageError
from overlays import imagemount
from overlays.treescan import (  # the tree listing, used here and re-exported
    Entry,
    Listing,
    scan,
)

FSCK = "fsck.erofs"
SHOWN_DIFFERENCES = 10

# RAM-backed folders for the read-back's scratch tree (after $XDG_RUNTIME_DIR).
TMPFS_DIRS: tuple[str, ...] = ("/dev/shm",)
TMPFS_RESERVE = 256 * 1024 * 1024  # bytes a tmpfs must keep free after the extraction
PAGE = 4096
SCRATCH_PREFIX = "fexstack-readback."
SWEEP_AFTER = 60.0  # seconds before an unlocked scratch folder counts as abandoned
METHOD_ENV = "FEXSTACK_READBACK"
METHODS = ("auto", "mount", "extract")  # see list_image()


def differences(
    expected: Mapping[str, Entry], actual: Mapping[str, Entry], *, limit: int = SHOWN_DIFFERENCES
) -> list[str]:
    """Up to ``limit`` lines describing how ``actual`` (the image) differs from ``expected``."""
    found: list[str] = []
    for path in sorted(set(expected) | set(actual)):
        want, got = expected.get(path), actual.get(path)
        if want is None:
            found.append(f"{path}: in the image, not in the tree")
        elif got is None:
            found.append(f"{path}: in the tree, missing from the image")
        elif want != got:
            for field in ("kind", "target", "mode", "size", "sha256"):
                a, b = getattr(want, field), getattr(got, field)
                if a != b:
                    if field == "mode":
                        a, b = f"{a:04o}", f"{b:04o}"
                    found.append(f"{path}: {field} is {b} in the image, {a} in the tree")
                    break
        if len(found) >= limit:
            break
    return found


def _room_needed(entries: Mapping[str, Entry]) -> tuple[int, int]:
    """Bytes and inodes an extraction of ``entries`` takes on a tmpfs (whole pages)."""
    pages = sum(-(-e.size // PAGE) if e.kind == "file" else 1 for e in entries.values())
    return pages * PAGE, len(entries)


def _room_known(known: Mapping[str, tuple[str, int]]) -> tuple[int, int]:
    """:func:`_room_needed` from the files' (sha256, size) alone: folders and symlinks
    are guessed at one more page and inode for every four files."""
    pages = sum(-(-size // PAGE) for _, size in known.values())
    extra = len(known) // 4 + 1
    return (pages + extra) * PAGE, len(known) + extra


def _tmpfs_with_room(need_bytes: int, need_inodes: int) -> Path | None:
    """The first RAM-backed folder (``$XDG_RUNTIME_DIR``, :data:`TMPFS_DIRS`) with room.

    Room means the extraction fits and still leaves :data:`TMPFS_RESERVE` bytes or a
    twentieth of the file system free, whichever is more.
    """
    candidates = [os.environ.get("XDG_RUNTIME_DIR", ""), *TMPFS_DIRS]
    for folder in filter(None, candidates):
        try:
            vfs = os.statvfs(folder)
        except OSError:
            continue
        if not os.access(folder, os.W_OK | os.X_OK):
            continue
        free = vfs.f_bavail * vfs.f_frsize
        reserve = max(TMPFS_RESERVE, vfs.f_blocks * vfs.f_frsize // 20)
        inodes_ok = vfs.f_files == 0 or vfs.f_favail >= need_inodes + 1024
        if free >= need_bytes + reserve and inodes_ok:
            return Path(folder)
    return None


def _sweep(folder: Path) -> None:
    """Remove read-back scratch folders of builds that died (their lock is free)."""
    for lock in folder.glob(f"{SCRATCH_PREFIX}*.lock"):
        try:
            if time.time() - lock.stat().st_mtime < SWEEP_AFTER:
                continue
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its build is still running
        try:
            _remove_tree(lock.with_name(lock.name.removesuffix(".lock")))
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _tmpfs_scratch(folder: Path) -> Iterator[Path]:
    """A temp folder in the RAM-backed ``folder``, held by a lock a later sweep respects."""
    _sweep(folder)
    fd, lock_name = tempfile.mkstemp(prefix=SCRATCH_PREFIX, suffix=".lock", dir=folder)
    lock = Path(lock_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = lock.with_name(lock.name.removesuffix(".lock"))
        tmp.mkdir(mode=0o700)
        try:
            yield tmp
        finally:
            _remove_tree(tmp)
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def scratch_dir(near: Path, *, room: tuple[int, int] | None = None) -> Iterator[Path]:
    """A temp folder for a read-back, removed afterwards in any case.

    With ``room`` (bytes, inodes: see :func:`_room_needed`) it is in a tmpfs that has that
    much room to spare (creating 30,000 files there costs a fraction of what it costs on a
    disk); otherwise, or when none has, it is beside ``near`` (same file system).
    """
    ram = _tmpfs_with_room(*room) if room is not None else None
    if ram is not None:
        with _tmpfs_scratch(ram) as tmp:
            yield tmp
        return
    near.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{atomic.TMP_PREFIX}{near.name}.readback."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=near.parent))
    try:
        yield tmp
    finally:
        _remove_tree(tmp)


def _remove_tree(path: Path) -> None:
    """Remove an extracted tree, also when it holds read-only folders."""
    for folder, dirs, _files in os.walk(path):
        for name in dirs:
            full = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                if not stat.S_ISLNK(os.lstat(full).st_mode):
                    os.chmod(full, 0o700)
    atomic.remove(path)


def extract(image: Path, dest: Path) -> None:
    """Unpack ``image`` into ``dest`` (which must not exist) with exact permission bits."""
    hint = "the image is damaged or was made by an incompatible mkfs.erofs; rebuild it"
    try:
        proc = command.run(
            [
                FSCK,
                f"--extract={dest}",
                "--preserve-perms",
                "--no-preserve-owner",  # owners are not compared; saves a chown per file
                os.fspath(image),
            ]
        )
    except FexstackError as exc:
        raise ImageError(
            f"{image}: fsck.erofs could not read the image back: {exc.message}", hint
        ) from exc
    if not dest.is_dir() or dest.is_symlink():
        # fsck.erofs 1.9.4 exits 0 when the superblock checksum is wrong, extracting nothing.
        said = (proc.stderr or b"").decode(errors="replace").strip()
        raise ImageError(
            f"{image}: fsck.erofs extracted nothing" + (f": {said}" if said else ""), hint
        )


def readback_method() -> str:
    """How images are read back: ``$FEXSTACK_READBACK`` (see :data:`METHODS`), else auto."""
    method = os.environ.get(METHOD_ENV, "") or "auto"
    if method not in METHODS:
        raise ImageError(
            f"{METHOD_ENV}={method!r} is not one of {', '.join(METHODS)}",
            f"unset {METHOD_ENV} (auto: through the kernel when root, else fsck.erofs)",
        )
    return method


def list_image(
    image: Path,
    *,
    near: Path | None = None,
    room: tuple[int, int] | None = None,
    jobs: int | None = None,
    method: str | None = None,
) -> dict[str, Entry]:
    """The listing of ``image``'s contents.

    ``method`` (default :func:`readback_method`): ``mount`` reads it through the kernel
    (:mod:`overlays.imagemount`), ``extract`` unpacks it with fsck.erofs into a scratch
    folder (see :func:`scratch_dir`; ``room`` is what the extraction needs, when known) and
    lists that; ``auto`` mounts when it can, else extracts.
    """
    method = method or readback_method()
    if method in ("auto", "mount"):
        try:
            return imagemount.list_mounted(image, jobs=jobs)
        except imagemount.Unavailable:
            if method == "mount":
                raise
    with scratch_dir(near or image, room=room) as tmp:
        root = tmp / "root"
        extract(image, root)
        return imagemount.list_in_child(root, jobs=jobs)


def verify_image(
    image: Path,
    tree: Path,
    *,
    expected: Mapping[str, Entry] | None = None,
    staged: Listing | None = None,
    name: Path | None = None,
    known: Mapping[str, tuple[str, int]] | None = None,
) -> dict[str, Entry]:
    """Check that ``image`` holds exactly ``tree``; return the image's listing (equal to it).

    ``expected`` is ``tree``'s listing when the caller already has it. ``staged`` is an
    earlier :func:`scan` of ``tree`` (taken while mkfs.erofs ran): ``tree`` is then scanned
    again while the image is read back, re-hashing only files whose lstat facts changed,
    so the comparison is with the tree as it is now; so is a tree given with ``known``
    alone, scanned once beside the read-back. ``name`` is the path to name in
    errors (the final path when ``image`` is still a temp file). ``known`` is passed to
    the re-scan (see :func:`~overlays.treescan.scan`). Raises
    :class:`ImageError` naming the first differences.
    """
    if expected is not None:
        want = dict(expected)
        got = list_image(image, room=_room_needed(want))
    elif staged is not None or known is not None:
        # The tree is scanned beside the read-back, hashing only what neither ``staged``
        # nor ``known`` vouches for.
        room = _room_needed(staged.entries) if staged is not None else _room_known(known or {})
        with ThreadPoolExecutor(1, thread_name_prefix="fexstack-rescan") as pool:
            again = pool.submit(scan, tree, previous=staged, jobs=1, known=known)
            got = list_image(image, room=room)
            want = again.result().entries
    else:
        want = scan(tree).entries
        got = list_image(image, room=_room_needed(want))
    diff = differences(want, got)
    if diff:
        raise ImageError(
            f"{name or image}: read-back does not match {tree}:\n  " + "\n  ".join(diff),
            "the staging tree changed while the image was built, or mkfs.erofs lost "
            "something; re-run the stage and image steps",
        )
    return got
