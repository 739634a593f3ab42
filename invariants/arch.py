"""A. Arch hygiene: every load-bearing ELF is x86_64 (EM_X86_64, ELFCLASS64).

ELF matched by a ``[[policy.allow_elf]]`` glob (eBPF objects, firmware) is accounted with
the entry's reason; i386 ELF passes only when the stack sets ``allow_32bit``; an ELF file
that cannot be parsed is a finding of its own.
"""

from __future__ import annotations

from invariants.context import CheckContext, Finding

NAME = "arch"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, facts in ctx.elves():
        package = ctx.package(path)
        allowed = ctx.allowance(path)
        if facts.error is not None:
            if allowed is not None:
                out.append(Finding(NAME, path, f"unparseable ELF ({facts.error})", "",
                                   package, "accounted", allowed.reason))
                continue
            out.append(Finding(
                NAME, path, f"unparseable ELF: {facts.error}",
                "the file starts with the ELF magic but is corrupt or truncated: fix or "
                "exclude the package, or list it under [[policy.allow_elf]] with a reason",
                package))
            continue
        if facts.is_x86_64:
            continue
        if facts.is_i386 and ctx.allow_32bit:
            continue
        what = f"{facts.arch} ELF (ELFCLASS{facts.elf_class}, {facts.machine})"
        if allowed is not None:
            out.append(Finding(NAME, path, f"{what}, not load-bearing", "", package,
                               "accounted", allowed.reason))
            continue
        if facts.is_i386:
            hint = ("32-bit x86 ELF: exclude the i686 package, or set allow_32bit = true in "
                    "[policy] if the stack really wants 32-bit libraries")
        else:
            hint = ("only x86_64 ELF may sit in a load-bearing path: exclude the package, or "
                    "add a [[policy.allow_elf]] entry with a reason if this file is never "
                    "loaded (eBPF object, firmware)")
        out.append(Finding(NAME, path, f"{what} in a load-bearing path", hint, package))
    return out
