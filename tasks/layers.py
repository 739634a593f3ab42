"""The deps layer of an app's run, built here or pulled (overlays/pull.py), and what
comes with it: the merged view appcheck reads, the tasks ``run:<app>`` depends on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from overlays import pipeline
from overlays.project import Project
from overlays.stack import Stack
from tasks.stackinfo import StackInfo


def deps_layers(project: Project, name: str) -> list[tuple[str, Path, Path]]:
    from overlays.pull import adopted

    pulled = adopted(project, name)  # a pulled overlay that matches the lock and base
    if pulled is not None:
        return [(name, pulled.image, pulled.manifest)]
    return [(name, project.image(name), project.manifest(name))]


def deps_view(project: Project, name: str) -> Any:
    """The deps overlay as a layer of the merged view (its image, extracted once)."""
    from invariants.view import layer

    return layer(deps_layers(project, name)[0][1], "deps", name)


def run_deps(project: Project, info: StackInfo) -> list[str]:
    """The tasks ``run:<app>`` depends on: the overlay's build, or with an adopted pulled
    overlay (overlays/pull.py) only the base's compat overlay."""
    from overlays.pull import adoptable

    if info.stack is not None and adoptable(project, info.stack) is not None:
        return list(info.compat_tasks)
    return [f"overlay:{info.name}"]


def appcheck_for(project: Project, stack: Stack) -> Any:
    """The appcheck hook of a run (interpreter, linkability and ISA of the AppImage's ELF)."""
    from runner.appcheck import make_appcheck

    def layers() -> list[Any]:
        return [*pipeline.view_layers(project, stack), deps_view(project, stack.name)]

    return make_appcheck(stack, view_layers=layers)
