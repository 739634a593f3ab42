"""The compat overlay: symlinks that give the base the loader paths programs ask for.

Fedora's FEX RootFS ships the loader at /usr/lib64/ld-linux-x86-64.so.2 only, while most
x86_64 programs name /lib64/ld-linux-x86-64.so.2 in PT_INTERP. When a needed interpreter
path does not resolve in the base but a file of that name exists elsewhere, the compat
overlay holds one symlink for it. The tree is built once per base (keyed by the base
image's sha256, or the digest of a base directory's index) under
``cache_dir()/compat/<key>`` through a temp directory and a rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Iterable
from pathlib import Path

from fexstack import atomic, paths
from fexstack.errors import CheckError
from invariants import elf
from invariants.view import Tree, View, index, sha256_file

X86_64_INTERP = "/lib64/ld-linux-x86-64.so.2"


def plan(base: Tree, interps: Iterable[str] = (X86_64_INTERP,)) -> dict[str, str]:
    """Symlink path -> target for every interpreter path the base lacks but can serve.

    ``interps`` are the paths the app needs; the PT_INTERP of every x86_64 executable of
    the base is added to them.
    """
    view = View([], [base])
    wanted = set(interps)
    for info in base.elves().values():
        if info.get("interp") and info.get("arch") == "x86_64":
            wanted.add(info["interp"])
    links: dict[str, str] = {}
    for interp in sorted(wanted):
        if _is_loader(view, interp):
            continue
        name = posixpath.basename(interp)
        candidates = sorted(p for p, n in base.nodes.items()
                            if n.kind in ("file", "symlink") and posixpath.basename(p) == name
                            and _is_loader(view, p))
        if not candidates:
            continue
        # Prefer a real file in a library directory; never point at another missing link.
        target = next((c for c in candidates if base.nodes[c].kind == "file"), candidates[0])
        parent = view.resolve(posixpath.dirname(interp))
        where = posixpath.join(parent.path, name) if parent.node is not None else interp
        links[where] = target
    return links


def _is_loader(view: View, path: str) -> bool:
    found = view.resolve(path)
    if found.node is None or found.node.kind != "file":
        return False
    facts = elf.facts(found.node.source)
    return facts is not None and facts.is_x86_64 and facts.interp is None


def _keep_base_symlinks(base: Tree, links: dict[str, str]) -> None:
    """Refuse a compat tree that would hold a real directory where the base has a symlink:
    in the merged view that directory would hide the base's symlink (Fedora's RootFS very
    likely has /lib64 -> usr/lib64) and everything it leads to."""
    for link in links:
        parent = posixpath.dirname(link)
        while parent != "/":
            node = base.nodes.get(parent)
            if node is not None and node.kind == "symlink":
                raise CheckError(
                    f"compat overlay: {link} would turn the base's symlink {parent} "
                    f"(-> {node.target}) into a real directory",
                    "this is a fexstack bug: the compat plan must place links through the "
                    "base's directory symlinks; please report it with the base",
                )
            parent = posixpath.dirname(parent)


def base_key(base: Path, tree: Tree) -> str:
    if base.is_file():
        return sha256_file(base)
    listing = [(p, n.kind, n.target) for p, n in tree.nodes.items()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def ensure(base: Path, interps: Iterable[str] = (X86_64_INTERP,)) -> Path | None:
    """The compat tree for ``base`` (an EROFS image or a directory), or None when the base
    already resolves every interpreter path asked for."""
    tree = index(base, "base")
    wanted = sorted(set(interps))
    links = plan(tree, wanted)
    if not links:
        return None
    _keep_base_symlinks(tree, links)
    key = hashlib.sha256(
        json.dumps([base_key(base, tree), wanted]).encode()
    ).hexdigest()
    out = paths.cache_dir() / "compat" / key
    if out.is_dir():
        return out
    with atomic.temp_dir(out) as tmp:
        for link, target in sorted(links.items()):
            dest = tmp / link.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, dest)
        for folder in sorted({p for p in tmp.rglob("*") if p.is_dir()} | {tmp}):
            folder.chmod(0o755)
    return out
