"""Reading an EROFS image back through the kernel: a private, read-only mount, listed and hashed.

The read-back's fast way (see :mod:`overlays.readback`). A child Python process enters a
mount namespace of its own (``unshare(CLONE_NEWNS)``, every mount made private so nothing
propagates out), mounts the image read-only with mount(2) (a file-backed EROFS mount,
Linux 6.12+, no loop device; an image on tmpfs cannot be mounted that way, and through a
loop device the read-back was slower than extracting), scans the mount exactly like a
staged tree (:func:`overlays.treescan.scan`: listing, sha256 of every regular file) and
prints the entries as one JSON array of rows. The mount exists only in that
namespace: it goes away with the child however the child ends, and no other process ever
sees it.

The child has no other thread, so it hashes in forked processes, which, unlike threads,
do not queue for one interpreter lock (0.64-0.78 s instead of 0.79-1.05 s for a 290 MB
image of 28,865 files on 2 cores: benchmarks/RESULTS.md). The read-back of an image
extracted with ``fsck.erofs`` lists its copy through the same child
(:func:`list_in_child`), for the same reason: the build process has threads running beside
the read-back.

Nothing is written: no extracted copy of the image, no 30,000 files created and deleted.
The kernel's EROFS driver decodes every block that is hashed, so a file that does not
decode fails the read-back (EIO), as with ``fsck.erofs --extract``; and it is the reader
the overlay will have in use (the muvm guest's kernel, the native backend's overlayfs).

It needs root (CAP_SYS_ADMIN) and EROFS in the kernel. When the child cannot mount (not
root, no EROFS, an image on tmpfs, a mount the kernel refuses), it exits with
:data:`UNAVAILABLE` and the read-back extracts the image with ``fsck.erofs`` instead, which
also names what is wrong with a damaged image.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fexstack import atomic, command
from fexstack.errors import FexstackError, ImageError
from overlays.treescan import HASH_JOBS, Entry, scan

UNAVAILABLE = 75  # the child's exit status when it cannot mount (EX_TEMPFAIL)
# mount(2) flags (linux/mount.h).
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 1 << 14, 1 << 18
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # holds fexstack/ and overlays/


class Unavailable(FexstackError):
    """The kernel read-back cannot run here (no privilege, no EROFS, mount refused)."""


def _entry_row(entry: Entry) -> list[object]:
    return [entry.path, entry.kind, entry.mode, entry.size, entry.sha256, entry.target]


def _entry(row: Sequence[object]) -> Entry:
    path, kind, mode, size, sha256, target = row
    return Entry(
        str(path),
        str(kind),
        int(str(mode)),
        int(str(size)),
        None if sha256 is None else str(sha256),
        None if target is None else str(target),
    )


def list_mounted(image: Path, *, jobs: int | None = None) -> dict[str, Entry]:
    """The listing of ``image``'s contents as the kernel shows them (see the module doc).

    Raises :class:`Unavailable` when the image cannot be mounted here, and
    :class:`~fexstack.errors.ImageError` when it mounts but does not read back.
    """
    if os.geteuid() != 0 or not hasattr(os, "unshare"):  # unshare: Python 3.12+
        raise Unavailable("mounting an EROFS image needs root")
    folder = image.parent
    mountpoint = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}{image.name}.mnt.", dir=folder))
    try:
        proc = _run_child(["mount", image, mountpoint], jobs)
    finally:
        os.rmdir(mountpoint)  # empty out here: the mount was in the child's namespace only
    said = _said(proc)
    if proc.returncode == UNAVAILABLE:
        raise Unavailable(f"{image}: cannot mount it here: {said}")
    if proc.returncode != 0:
        raise ImageError(
            f"{image}: the kernel could not read the image back: {said}",
            "the image is damaged or was made by an incompatible mkfs.erofs; rebuild it",
        )
    return _entries(proc)


def list_in_child(tree: Path, *, jobs: int | None = None) -> dict[str, Entry]:
    """:func:`overlays.treescan.scan` of ``tree`` in the child program (hashing in forked
    processes however many threads the caller has running); its entries."""
    proc = _run_child(["tree", tree], jobs)
    if proc.returncode != 0:
        raise ImageError(
            f"{tree}: cannot list the extracted image: {_said(proc)}",
            "the scratch folder changed while it was read, or ran out of room; re-run the step",
        )
    return _entries(proc)


def _run_child(args: list[command.Arg], jobs: int | None) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")))
        )
    }
    argv: list[command.Arg] = [sys.executable, "-m", "overlays.imagemount", *args]
    argv.append(str(jobs or HASH_JOBS))
    return command.run(argv, env=env, check=False)


def _said(proc: subprocess.CompletedProcess[bytes]) -> str:
    return (proc.stderr or b"").decode("utf-8", "replace").strip()


def _entries(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for row in json.loads(proc.stdout or b"[]"):  # one document: one parse for 30,000 rows
        entry = _entry(row)
        entries[entry.path] = entry
    return entries


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    """mount(2), raising OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    encoded = [None if v is None else os.fsencode(v) for v in (source, target, fstype)]
    if libc.mount(*encoded, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _child(image: str, mountpoint: str, jobs: int) -> int:
    try:
        unshare: Any = getattr(os, "unshare")  # noqa: B009 (Python 3.12+, Linux)
        unshare(getattr(os, "CLONE_NEWNS"))  # noqa: B009
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        # The kernel mounts the file itself (no loop device): on a file system without
        # read_folio (tmpfs) it refuses, and the read-back extracts instead, since a loop
        # device there made the read-back slower than extracting (benchmarks/RESULTS.md).
        _mount(image, mountpoint, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID | MS_NOEXEC)
    except OSError as exc:
        print(str(exc), file=sys.stderr)
        return UNAVAILABLE
    status = _list(mountpoint, jobs)
    if status == 0:
        _end_in_background()
    return status  # the namespace, and the mount with it, ends with this process


def _end_in_background() -> NoReturn:
    """End now, the answer written, and let the mount go away while the build goes on.

    The namespace, and with it the mount, ends when its last process does; unmounting
    frees every page of the image the read-back decoded (0.16-0.19 s for 290 MB). A
    forked copy that has let go of the caller's pipes holds the namespace until this
    process has exited (it waits for the end of a pipe only this process holds open),
    then ends, and the mount with it. Nothing outlives that copy: it has no work left.
    Both skip the interpreter's teardown (freeing 30,000 entries one by one: another
    0.15-0.2 s): everything is written and flushed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    gone, alive = os.pipe()
    if os.fork() == 0:
        os.close(alive)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.read(gone, 1)  # end of file once the process that forked this one has exited
    _done()


def _list(tree: str, jobs: int) -> int:
    try:
        listing = scan(Path(tree), jobs=jobs, processes=True)
    except FexstackError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps([_entry_row(entry) for entry in listing.entries.values()]))
    sys.stdout.flush()
    return 0


def _done() -> NoReturn:
    """Exit 0 without the interpreter's teardown (see :func:`_end_in_background`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: Sequence[str]) -> int:
    """``mount IMAGE MOUNTPOINT JOBS`` or ``tree DIR JOBS``: the listing as JSON rows."""
    if len(argv) == 4 and argv[0] == "mount":
        return _child(argv[1], argv[2], int(argv[3]))
    if len(argv) == 3 and argv[0] == "tree":
        status = _list(argv[1], int(argv[2]))
        if status == 0:
            _done()
        return status
    print("usage: python3 -m overlays.imagemount mount IMAGE MOUNTPOINT JOBS | tree DIR JOBS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
