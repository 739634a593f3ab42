"""The check policy of one stack: what its invariants check against and what it accounts for.

A :class:`CheckPolicy` is built from a stack (``Stack.check_policy()``) and is all the
check step reads of the stack besides its base's layers: the artifact class, the waivers
(``[[policy.waiver]]``, plus one per ``[[policy.keep_executable]]``), the ELF allowances,
``allow_32bit``, the loader's search (the base's lib_dirs, the app's LD_LIBRARY_PATH).
Its :meth:`CheckPolicy.inputs` is the check step's up-to-date input, so a setting the check
reads is always one the build notices changing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from invariants.loader import DEFAULT_LIB_DIRS, FEX_HWCAPS


@dataclass(frozen=True)
class Waiver:
    """A ``[[policy.waiver]]``: accounts for findings of one invariant on matching paths."""

    invariant: str
    reason: str
    path: str | None = None  # fnmatch glob on the absolute path in the overlay
    package: str | None = None  # package name


@dataclass(frozen=True)
class ElfAllowance:
    """A ``[[policy.allow_elf]]``: non-load-bearing ELF (eBPF, firmware), accounted."""

    path: str  # fnmatch glob
    reason: str


@dataclass(frozen=True)
class KeptExecutable:
    """A ``[[policy.keep_executable]]``: a tool executable a deps overlay keeps."""

    path: str  # fnmatch glob on the installed path (e.g. /usr/bin/foo)
    reason: str


def kept_waivers(kept: Sequence[KeptExecutable]) -> tuple[Waiver, ...]:
    """A ``[[policy.keep_executable]]`` accounts for the library-focus finding of the
    path it keeps (with its reason); precedence still judges the path."""
    return tuple(
        Waiver("library-focus", f"kept executable: {k.reason}", path=k.path) for k in kept
    )


@dataclass(frozen=True)
class CheckPolicy:
    """Everything the invariants take from a stack (see the module docstring)."""

    stack_class: str
    waivers: tuple[Waiver, ...] = ()
    allow_elf: tuple[ElfAllowance, ...] = ()
    allow_32bit: bool = False
    keep_executables: tuple[KeptExecutable, ...] = ()
    ld_library_path: tuple[str, ...] = ()
    lib_dirs: tuple[str, ...] = DEFAULT_LIB_DIRS
    hwcaps: tuple[str, ...] = FEX_HWCAPS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def all_waivers(self) -> tuple[Waiver, ...]:
        """The stack's waivers, then one for each kept executable."""
        return (*self.waivers, *kept_waivers(self.keep_executables))

    def inputs(self) -> dict[str, Any]:
        """The policy as JSON-able data: the check step's up-to-date input."""
        return dataclasses.asdict(self)
