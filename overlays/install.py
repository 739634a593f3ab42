"""Install paths: where ``rpm -i`` into the base would write each payload path.

rpm writes a package into a root through the directory symlinks already there: on a
merged-/usr base (``/lib -> usr/lib``, ``/lib64 -> usr/lib64``, ``/bin -> usr/bin``) a
payload file ``/lib64/libbar.so.1`` lands at ``/usr/lib64/libbar.so.1``. A staging tree
that kept ``/lib64`` as a real directory would hide the base's symlink in the merged view,
and every interpreter and library behind it with it. :class:`InstallRoot` maps payload
paths the way the kernel resolves them when rpm writes into that root: every directory
component that is a symlink in the layers below (the base, the gpu and compat overlays)
is followed; an absolute target starts again at the root (rpm chroots into it); the last
component is followed only for a directory entry (rpm keeps a symlink to a directory in
place of a directory it installs).

Never followed: a symlink whose target leaves the root (a ``..`` above ``/``), one that
loops, and one that leads into something other than a directory: such a path stays as
written, and the check step's precedence invariant reports what it would hide. Symlinks
planted by the stack's own packages are never written through either: the stage step
refuses a path below one (after mapping).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from invariants.view import MAX_SYMLINKS, View

EXEC_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


@dataclass
class InstallRoot:
    """The directory symlinks of the layers a stack installs into (``view``: None, none)."""

    view: View | None
    _memo: dict[tuple[str, bool], str] = field(default_factory=dict, repr=False)

    def place(self, path: str, kind: str) -> str:
        """Where a payload entry of type ``kind`` at ``path`` is written."""
        if self.view is None:
            return path
        if kind == "dir":
            return self._resolve(path, follow_last=True)
        folder, _, name = path.rpartition("/")
        if not folder:
            return path
        parent = self._resolve(folder, follow_last=True)
        return posixpath.join(parent, name) if parent != folder else path

    def _resolve(self, path: str, *, follow_last: bool) -> str:
        key = (path, follow_last)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._walk(path, follow_last) or path
        return found

    def _walk(self, path: str, follow_last: bool) -> str | None:
        """``path`` with the lower layers' directory symlinks followed (None: not followed)."""
        assert self.view is not None
        pending = [p for p in reversed(path.split("/")) if p]
        current = "/"
        budget = MAX_SYMLINKS
        followed = False
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if current == "/":
                    return None  # the target leaves the root
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            node = self.view.lookup(candidate)
            if node is not None and node.kind == "symlink" and (pending or follow_last):
                budget -= 1
                if budget < 0 or not node.target:
                    return None
                if node.target.startswith("/"):
                    current = "/"
                pending.extend(p for p in reversed(node.target.split("/")) if p)
                followed = True
                continue
            if node is not None and node.kind != "dir" and (pending or followed):
                return None  # through a file: rpm would fail there; leave it to the check
            current = candidate
        return current


def executable_dir(path: str) -> str | None:
    """The executable directory (``/usr/bin`` ...) that ``path`` lies strictly under."""
    for root in EXEC_DIRS:
        if path.startswith(root + "/"):
            return root
    return None
