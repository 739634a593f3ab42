"""The stage step's cache pass and its record, ``build/<name>/caches.json``.

The one writer is :func:`stage_caches` (called by :func:`overlays.pipeline.stage` after
the packages are staged); the one reader is :func:`read`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fexstack import jsonio
from invariants.view import View
from overlays.caches.generate import RECIPE, generate

SCHEMA = "caches"


def record_path(step_dir: Path) -> Path:
    return step_dir / "caches.json"


def stage_caches(
    staging: Path, step_dir: Path, lower: View, host_provides: tuple[str, ...], name: str
) -> list[dict[str, Any]]:
    """Generate the caches into ``staging`` and write the record beside it."""
    def say(line: str) -> None:
        print(f"stage:{name}: {line}", file=sys.stderr)

    records = generate(staging, lower, host_provides, progress=say)
    jsonio.write(record_path(step_dir), {"recipe": RECIPE, "caches": records}, SCHEMA)
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
    doc = jsonio.read(path)
    jsonio.validate(doc, SCHEMA)
    return list(doc["caches"])
