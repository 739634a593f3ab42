"""Writing a tree without ever following a symlink: directory fds opened one component at
a time with ``O_NOFOLLOW``, files created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` below them."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
BAD_PARTS = frozenset(("", ".", ".."))
CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class DirFds:
    """Directory fds below ``root_fd``, each opened once with ``O_NOFOLLOW`` and kept.

    :meth:`parent` walks one component at a time from the deepest directory already
    open, making missing directories (mode 0755, reported to ``made``); a component that
    is a symlink or not a directory raises OSError (ELOOP or ENOTDIR) whose ``filename``
    is the offending path. The fds it returns belong to this object: callers never close
    them, and they stay valid until :meth:`trim` or :meth:`close`. Only the caller of the
    walk creates entries in the tree, never replacing a directory, so a kept fd is always
    the directory that was checked when it was opened.
    """

    LIMIT = 256  # open fds kept before :meth:`trim` closes them (RLIMIT_NOFILE is 1024)

    def __init__(self, root_fd: int, made: Callable[[str], None] | None = None) -> None:
        self.root_fd = root_fd
        self.made = made
        self.fds: dict[str, int] = {}  # "/usr/lib64" -> fd; the root is root_fd

    def parent(self, path: str) -> tuple[int, str]:
        """The fd of the parent directory of ``path`` (absolute) and the leaf's name."""
        folder, _, name = path.rpartition("/")
        if name in BAD_PARTS:
            raise OSError(errno.EINVAL, "empty, '.' or '..' component", path)
        if not folder:
            return self.root_fd, name
        fd = self.fds.get(folder)
        if fd is None:
            fd = self._open(folder)
        return fd, name

    def _open(self, folder: str) -> int:
        parts = folder.split("/")  # "/usr/lib64" -> ["", "usr", "lib64"]
        if not BAD_PARTS.isdisjoint(parts[1:]):
            raise OSError(errno.EINVAL, "empty, '.' or '..' component", folder)
        fd, start = self.root_fd, 1
        for known in range(len(parts) - 1, 1, -1):  # the deepest ancestor already open
            found = self.fds.get("/".join(parts[:known]))
            if found is not None:
                fd, start = found, known
                break
        for end in range(start + 1, len(parts) + 1):
            walked = "/".join(parts[:end])
            part = parts[end - 1]
            try:
                new = os.open(part, OPEN_DIR, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
                if self.made is not None:
                    self.made(walked)
                new = os.open(part, OPEN_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(exc.errno, os.strerror(exc.errno), walked) from exc
                raise
            self.fds[walked] = new
            fd = new
        return fd

    def trim(self) -> None:
        """Close every kept fd once there are more than :attr:`LIMIT` (between entries)."""
        if len(self.fds) > self.LIMIT:
            self.close()

    def close(self) -> None:
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
