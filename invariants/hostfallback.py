"""The host-fallback layer: exactly the host paths a base declares (``host_provides``).

FEX looks a path up in its RootFS (and overlays) and, when none has it, falls back to the
host's file (shared/docs/FACTS.md). A base declares which host paths an app may take that
way (``[base] host_provides``); this module makes them a layer of the merged view, BELOW
every image, so the checks follow the same rule the native backend mounts: a layer's
file wins, the host fills in only what no layer has, and nothing else of the host is seen.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from invariants.view import Layer, Node, Tree, View

LAYER = "host"


def _node(disk: Path, st: os.stat_result) -> Node:
    mode = st.st_mode
    kind = ("dir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode)
            else "file" if stat.S_ISREG(mode) else "other")  # fmt: skip
    target = os.readlink(disk) if kind == "symlink" else None
    return Node(kind, stat.S_IMODE(mode), target, disk, LAYER)


def host_tree(paths: Sequence[str], host_root: Path = Path("/")) -> Tree:
    """A tree of ``paths`` (their folders' contents included) as they are on the host
    under ``host_root``, with the folders leading to them. Paths the host lacks are left
    out (the native backend refuses to start then; see runner.native.host_fallback)."""
    nodes: dict[str, Node] = {"/": Node("dir", 0o755, None, host_root, LAYER)}
    for path in paths:
        disk = host_root / path.lstrip("/")
        try:
            st = os.lstat(disk)
        except OSError:
            continue
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            folder = "/" + "/".join(parts[:i])
            nodes.setdefault(folder, Node("dir", 0o755, None, host_root / folder[1:], LAYER))
        nodes[path] = _node(disk, st)
        if stat.S_ISDIR(st.st_mode):
            for dirpath, dirnames, filenames in os.walk(disk):
                rel = "/" + str(Path(dirpath).relative_to(host_root))
                for name in [*dirnames, *filenames]:
                    entry = Path(dirpath) / name
                    nodes[f"{rel.rstrip('/')}/{name}"] = _node(entry, os.lstat(entry))
    return Tree(host_root, LAYER, dict(sorted(nodes.items())))


def with_host(
    layers: Sequence[Layer], trees: Sequence[Tree], paths: Sequence[str]
) -> tuple[list[Layer], list[Tree]]:
    """``layers``/``trees`` with the host layer beneath them (unchanged without paths)."""
    if not paths:
        return list(layers), list(trees)
    return [Layer(LAYER, Path("/"), LAYER), *layers], [host_tree(paths), *trees]


def taken_from_host(view: View, paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` (view paths) that the view takes from the host layer."""
    out = set()
    for path in paths:
        node = view.resolve(path).node
        if node is not None and node.layer == LAYER:
            out.add(path)
    return sorted(out)
