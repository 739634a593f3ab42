"""Where a project's stacks, locks, step records and images live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Project:
    """A fexstack checkout (or any folder with a ``stacks/`` directory)."""

    root: Path

    @property
    def stacks_dir(self) -> Path:
        return self.root / "stacks"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def overlays_dir(self) -> Path:
        return self.build_dir / "overlays"

    @property
    def evidence_dir(self) -> Path:
        return self.root / "evidence"

    def lock_path(self, name: str) -> Path:
        return self.stacks_dir / f"{name}.lock.toml"

    def step_dir(self, name: str) -> Path:
        """``build/<name>/``: step records, the staging tree, the invariants report."""
        return self.build_dir / name

    def staging(self, name: str) -> Path:
        return self.step_dir(name) / "staging"

    def record(self, name: str, step: str) -> Path:
        """The JSON record a step writes (``build/<name>/<step>.json``)."""
        return self.step_dir(name) / f"{step}.json"

    def owners(self, name: str) -> Path:
        return self.step_dir(name) / "owners.json"

    def invariants(self, name: str) -> Path:
        return self.step_dir(name) / "invariants.json"

    def image(self, name: str) -> Path:
        return self.overlays_dir / f"{name}.erofs"

    def manifest(self, name: str) -> Path:
        return self.overlays_dir / f"{name}.manifest.json"
