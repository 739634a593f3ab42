"""The stage step's record ``build/<name>/stage.json`` (schema ``stage``).

What the stage step made of a lock: counts, the setuid/setgid files, dropped file
capabilities, FIFOs, shared paths, and where payload paths went (``redirected`` into the
base, tool executables ``dropped``). Written once by :func:`overlays.staging.stage_lock`;
read by the check step (the dropped executables it reports, the payload path of each
redirected file) and the image step (the manifest's ``install``, the image's identity).
:meth:`StageRecord.write` and :meth:`StageRecord.read` are its one writer and reader; both
validate against the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import jsonio
from fexstack.errors import StageError

SCHEMA = "stage"

Row = Mapping[str, str]


@dataclass(frozen=True)
class StageRecord:
    """One stage of a lock. Rows are as the schema describes them; ``kept``,
    ``removed``, ``redirected`` and ``dropped`` are absent from records of older stages
    (read as none)."""

    stack: str
    fexstack: str
    inputs: str  # sha256:<digest of the staged packages' sha256s, sorted by name>
    packages: int
    extracted: int
    reused: int
    extracted_packages: tuple[str, ...]
    paths: int
    files: int
    dirs: int
    symlinks: int
    bytes: int
    hardlinked: int
    copied: int
    setuid: tuple[Row, ...]  # path, package, mode ("4755")
    caps_dropped: tuple[Row, ...]  # path, package, caps
    fifos: tuple[Row, ...]  # path, package
    shared: Mapping[str, tuple[str, ...]]  # path -> the packages bringing it, identical
    dir_mode_differences: Mapping[str, Mapping[str, str]]  # dir -> package -> mode
    seconds: float
    kept: int = 0
    removed: int = 0
    redirected: tuple[Row, ...] = ()  # original, installed, package
    dropped: tuple[Row, ...] = ()  # path, original, package, type

    def to_json(self) -> dict[str, Any]:
        return {
            "step": "stage",
            "stack": self.stack,
            "fexstack": self.fexstack,
            "inputs": self.inputs,
            "packages": self.packages,
            "extracted": self.extracted,
            "reused": self.reused,
            "extracted_packages": list(self.extracted_packages),
            "paths": self.paths,
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "bytes": self.bytes,
            "hardlinked": self.hardlinked,
            "copied": self.copied,
            "kept": self.kept,
            "removed": self.removed,
            "setuid": [dict(r) for r in self.setuid],
            "caps_dropped": [dict(r) for r in self.caps_dropped],
            "fifos": [dict(r) for r in self.fifos],
            "shared": {p: list(pkgs) for p, pkgs in self.shared.items()},
            "dir_mode_differences": {
                p: dict(modes) for p, modes in self.dir_mode_differences.items()
            },
            "seconds": self.seconds,
            "redirected": [dict(r) for r in self.redirected],
            "dropped": [dict(r) for r in self.dropped],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StageRecord:
        """The record of a document that matches the schema."""
        return cls(
            stack=doc["stack"],
            fexstack=doc["fexstack"],
            inputs=doc["inputs"],
            packages=doc["packages"],
            extracted=doc["extracted"],
            reused=doc["reused"],
            extracted_packages=tuple(doc["extracted_packages"]),
            paths=doc["paths"],
            files=doc["files"],
            dirs=doc["dirs"],
            symlinks=doc["symlinks"],
            bytes=doc["bytes"],
            hardlinked=doc["hardlinked"],
            copied=doc["copied"],
            kept=doc.get("kept", 0),
            removed=doc.get("removed", 0),
            setuid=tuple(dict(r) for r in doc["setuid"]),
            caps_dropped=tuple(dict(r) for r in doc["caps_dropped"]),
            fifos=tuple(dict(r) for r in doc["fifos"]),
            shared={p: tuple(pkgs) for p, pkgs in doc["shared"].items()},
            dir_mode_differences={p: dict(m) for p, m in doc["dir_mode_differences"].items()},
            seconds=doc["seconds"],
            redirected=tuple(dict(r) for r in doc.get("redirected", ())),
            dropped=tuple(dict(r) for r in doc.get("dropped", ())),
        )

    def write(self, path: Path) -> None:
        jsonio.write(path, self.to_json(), SCHEMA)

    @classmethod
    def read(cls, path: Path) -> StageRecord:
        doc = jsonio.read_record(
            path,
            SCHEMA,
            error=StageError,
            what="stage record",
            hint=f"stage the tree again: doit stage:{path.parent.name}",
        )
        return cls.from_json(doc)
