"""What every invariant gets (:class:`CheckContext`) and what it returns (:class:`Finding`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invariants import elf
from invariants.elf import ElfFacts
from invariants.loader import Loader, Search
from invariants.view import Layer, Tree, View
from overlays.stack import ElfAllowance

EXEC_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


@dataclass(frozen=True)
class Finding:
    """One thing an invariant found, on one path of the checked tree."""

    invariant: str
    path: str
    detail: str
    hint: str
    package: str | None = None
    status: str = "fail"  # fail, accounted, reported
    reason: str | None = None  # why it is accounted (a waiver's or allow_elf's reason)

    def as_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "path": self.path, "detail": self.detail,
                "hint": self.hint, "package": self.package, "status": self.status,
                "reason": self.reason}


@dataclass
class CheckContext:
    """The checked tree, the views around it and the stack's policy knobs."""

    tree: Path
    stack_class: str
    owners: Mapping[str, str]
    overlay: Tree  # the checked tree alone
    lower: View  # every layer below the checked tree
    view: View  # lower + the checked tree on top
    search: Search
    allow_elf: Sequence[ElfAllowance] = ()
    allow_32bit: bool = False
    layers: Sequence[Layer] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # facts invariants leave for the report
    _loader: Loader | None = None

    def package(self, path: str) -> str | None:
        return self.owners.get(path)

    def elf(self, path: str) -> ElfFacts | None:
        """Facts of the overlay's regular file at ``path`` (None: not ELF, or not a file)."""
        node = self.overlay.nodes.get(path)
        if node is None or node.kind != "file":
            return None
        return elf.facts(node.source)

    def elves(self) -> list[tuple[str, ElfFacts]]:
        """Every ELF regular file in the overlay, sorted by path."""
        out = []
        for path, node in self.overlay.nodes.items():
            if node.kind == "file":
                facts = elf.facts(node.source)
                if facts is not None:
                    out.append((path, facts))
        return out

    def allowance(self, path: str) -> ElfAllowance | None:
        for allow in self.allow_elf:
            if fnmatch.fnmatchcase(path, allow.path):
                return allow
        return None

    def loader(self) -> Loader:
        if self._loader is None:
            self._loader = Loader(self.view, self.search)
        return self._loader


def under(path: str, roots: Sequence[str]) -> str | None:
    """The first of ``roots`` that ``path`` is or lies under, else None."""
    for root in roots:
        if path == root or path.startswith(root + "/"):
            return root
    return None
