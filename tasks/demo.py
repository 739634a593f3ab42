"""The embedded demo's generated inputs (demo/ sources -> build/demo/)."""

from __future__ import annotations

from pathlib import Path

from overlays.project import Project
from testkit import demo


def demo_dir(project: Project) -> Path:
    return project.build_dir / "demo"


def demo_repo(project: Project) -> None:
    demo.build_repo(demo_dir(project) / "repo", workdir=demo_dir(project) / "work")


def demo_base(project: Project) -> None:
    folder = demo_dir(project)
    demo.build_base(folder / "base.erofs", folder / "base.packages", workdir=folder / "work")


def demo_appimage(project: Project) -> None:
    demo.build_appimage(demo_dir(project) / "fexstack-demo.AppImage")
