"""Reading an EROFS image back, without mounting it, and comparing it with its tree.

The image is unpacked with ``fsck.erofs --extract`` (which also checks that every file
decodes) into a scratch folder beside it, both trees are listed the same way, and any
difference in paths, types, permission bits, sizes, symlink targets or file contents is
an :class:`~fexstack.errors.ImageError`. Ownership and timestamps are not compared: the
image makes every file root's and every timestamp 0 on purpose.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import atomic, command
from fexstack.digest import sha256_file
from fexstack.errors import FexstackError, ImageError

FSCK = "fsck.erofs"
SHOWN_DIFFERENCES = 10

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


def _entry(path: str, full: Path) -> Entry:
    st = full.lstat()
    kind = KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise ImageError(f"{full}: unsupported file type {stat.S_IFMT(st.st_mode):o}")
    mode = stat.S_IMODE(st.st_mode)
    if kind == "file":
        return Entry(path, kind, mode, st.st_size, sha256=sha256_file(full))
    if kind == "symlink":
        target = os.readlink(full)
        return Entry(path, kind, mode, len(os.fsencode(target)), target=target)
    return Entry(path, kind, mode, 0)


def _check_name(full: Path, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ImageError(
            f"{full}: file name is not valid UTF-8",
            "rename the file in the package or exclude it; manifests record names as UTF-8",
        ) from exc


def list_tree(root: Path) -> dict[str, Entry]:
    """Every path under ``root`` (``/`` for ``root`` itself), sorted, symlinks not followed."""
    if not root.is_dir() or root.is_symlink():
        raise ImageError(f"{root}: not a directory", "run the stage step first")
    entries: dict[str, Entry] = {"/": _entry("/", root)}
    stack: list[tuple[str, Path]] = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it)
        for name in names:
            full = folder / name
            _check_name(full, name)
            path = f"{prefix}/{name}"
            entry = _entry(path, full)
            entries[path] = entry
            if entry.kind == "dir":
                stack.append((path, full))
    return dict(sorted(entries.items()))


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


@contextlib.contextmanager
def scratch_dir(near: Path) -> Iterator[Path]:
    """A temp folder beside ``near`` (same file system), removed afterwards in any case."""
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
            full = Path(folder, name)
            if not full.is_symlink():
                with contextlib.suppress(OSError):
                    full.chmod(0o700)
    atomic.remove(path)


def extract(image: Path, dest: Path) -> None:
    """Unpack ``image`` into ``dest`` (which must not exist) with exact permission bits."""
    try:
        command.run([FSCK, f"--extract={dest}", "--preserve-perms", os.fspath(image)])
    except FexstackError as exc:
        raise ImageError(
            f"{image}: fsck.erofs could not read the image back: {exc.message}",
            "the image is damaged or was made by an incompatible mkfs.erofs; rebuild it",
        ) from exc


def list_image(image: Path, *, near: Path | None = None) -> dict[str, Entry]:
    """The listing of ``image``'s contents (extracted to a scratch folder beside ``near``)."""
    with scratch_dir(near or image) as tmp:
        root = tmp / "root"
        extract(image, root)
        return list_tree(root)


def verify_image(
    image: Path,
    tree: Path,
    *,
    expected: Mapping[str, Entry] | None = None,
    name: Path | None = None,
) -> dict[str, Entry]:
    """Check that ``image`` holds exactly ``tree``; return the (common) listing.

    ``expected`` is ``tree``'s listing when the caller already has it; ``name`` is the
    path to name in errors (the final path when ``image`` is still a temp file). Raises
    :class:`ImageError` naming the first differences.
    """
    want = dict(expected) if expected is not None else list_tree(tree)
    got = list_image(image)
    diff = differences(want, got)
    if diff:
        raise ImageError(
            f"{name or image}: read-back does not match {tree}:\n  " + "\n  ".join(diff),
            "the staging tree changed while the image was built, or mkfs.erofs lost "
            "something; re-run the stage and image steps",
        )
    return want
