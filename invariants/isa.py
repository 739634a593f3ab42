"""E. ISA level: ``.note.gnu.property`` x86 ISA bits are reported for every ELF; a file that
needs x86-64-v4 or AVX-512 state fails (FEX never executes AVX-512)."""

from __future__ import annotations

from invariants import elf
from invariants.context import CheckContext, Finding

NAME = "isa"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, facts in ctx.elves():
        if facts.error is not None or facts.machine != "EM_X86_64":
            continue
        if facts.needs_avx512:
            level = elf.isa_name(facts.isa_needed) or "AVX-512 state"
            out.append(Finding(
                NAME, path,
                f"{path} needs {level} (GNU_PROPERTY_X86_ISA_1_NEEDED={facts.isa_needed:#x}, "
                f"FEATURE_2_NEEDED={facts.feature2_needed:#x}); FEX runs up to x86-64-v3",
                "use a build of the package for a lower ISA level (Fedora builds x86-64-v2 "
                "or -v3), or drop the package",
                ctx.package(path)))
    return out
