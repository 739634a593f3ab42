"""C. Precedence: nothing in the checked tree overrides a path of the base or of an
earlier layer. Directories may merge; files and symlinks may not collide (nor a directory
with a lower file or symlink: overlayfs would hide the lower one).
"""

from __future__ import annotations

from invariants.context import CheckContext, Finding

NAME = "precedence"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, node in ctx.overlay.nodes.items():
        below = ctx.lower.lookup(path)
        if below is None or (below.kind == "dir" and node.kind == "dir"):
            continue
        what = f"{node.kind} over the {below.kind} of layer {below.layer}"
        if below.kind == "symlink":
            what += f" (-> {below.target})"
        out.append(Finding(
            NAME, path, f"{path}: {what}",
            "an overlay may only add paths: drop the file from the stack (exclude the "
            "package), or move the change into a base-refresh stack",
            ctx.package(path)))
    return out
