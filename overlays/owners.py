"""The owners record ``build/<name>/owners.json`` (schema ``owners``).

Which package brought each path of a staging tree: written once by the stage step
(:func:`overlays.staging.stage_lock`), read by the check step (which package a finding is
about, and where its digests come from) and the image step (the manifest's ``package`` of
every file). :meth:`Owners.write` and :meth:`Owners.read` are its one writer and reader;
both validate against the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fexstack import jsonio
from fexstack.errors import StageError

SCHEMA = "owners"


@dataclass(frozen=True)
class Owners:
    """Every path of a staging tree (absolute, as installed; not "/") -> its package."""

    paths: Mapping[str, str]

    def write(self, path: Path) -> None:
        jsonio.write(path, dict(self.paths), SCHEMA)

    @classmethod
    def read(cls, path: Path) -> Owners:
        doc = jsonio.read_record(
            path,
            SCHEMA,
            error=StageError,
            what="owners record",
            hint=f"stage the tree again: doit stage:{path.parent.name}",
        )
        return cls(doc)
