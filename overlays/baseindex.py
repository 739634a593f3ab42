"""The index of a base given as a directory, and its digest.

A base given as an EROFS image is tracked by the image file (a task dependency). A base
given as a directory is tracked by the content of its index instead: every path under it
with its kind (dir, file, symlink, other), permission bits, symlink target and, for a
regular file, the sha256 of its bytes. Changing, adding or removing a file, a mode or a
link target changes :func:`digest`, which the check, image and compat steps read as an
input; where the directory lives does not enter.

Hashing every file of a RootFS directory on each ``doit`` invocation would cost seconds,
so file digests are remembered in ``cache_dir()/views/dirs/<key>.json`` by path and
(device, inode, size, mtime_ns, ctime_ns), as :func:`invariants.view.sha256_file` does for
images: a file not written since (a write or a metadata change always moves ctime, which
no tool can set back) is not hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from fexstack import atomic, jsonio, paths
from fexstack.digest import sha256_file
from fexstack.errors import CheckError

MEMO_DIR = "dirs"  # under cache_dir()/views


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _memo_path(root: Path) -> Path:
    key = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:32]
    return paths.cache_dir() / "views" / MEMO_DIR / f"{key}.json"


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def index(root: Path) -> list[dict[str, Any]]:
    """Every path under ``root`` ("/" is ``root`` itself), sorted, with kind, mode, target
    and file digest. Symlinks are never followed."""
    try:
        top = os.lstat(root)
    except OSError as exc:
        raise CheckError(
            f"base directory {root}: {exc.strerror}", "build or fetch the base"
        ) from exc
    if not stat.S_ISDIR(top.st_mode):
        raise CheckError(f"{root} is not a directory", "give the base as a directory or image")
    memo_path = _memo_path(root)
    memo = _read_memo(memo_path)
    fresh: dict[str, Any] = {}
    out = [{"path": "/", "kind": "dir", "mode": f"{stat.S_IMODE(top.st_mode):04o}"}]
    pending = [(str(root), "/")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = prefix + entry.name
                st = entry.stat(follow_symlinks=False)
                kind = _kind(st.st_mode)
                doc: dict[str, Any] = {
                    "path": path,
                    "kind": kind,
                    "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                }
                if kind == "dir":
                    pending.append((entry.path, path + "/"))
                elif kind == "symlink":
                    doc["target"] = os.readlink(entry.path)
                elif kind == "file":
                    key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
                    known = memo.get(path)
                    if isinstance(known, list) and len(known) == 2 and known[0] == key:
                        sha = known[1]
                    else:
                        sha = sha256_file(Path(entry.path))
                    fresh[path] = [key, sha]
                    doc["sha256"] = sha
                out.append(doc)
    if fresh != memo:
        atomic.write_text(memo_path, jsonio.dumps(fresh))
    return sorted(out, key=lambda d: d["path"])


def digest(root: Path) -> str:
    """The sha256 (hex) of the canonical JSON of :func:`index`."""
    text = json.dumps(index(root), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
