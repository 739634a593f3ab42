"""E. Interpreter: the PT_INTERP of every ELF in the checked tree resolves, in the merged
view, to an x86_64 ELF file that has no PT_INTERP of its own (what FEX needs to start it).
"""

from __future__ import annotations

from invariants import elf
from invariants.context import CheckContext, Finding

NAME = "interpreter"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, facts in ctx.elves():
        if facts.interp is None or facts.error is not None or not facts.is_x86_64:
            continue
        problem = problem_of(ctx, facts.interp)
        if problem is not None:
            out.append(Finding(
                NAME, path, f"PT_INTERP {facts.interp}: {problem}",
                "the base must provide this loader path: use the generated compat overlay "
                f"(a symlink {facts.interp} -> the base's loader), or relink the program",
                ctx.package(path)))
    return out


def problem_of(ctx: CheckContext, interp: str) -> str | None:
    """Why ``interp`` cannot serve as the loader in the merged view, or None."""
    found = ctx.view.resolve(interp)
    if found.error is not None:
        return found.error
    if found.node is None:
        return f"missing in the merged view (resolved to {found.path})"
    if found.node.kind != "file":
        return f"{found.path} is a {found.node.kind}, not a file"
    facts = elf.facts(found.node.source)
    if facts is None or facts.error is not None:
        return f"{found.path} is not a readable ELF file"
    if not facts.is_x86_64:
        return f"{found.path} is {facts.arch} ELF, not x86_64"
    if facts.interp is not None:
        return f"{found.path} has a PT_INTERP itself ({facts.interp})"
    return None
