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
from invariants.policy import ElfAllowance
from invariants.view import Layer, Tree, View

EXEC_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")
# Every file the stage step writes (hardlinked from the extraction cache, or copied) has
# mtime 0: a staged file with another mtime was written since and its digest is unknown.
STAGED_MTIME_NS = 0


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
    # path -> (sha256, size) of the overlay's files as the stage step recorded them
    digests: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    _loader: Loader | None = None
    _facts: dict[str, ElfFacts] | None = None
    _elves: list[tuple[str, ElfFacts]] | None = None

    def package(self, path: str) -> str | None:
        return self.owners.get(path)

    def elf(self, path: str) -> ElfFacts | None:
        """Facts of the overlay's regular file at ``path`` (None: not ELF, or not a file)."""
        return self._all_facts().get(path)

    def elves(self) -> list[tuple[str, ElfFacts]]:
        """Every ELF regular file in the overlay, sorted by path."""
        if self._elves is None:
            self._elves = sorted(self._all_facts().items())
        return list(self._elves)

    def known_digest(self, path: str) -> str | None:
        """The recorded sha256 of the overlay's file at ``path`` when the file still has
        the recorded size and the stage step's mtime, else None."""
        recorded = self.digests.get(path)
        key = self.overlay.keys.get(path)
        if recorded is None or key is None:
            return None
        sha256, size = recorded
        return sha256 if key[2] == size and key[3] == STAGED_MTIME_NS else None

    def _all_facts(self) -> dict[str, ElfFacts]:
        """Facts of every ELF file of the overlay, read once (stored facts fetched at once)."""
        if self._facts is None:
            files = [(p, n) for p, n in self.overlay.nodes.items() if n.kind == "file"]
            known = {p: d for p, _ in files if (d := self.known_digest(p)) is not None}
            elf.preload(known.values())
            elf.parse_many([(self.overlay.nodes[p].source, d) for p, d in known.items()])
            out: dict[str, ElfFacts] = {}
            for path, node in files:
                facts = elf.facts(node.source, known.get(path), self.overlay.keys.get(path))
                if facts is not None:
                    out[path] = facts
            self._facts = out
        return self._facts

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
