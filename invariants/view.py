"""Views of layer trees: one layer indexed (:class:`Tree`), and layers merged (:class:`View`).

A base given as an EROFS image is read without mounting: ``fsck.erofs --extract`` unpacks
it once into ``cache_dir()/views/<sha256>/tree`` and its index (paths, types, modes, symlink
targets, each ELF's soname and PT_INTERP) is kept beside it as ``index.json``; a layer whose
root is such an extracted tree is indexed from that file, so a rebuild neither extracts nor
walks the base again. A base given as a directory is indexed the same way, in memory.

The image's sha256 names its cache folder. Hashing a 1 GB base on every run would cost
more than the rest of the check, so :func:`sha256_file` remembers digests in
``cache_dir()/views/digests.json`` by path and (device, inode, size, mtime_ns, ctime_ns):
the same file, not written since (a write or a metadata change always moves ctime, which
no tool can set back), is not hashed again.

The merged view stacks layers in muvm's order, the last one winning on a collision;
directories merge, anything else hides what is below it (and a non-directory hides a
lower directory's whole subtree), exactly as overlayfs does with the list reversed as
lowerdir. :meth:`View.resolve` follows symlinks inside the view the way FEX does: an
absolute target is re-rooted at the view's root, relative ones resolve normally, ``..``
never leaves the root, and a loop is reported.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fexstack import atomic, command, digest, jsonio, paths
from fexstack.errors import CheckError
from invariants import elf, ldcache

log = logging.getLogger("fexstack.view")
INDEX_VERSION = 1
INDEX_SCHEMA = "view-index"  # the one writer and reader: _extracted_index
MAX_SYMLINKS = 40  # Linux's limit on symlinks followed in one lookup
LDCACHE = "/etc/ld.so.cache"


@dataclass(frozen=True)
class Node:
    """One path of a layer: ``kind`` is dir, file, symlink or other."""

    kind: str
    mode: int
    target: str | None  # symlink target, as written
    source: Path  # the path on disk (never followed)
    layer: str  # name of the layer it comes from


@dataclass(frozen=True)
class Layer:
    """A layer of the merged view: a directory tree, its name and its artifact class."""

    name: str
    root: Path
    klass: str


@dataclass
class Tree:
    """The index of one layer: absolute paths ("/" is the root) to nodes."""

    root: Path
    layer: str
    nodes: dict[str, Node]
    _elves: dict[str, dict[str, Any]] | None = field(default=None, repr=False)
    # regular files' elf.stat_key as the walk saw them (trees walked in this process only)
    keys: dict[str, elf.StatKey] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dir(cls, root: Path, layer: str) -> Tree:
        if not root.is_dir():
            raise CheckError(f"{root} is not a directory", "pass a staged tree or a base image")
        cached = _extracted_index(root, layer)
        return cached if cached is not None else _walk(root, layer)

    def elves(self) -> dict[str, dict[str, Any]]:
        """Per ELF file: its soname and PT_INTERP (files only, symlinks not followed)."""
        if self._elves is None:
            out: dict[str, dict[str, Any]] = {}
            for path, node in self.nodes.items():
                if node.kind != "file":
                    continue
                facts = elf.facts(node.source, key=self.keys.get(path))
                if facts is not None:
                    out[path] = {"soname": facts.soname, "interp": facts.interp,
                                 "arch": facts.arch if facts.error is None else "unparseable"}
            self._elves = out
        return self._elves

    def sonames(self) -> dict[str, str]:
        """Library path -> DT_SONAME, for every ELF file that has one."""
        return {p: e["soname"] for p, e in self.elves().items() if e.get("soname")}


def _walk(root: Path, layer: str) -> Tree:
    nodes: dict[str, Node] = {"/": _node(root, os.lstat(root), layer)}
    keys: dict[str, elf.StatKey] = {}
    pending = [(str(root), "/")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = prefix + entry.name
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    nodes[path] = Node("dir", stat.S_IMODE(mode), None, Path(entry.path),
                                       layer)
                    pending.append((entry.path, path + "/"))
                elif stat.S_ISREG(mode):
                    nodes[path] = Node("file", stat.S_IMODE(mode), None, Path(entry.path),
                                       layer)
                    keys[path] = elf.stat_key(st)
                else:
                    nodes[path] = _node(Path(entry.path), st, layer)
    return Tree(root, layer, dict(sorted(nodes.items())), keys=keys)


def _node(disk: Path, st: os.stat_result, layer: str) -> Node:
    if stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    target = os.readlink(disk) if kind == "symlink" else None
    return Node(kind, stat.S_IMODE(st.st_mode), target, disk, layer)


# -- images ---------------------------------------------------------------------------------

_SHA_MEMO: dict[tuple[int, int, int, int, int], str] = {}
DIGESTS = "digests.json"  # under cache_dir()/views: path -> stat identity and sha256


def sha256_file(path: Path) -> str:
    """The sha256 of a file, remembered by (device, inode, size, mtime_ns, ctime_ns) in
    this process and, by path, in ``cache_dir()/views/digests.json`` across runs."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    memo_path = paths.cache_dir() / "views" / DIGESTS
    name = str(path.resolve())
    memo = _read_digests(memo_path)
    entry = memo.get(name)
    if isinstance(entry, dict) and entry.get("stat") == list(key):
        sha = entry.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            _SHA_MEMO[key] = sha
            return sha
    sha = digest.sha256_file(path)
    _SHA_MEMO[key] = sha
    memo = _read_digests(memo_path)  # again: another process may have added entries
    memo[name] = {"stat": list(key), "sha256": sha}
    atomic.write_text(memo_path, jsonio.dumps(memo))
    return sha


