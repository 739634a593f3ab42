"""The one table of invariants and how each artifact class applies them.

``enforce``: a finding no waiver accounts for fails the check; ``report``: findings are
listed but do not fail; ``skip``: not run. Classes are those of DESIGN.md: base, gpu,
compat, deps, base-refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from invariants import (
    arch,
    boundary,
    caches,
    conflict,
    focus,
    interpreter,
    isa,
    linkability,
    precedence,
    privilege,
    shape,
)
from invariants.context import CheckContext, Finding

CLASSES = ("base", "gpu", "compat", "deps", "base-refresh")

Check = Callable[[CheckContext], list[Finding]]


@dataclass(frozen=True)
class Invariant:
    name: str
    letter: str  # RFC 0003 letter ("" for linkability and the compat shape)
    title: str
    check: Check
    policy: Mapping[str, str]


def _policy(deps: str, refresh: str, compat: str, base: str = "report") -> Mapping[str, str]:
    return MappingProxyType(
        {"deps": deps, "base-refresh": refresh, "compat": compat, "base": base, "gpu": base}
    )


E, R, S = "enforce", "report", "skip"

INVARIANTS: Mapping[str, Invariant] = MappingProxyType({
    inv.name: inv
    for inv in (
        Invariant(arch.NAME, "A", "arch hygiene", arch.check, _policy(E, E, E)),
        Invariant(boundary.NAME, "B", "ABI boundary", boundary.check, _policy(E, R, S)),
        Invariant(precedence.NAME, "C", "precedence", precedence.check, _policy(E, R, E)),
        Invariant(focus.NAME, "D", "library focus", focus.check, _policy(E, R, E)),
        Invariant(privilege.NAME, "", "no setuid/setgid", privilege.check, _policy(E, R, E)),
        Invariant(interpreter.NAME, "E", "interpreter", interpreter.check, _policy(E, E, S)),
        Invariant(isa.NAME, "E", "ISA level", isa.check, _policy(E, E, S)),
        Invariant(linkability.NAME, "", "linkability", linkability.check, _policy(E, E, S)),
        Invariant(conflict.NAME, "", "ABI conflicts", conflict.check, _policy(E, E, S)),
        Invariant(shape.NAME, "", "compat overlay shape", shape.check, _policy(S, S, E, S)),
        Invariant(caches.NAME, "", "install-time caches", caches.check, _policy(R, R, R)),
    )
})


def by_name(name: str) -> Invariant | None:
    """An invariant by its name or its RFC letter (a letter naming two gives the first)."""
    if name in INVARIANTS:
        return INVARIANTS[name]
    return next((i for i in INVARIANTS.values() if i.letter and i.letter == name.upper()), None)


def policy(name: str, stack_class: str) -> str:
    return INVARIANTS[name].policy[stack_class]
