"""Completion stamps: a step is up to date only when it completed for these inputs.

doit records a task's success in its database only when the doit process ends normally.
A build killed with SIGKILL leaves the outputs of the steps it completed (and the
database of the run before). Were the inputs then put back as they were, doit would
take those newer outputs for the old inputs' ones. Each step therefore writes a stamp
when it completes, with the fingerprints of its file_dep and its settings, and is up to
date only when its stamp matches the current ones. The stamp is removed first thing
when the step starts, so a step that fails or is killed is never taken as done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fexstack import atomic, jsonio
from overlays import pipeline
from overlays.project import Project
from tasks.stackinfo import bases, stacks

STAMP_SCHEMA = "stamp"  # tasks/schemas/stamp.schema.json: the one writer and reader are here
_HASHED_UP_TO = 8 << 20  # bytes; larger files (base images) are fingerprinted by stat


def stamp_path(project: Project, step: str, name: str) -> Path:
    """The completion stamp of ``<step>:<name>``, beside the step's outputs.

    ``build/<name>/.<step>.done.json``; a base's compat step: ``build/compat/.<base>.done.json``.
    """
    if step == "compat":
        return pipeline.compat_record(project, name).parent / f".{name}.done.json"
    return project.step_dir(name) / f".{step}.done.json"


def _fingerprint(path: str) -> str | None:
    from fexstack.digest import sha256_file

    try:
        st = os.stat(path)
        if st.st_size > _HASHED_UP_TO:
            return f"stat:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        return "sha256:" + sha256_file(Path(path))
    except OSError:
        return None


def _stamp(file_dep: Sequence[str], config: Any) -> dict[str, Any]:
    return {
        "files": {path: _fingerprint(path) for path in sorted(file_dep)},
        "config": json.loads(json.dumps(config, sort_keys=True, default=str)),
    }


def step_config(step: str, inputs: Any) -> dict[str, Any]:
    """What a step's stamp and doit's config_changed record besides files: its recipe
    version (tasks.action.RECIPE) and the stack settings it reads."""
    from tasks.action import RECIPE

    return {"recipe": RECIPE[step], "inputs": inputs}


def ensure_compat(project: Project, base_id: str) -> None:
    """The compat step of ``base_id`` outside a doit run (a probe's context): run, with
    its stamp, when it is not complete for the current inputs (as ``compat:<base>``)."""
    info = bases(project, stacks(project))[base_id]
    stamp = stamp_path(project, "compat", base_id)
    config = step_config("compat", info.inputs)
    if not step_done(stamp, info.file_deps, config)():
        forget_step(stamp)
        pipeline.compat(project, base_id)
        complete_step(stamp, info.file_deps, config)


def forget_step(stamp: Path) -> None:
    """The first action of a step: it is not complete until its last action says so."""
    atomic.remove(stamp)


def complete_step(stamp: Path, file_dep: Sequence[str], config: Any) -> None:
    """The last action of a step: stamp it complete for the inputs it read.

    ``file_dep`` may also name outputs that are sources too (the lock), so that a lock
    replaced by hand is checked again.
    """
    jsonio.write(stamp, _stamp(file_dep, config), STAMP_SCHEMA)


def step_done(stamp: Path, file_dep: Sequence[str], config: Any) -> Callable[[], bool]:
    """An uptodate check: the step completed for exactly the current inputs."""

    def check() -> bool:
        try:
            recorded = jsonio.read(stamp)
        except (OSError, ValueError):
            return False  # missing or not JSON: the step runs again
        if jsonio.schema_error(recorded, STAMP_SCHEMA) is not None:
            return False  # not a stamp: the step runs again
        return bool(recorded == _stamp(file_dep, config))

    return check