def _read_digests(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def image_cache(image: Path) -> Path:
    return paths.cache_dir() / "views" / sha256_file(image)


def extract_image(image: Path) -> Path:
    """The extracted tree of an EROFS image, unpacked once per image content."""
    folder = image_cache(image)
    tree = folder / "tree"
    if tree.is_dir():
        return tree
    with atomic.temp_dir(tree) as tmp:
        command.run(
            ["fsck.erofs", f"--extract={tmp}", "--overwrite", image],
            hint=f"{image} should be an EROFS image (check it with dump.erofs -s {image})",
        )
    return tree


def _tree_from_index(data: dict[str, Any], tree_dir: Path, layer: str) -> Tree:
    nodes = {
        p: Node(n["kind"], n["mode"], n.get("target"), tree_dir / p.lstrip("/"), layer)
        for p, n in data["nodes"].items()
    }
    return Tree(tree_dir, layer, nodes, data["elves"])


def index_image(image: Path, layer: str = "base") -> Tree:
    """The index of an EROFS image, from ``index.json`` when this image was seen before."""
    return Tree.from_dir(extract_image(image), layer)


def _extracted_index(root: Path, layer: str) -> Tree | None:
    """The index of ``root`` when it is an image's tree in the view cache
    (``<cache>/views/<sha256>/tree``), from ``index.json`` (written the first time)."""
    folder = root.parent
    if root.name != "tree" or folder.parent != paths.cache_dir() / "views":
        return None
    index_path = folder / "index.json"
    unusable = None  # why the index is not used: the name of the exception
    try:
        data = jsonio.read(index_path)
        problem = jsonio.schema_error(data, INDEX_SCHEMA)
        if problem is not None:
            unusable = type(problem).__name__
        elif data["image_sha256"] == folder.name:
            return _tree_from_index(data, root, layer)
    except FileNotFoundError:
        pass  # not indexed yet
    except (OSError, ValueError) as exc:
        unusable = type(exc).__name__
    if unusable is not None:
        log.warning("view index %s is not usable (%s); indexing the tree again", index_path,
                    unusable)
    tree = _walk(root, layer)
    data = {
        "version": INDEX_VERSION,
        "image_sha256": folder.name,
        "nodes": {p: {"kind": n.kind, "mode": n.mode, "target": n.target}
                  for p, n in tree.nodes.items()},
        "elves": tree.elves(),
    }
    jsonio.write(index_path, data, INDEX_SCHEMA)
    elf.flush()
    return tree


def index(path: Path, layer: str = "base") -> Tree:
    """Index a layer given as a directory or as an EROFS image."""
    if path.is_dir():
        return Tree.from_dir(path, layer)
    if path.is_file():
        return index_image(path, layer)
    raise CheckError(f"layer {path} does not exist", "build or fetch it first")


def layer(path: Path, klass: str, name: str | None = None) -> Layer:
    """A :class:`Layer` for a directory or an EROFS image (extracted once, cached)."""
    root = path if path.is_dir() else extract_image(path) if path.is_file() else path
    if not root.is_dir():
        raise CheckError(f"layer {path} does not exist", "build or fetch it first")
    return Layer(name or path.name, root, klass)


# -- the merged view ------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """Where a view path leads: the final path, its node (None: missing), or an error."""

    path: str
    node: Node | None
    error: str | None = None

    @property
    def kind(self) -> str | None:
        return self.node.kind if self.node else None


class View:
    """Layers merged in muvm's order (the last wins; directories merge).

    A view does not change once made (:meth:`resolve` remembers its answers).
    """

    def __init__(self, layers: Sequence[Layer], trees: Sequence[Tree] | None = None) -> None:
        self.layers = tuple(layers)
        self.trees = tuple(trees) if trees is not None else tuple(
            _tree_for(layer) for layer in self.layers
        )
        self.nodes: dict[str, Node] = {}
        for tree in self.trees:
            self._stack(tree)
        self._ldcache: tuple[Any, ...] | None = None
        self._resolved: dict[tuple[str, bool], Resolved] = {}

    def _stack(self, tree: Tree) -> None:
        merged = self.nodes
        for path, node in tree.nodes.items():
            below = merged.get(path)
            if below is not None and below.kind == "dir" and node.kind != "dir":
                prefix = path.rstrip("/") + "/"
                for key in [k for k in merged if k.startswith(prefix)]:
                    del merged[key]
            merged[path] = node

    def lookup(self, path: str) -> Node | None:
        """The node at exactly ``path`` (no symlink followed)."""
        return self.nodes.get(normalize(path))

    def resolve(self, path: str, follow_last: bool = True) -> Resolved:
        """Follow symlinks in every component of ``path`` inside the view."""
        key = (path, follow_last)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = self._resolve(path, follow_last)
        return found

    def _resolve(self, path: str, follow_last: bool) -> Resolved:
        pending = [p for p in reversed(path.split("/")) if p]
        current = "/"
        budget = MAX_SYMLINKS
        node: Node | None = self.nodes.get("/")
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current) or "/"
                node = self.nodes.get(current)
                continue
            candidate = posixpath.join(current, part)
            node = self.nodes.get(candidate)
            if node is None:
                rest = "/".join(reversed(pending))
                return Resolved(normalize(posixpath.join(candidate, rest)), None)
            if node.kind == "symlink" and (pending or follow_last):
                budget -= 1
                if budget < 0:
                    return Resolved(candidate, None, f"too many levels of symbolic links at {path}")
                target = node.target or ""
                if target.startswith("/"):
                    current = "/"
                pending.extend(p for p in reversed(target.split("/")) if p)
                continue
            if pending and node.kind != "dir":
                return Resolved(candidate, None, f"{candidate} is not a directory")
            current = candidate
        return Resolved(current, node)

    def disk(self, path: str) -> Path | None:
        """The file on disk that ``path`` leads to (symlinks followed), if any."""
        found = self.resolve(path)
        return found.node.source if found.node is not None else None

    def walk(self, prefix: str = "/") -> Iterator[tuple[str, Node]]:
        base = prefix.rstrip("/") + "/"
        for path, node in self.nodes.items():
            if path == prefix or path.startswith(base):
                yield path, node

    def ldcache(self) -> ldcache.LdCache | None:
        """The /etc/ld.so.cache the loader reads in this view (the base's), or None."""
        if self._ldcache is None:
            source = self.disk(LDCACHE)
            self._ldcache = (ldcache.read(source) if source is not None else None,)
        result: ldcache.LdCache | None = self._ldcache[0]
        return result


def _tree_for(layer: Layer) -> Tree:
    return Tree.from_dir(layer.root, layer.name)


def normalize(path: str) -> str:
    """A lexical absolute path: ``/a/./b//c/`` -> ``/a/b/c`` (``..`` is kept out of it)."""
    return posixpath.normpath("/" + path.lstrip("/")).replace("//", "/")
