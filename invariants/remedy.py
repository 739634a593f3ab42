"""Remedies: for a failing finding, the exact stack lines that account for it.

Every failing finding's hint ends with a block to paste into the stack file, which makes
that finding go away on the next check: ``[[policy.allow_elf]]`` for a non-x86_64 ELF
file (eBPF, firmware: never loaded), ``allow_32bit`` for an i386 library, and a
``[[policy.waiver]]`` for exactly that invariant and path otherwise (the reason is the
user's to write). Excluding or dropping a package is named in the hint before it where
that can work; a waiver always does, since a required package cannot be excluded.
"""

from __future__ import annotations

import glob
import json

from invariants.context import Finding

REASON = "say why this is acceptable"


def _quote(text: str) -> str:
    return json.dumps(text)  # a TOML basic string for any path


def block(finding: Finding) -> str:
    """The TOML lines that account for ``finding``."""
    path = _quote(glob.escape(finding.path))
    if finding.invariant == "arch" and finding.detail.startswith("i386 "):
        return "[policy]\nallow_32bit = true"
    if finding.invariant == "arch":
        return f"[[policy.allow_elf]]\npath = {path}\nreason = {_quote(REASON)}"
    return (f"[[policy.waiver]]\ninvariant = {_quote(finding.invariant)}\npath = {path}\n"
            f"reason = {_quote(REASON)}")


def with_remedy(finding: Finding) -> str:
    """``finding``'s hint followed by the lines to paste."""
    lead = finding.hint.rstrip(". ") if finding.hint else "fix the stack"
    return f"{lead}. To accept it instead, paste into the stack file:\n{block(finding)}"
