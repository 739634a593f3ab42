"""ABI conflicts: sonames that must never be loaded into one process.

libsoup 2 and libsoup 3 register the same GObject type names; a process that loads both
aborts (FACTS.md "2026 facts": BambuStudio issue 1640, which is why WebKitGTK 4.0 and 4.1
cannot share a process). The rule is data: :data:`CONFLICTS` lists pairs of sonames, each
with the reason, and adding a row adds a check.

For every x86_64 ELF of the checked tree, the whole DT_NEEDED closure (the executable's,
or a library's as an executable without RPATH would load it) is resolved in the merged
view; a closure that reaches both sonames of a pair is a finding naming the two files and
their sonames. appcheck applies the same table to the AppImage's ELF files
(:func:`clashes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from invariants.context import CheckContext, Finding
from invariants.loader import Closure

NAME = "abi-conflict"


@dataclass(frozen=True)
class Conflict:
    """Two sonames that must not meet in one process, and why."""

    first: str
    second: str
    reason: str


CONFLICTS: tuple[Conflict, ...] = (
    Conflict(
        "libsoup-2.4.so.1",
        "libsoup-3.0.so.0",
        "libsoup 2 and libsoup 3 in one process abort (their GObject types clash); "
        "WebKitGTK 4.0 links libsoup 2, WebKitGTK 4.1 libsoup 3",
    ),
)


def clashes(root: str, closure: Closure, table: tuple[Conflict, ...] = CONFLICTS) -> list[str]:
    """One sentence per pair of ``table`` that ``closure`` (the objects ``root`` loads)
    reaches, naming both files and both sonames."""
    found: dict[str, str] = {}
    for r in closure.resolutions:
        if r.path is not None:
            found.setdefault(r.soname, r.real or r.path)
    out = []
    for pair in table:
        if pair.first in found and pair.second in found:
            out.append(
                f"{root} loads both {pair.first} ({found[pair.first]}) and {pair.second} "
                f"({found[pair.second]}) into one process: {pair.reason}"
            )
    return out


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    loader = ctx.loader()
    for path, facts in ctx.elves():
        if not facts.is_x86_64 or not facts.is_dynamic or not facts.needed:
            continue
        closure = loader.closure(path, main=facts.interp is not None)
        for detail in clashes(path, closure):
            out.append(Finding(
                NAME, path, detail,
                "keep one ABI family per stack: drop the seed that pulls the other one in "
                "(e.g. WebKitGTK 4.0 with libsoup, or 4.1 with libsoup3), and add the other "
                "family to [exclude]",
                ctx.package(path)))
    return out
