"""Writes that are all or nothing: a temp name beside the target, then rename.

A build killed at any moment leaves either the old file, the new file, or a temp file
that no later step takes as an output (temp names start with ``.tmp-``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd temp file, then rename).

    ``durable=False`` leaves out the fsync, for a file inside a folder that is itself
    published by a rename and audited whenever it is reused (the extraction cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), durable=durable)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` only if the file's bytes differ; True when it wrote.

    Leaves the mtime of an unchanged file alone so later steps stay up to date.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_bytes(path, data)
    return True


@contextlib.contextmanager
def temp_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``.

    For files written by external tools (mkfs.erofs, downloads). On failure the temp
    path is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}"
    remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


@contextlib.contextmanager
def temp_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp directory beside ``path``; on success it replaces ``path``.

    The old tree is moved aside and removed only after the new one is in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        old = None
        if path.exists() or path.is_symlink():
            old = path.parent / f"{TMP_PREFIX}{path.name}.old.{os.getpid()}"
            remove(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            remove(old)
    except BaseException:
        remove(tmp)
        raise


@contextlib.contextmanager
def renewed_dir(path: Path) -> Iterator[tuple[Path, bool]]:
    """Yield ``path``'s tree moved to a temp name beside it, to be brought up to date in
    place (``True``), or an empty temp directory when ``path`` is no directory
    (``False``); on success the temp directory is renamed onto ``path``.

    While the caller works ``path`` does not exist, so a killed run never leaves a tree
    that looks complete: only a temp entry, which the next run's sweep removes. On failure
    the temp directory is removed (the old tree with it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}"
        remove(tmp)
        os.replace(path, tmp)
        reused = True
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
        reused = False
    try:
        yield tmp, reused
        if path.exists() or path.is_symlink():
            remove(path)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


# A temp entry this old in a shared cache is a leftover of a killed process: nothing
# fexstack writes takes an hour to extract or download.
STALE_SECONDS = 3600.0


def sweep(folder: Path, older_than: float = STALE_SECONDS) -> int:
    """Remove temp entries (``.tmp-*``) left in ``folder`` by killed processes.

    Only entries not modified for ``older_than`` seconds are removed, so a live writer in
    another process (a build of another project sharing the cache) is left alone.
    Returns how many were removed.
    """
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            if entry.lstat().st_mtime < cutoff:
                remove(entry)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def remove(path: Path) -> None:
    """Remove a file, symlink or tree if it exists (never follows a symlink)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
