"""Linkability: every DT_NEEDED of every x86_64 ELF in the checked tree is found in the
merged view the way glibc's loader searches it (see :mod:`invariants.loader`).

Executables are loaded with everything they need, recursively; a library's own needs are
resolved as if an executable without RPATH had opened it. The resolutions (which file
satisfied each soname) are left in ``ctx.extra["linkability"]`` for the report.
"""

from __future__ import annotations

from typing import Any

from invariants.context import CheckContext, Finding

NAME = "linkability"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    rows: list[dict[str, Any]] = []
    loader = ctx.loader()
    for path, facts in ctx.elves():
        if not facts.is_x86_64 or not facts.is_dynamic or not facts.needed:
            continue
        executable = facts.interp is not None
        closure = loader.closure(path, main=executable, direct=not executable)
        resolutions = [r for r in closure.resolutions if executable or r.needed_by == path]
        rows.append({"path": path, "kind": "executable" if executable else "library",
                     "needs": [r.as_json() for r in resolutions]})
        for r in resolutions:
            if r.path is not None or r.via == "loaded":
                continue
            chain = "" if r.needed_by == path else f" (needed by {r.needed_by})"
            out.append(Finding(
                NAME, path, f"{r.soname}{chain} is not found in the merged view: {r.detail}",
                "add the package that provides it to the stack's seeds, or make it reachable "
                "(libraries of overlays must sit in a default directory or on RPATH/RUNPATH/"
                "LD_LIBRARY_PATH: overlays do not update the base's ld.so.cache)",
                ctx.package(path)))
    ctx.extra["linkability"] = rows
    return out
