"""D. Library focus: nothing under bin, sbin, usr/bin or usr/sbin, and no symlink that
leads to or through them (followed in the merged view, where /bin may itself be a link).
"""

from __future__ import annotations

import posixpath

from invariants.context import EXEC_DIRS, CheckContext, Finding, under
from invariants.view import normalize

NAME = "library-focus"
HINT = ("a deps overlay carries libraries only: an executable here would shadow the base's "
        "(AppRun scripts run /bin/bash); exclude the package or use a base-refresh stack")


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    via_of: dict[str, str | None] = {}  # parent folder -> the executable dir it resolves into
    for path, node in ctx.overlay.nodes.items():
        package = ctx.package(path)
        in_dir = under(path, EXEC_DIRS)
        if in_dir is not None and node.kind != "dir":
            out.append(Finding(NAME, path, f"{path}: {node.kind} under {in_dir}", HINT, package))
            continue
        if in_dir is None:
            # /bin itself as a directory hides the base's /bin -> usr/bin (caught by
            # precedence); a path under a resolved executable directory is caught here.
            folder = posixpath.dirname(path)
            if folder not in via_of:
                via_of[folder] = under(ctx.view.resolve(folder).path, EXEC_DIRS)
            via = via_of[folder]
            if via is not None and node.kind != "dir":
                out.append(Finding(NAME, path, f"{path}: lands in {via} through a symlink",
                                   HINT, package))
                continue
        if node.kind == "symlink" and node.target is not None:
            target = node.target
            lexical = normalize(target if target.startswith("/")
                                else posixpath.join(posixpath.dirname(path), target))
            resolved = ctx.view.resolve(path).path
            hit = under(resolved, EXEC_DIRS) or under(lexical, EXEC_DIRS)
            if hit is not None:
                out.append(Finding(NAME, path, f"{path}: symlink to {target} leads into {hit}",
                                   HINT, package))
    return out
