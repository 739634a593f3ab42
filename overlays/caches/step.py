"""The stage step's cache pass and its record, ``build/<name>/caches.json``.

The record is :class:`CachesRecord`: its one writer is :func:`stage_caches` (called by
:func:`overlays.pipeline.stage` after the packages are staged), its one reader :func:`read`
(the image step: the manifest's ``install.caches`` and the image's identity); both
validate against the schema.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import jsonio
from fexstack.errors import StageError
from invariants.view import View
from overlays.caches.generate import RECIPE, generate

SCHEMA = "caches"


def record_path(step_dir: Path) -> Path:
    return step_dir / "caches.json"


@dataclass(frozen=True)
class CachesRecord:
    """``caches.json``: the recipe that made the caches and one row per cache kind
    (made: tool, where it ran, versions, digests, files; skipped: why), as the schema
    describes them."""

    recipe: int
    caches: tuple[Mapping[str, Any], ...]

    def write(self, path: Path) -> None:
        jsonio.write(path, {"recipe": self.recipe, "caches": [dict(c) for c in self.caches]},
                     SCHEMA)  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> CachesRecord:
        doc = jsonio.read_record(
            path,
            SCHEMA,
            error=StageError,
            what="install-time caches record",
            hint=f"stage the tree again: doit stage:{path.parent.name}",
        )
        return cls(doc["recipe"], tuple(doc["caches"]))


def stage_caches(
    staging: Path, step_dir: Path, lower: View, host_provides: tuple[str, ...], name: str
) -> list[dict[str, Any]]:
    """Generate the caches into ``staging`` and write the record beside it."""
    def say(line: str) -> None:
        print(f"stage:{name}: {line}", file=sys.stderr)

    records = generate(staging, lower, host_provides, progress=say)
    CachesRecord(RECIPE, tuple(records)).write(record_path(step_dir))
    for rec in records:
        what = (f"made by {rec['tool']} ({rec['where']})" if rec["status"] == "made"
                else f"not made: {rec['reason']}")  # fmt: skip
        print(f"stage:{name}: cache {rec['cache']} {what}", file=sys.stderr)
        for line in str(rec.get("messages", "")).splitlines():
            print(f"stage:{name}:   {line}", file=sys.stderr)
    return records


def read(step_dir: Path) -> list[dict[str, Any]]:
    """The records, or [] for a stage from before caches were generated."""
    path = record_path(step_dir)
    if not path.exists():
        return []
    return [dict(c) for c in CachesRecord.read(path).caches]
