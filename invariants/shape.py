"""The compat overlay's shape: directories and symlinks to the loader, nothing else."""

from __future__ import annotations

import posixpath

from invariants import elf
from invariants.context import CheckContext, Finding

NAME = "compat-shape"
HINT = "the compat overlay is generated: rebuild it rather than adding to it"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, node in ctx.overlay.nodes.items():
        if node.kind == "dir":
            continue
        if node.kind != "symlink":
            out.append(Finding(NAME, path, f"{path}: a {node.kind}, not a symlink", HINT))
            continue
        found = ctx.view.resolve(path)
        facts = elf.facts(found.node.source) if found.node and found.node.kind == "file" else None
        is_loader = posixpath.basename(found.path).startswith("ld-linux")
        if facts is None or not facts.is_x86_64 or facts.interp is not None or not is_loader:
            out.append(Finding(NAME, path,
                               f"{path} -> {node.target} does not lead to the x86_64 loader "
                               f"(resolves to {found.path})", HINT))
    return out
