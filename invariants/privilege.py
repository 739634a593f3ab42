"""Privileged files: no setuid or setgid file in a deps overlay.

A deps overlay only adds libraries and data; a setuid or setgid file there would run
with raised privileges inside the guest. The stage step keeps the bits (and lists them in
``stage.json``) precisely so that this check can see and report them.
"""

from __future__ import annotations

import stat

from invariants.context import CheckContext, Finding

NAME = "privilege"
HINT = ("a deps overlay needs no setuid or setgid file: exclude the package that brings it, "
        "or waive it in [[policy.waiver]] with a reason")


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, node in ctx.overlay.nodes.items():
        if node.kind != "file":
            continue
        bits = [name for bit, name in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"))
                if node.mode & bit]
        if bits:
            out.append(Finding(NAME, path, f"{path}: {' and '.join(bits)} (mode "
                               f"{node.mode:04o})", HINT, ctx.package(path)))
    return out
