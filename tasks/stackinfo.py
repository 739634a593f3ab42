"""What the task declarations know of each stack and base: :class:`StackInfo` and
:class:`BaseInfo`, with the files each step depends on.

A stack that fails to load still gets its tasks: its StackInfo carries the error, and
their action reports it with its hint, so ``doit list`` works while one stack file is broken.
"""

from __future__ import annotations

import glob
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fexstack.errors import FexstackError
from overlays import pipeline
from overlays.project import Project
from overlays.stack import Stack, buildable, load_stack


@dataclass
class StackInfo:
    """What the task declarations need to know of one stack."""

    name: str
    stack: Stack | None
    error: FexstackError | None = None
    stack_files: list[str] = field(default_factory=list)
    lock_deps: list[str] = field(default_factory=list)
    check_deps: list[str] = field(default_factory=list)
    image_deps: list[str] = field(default_factory=list)
    compat_tasks: list[str] = field(default_factory=list)
    app_deps: list[str] = field(default_factory=list)

    @property
    def has_app(self) -> bool:
        return self.stack is None or self.stack.app is not None


@dataclass
class BaseInfo:
    file_deps: list[str]
    inputs: Any = None  # what the compat step reads besides files (a directory base's index)


def _existing_or_generated(project: Project, path: Path) -> bool:
    """A dependency doit can use: an existing file, or one a task of ours generates."""
    return path.is_file() or path.is_relative_to(project.build_dir)


def _package_list(project: Project, stack: Stack) -> list[str]:
    packages = stack.base.packages
    if packages is None:
        return []
    if glob.has_magic(str(packages)):
        matches = glob.glob(str(packages))
        return matches if len(matches) == 1 else []
    return [str(packages)] if _existing_or_generated(project, packages) else []


def _local_repo_metadata(stack: Stack) -> list[str]:
    """repomd.xml of every file:// repository, so a regenerated repo re-locks."""
    found = []
    for repo in stack.repos:
        for url in repo.baseurl:
            parsed = urllib.parse.urlparse(url)
            if parsed.scheme == "file":
                found.append(str(Path(urllib.parse.unquote(parsed.path)) / "repodata/repomd.xml"))
    return found


def _image_deps(project: Project, stack: Stack) -> list[str]:
    paths = [stack.base.image, *stack.base.overlays]
    return [str(p) for p in paths if _existing_or_generated(project, p) and not p.is_dir()]


def stacks(project: Project) -> dict[str, StackInfo]:
    """Every buildable stack of the project, loaded once."""
    found: dict[str, StackInfo] = {}
    for name in buildable(project.stacks_dir):
        try:
            stack = load_stack(project.stacks_dir, name)
        except FexstackError as err:
            found[name] = StackInfo(name, None, err)
            continue
        files = [str(p) for p in stack.files]
        base_record = str(pipeline.compat_record(project, stack.base.id))
        app_deps = []
        if stack.app and stack.app.appimage and _existing_or_generated(project, stack.app.appimage):
            app_deps.append(str(stack.app.appimage))
        found[name] = StackInfo(
            name,
            stack,
            stack_files=files,
            lock_deps=[*files, *_package_list(project, stack), *_local_repo_metadata(stack)],
            check_deps=[base_record, *_image_deps(project, stack)],
            image_deps=_image_deps(project, stack),
            compat_tasks=[f"compat:{stack.base.id}"],
            app_deps=app_deps,
        )
    return found


def bases(project: Project, infos: dict[str, StackInfo]) -> dict[str, BaseInfo]:
    """The bases the stacks sit on, with the files their compat overlay depends on."""
    found: dict[str, BaseInfo] = {}
    for info in infos.values():
        if info.stack is None:
            continue
        base = info.stack.base
        deps = [str(base.path)]
        if _existing_or_generated(project, base.image) and not base.image.is_dir():
            deps.append(str(base.image))
        found[base.id] = BaseInfo(deps, {"tree": base_tree_digest(base.image)})
    return found


def base_tree_digest(image: Path) -> str | None:
    """The index digest of a base given as a directory (None for an image or a missing base).

    A directory is no file_dep doit can track: its index (paths, kinds, modes, targets,
    file digests) is an input of the check, image and compat steps instead.
    """
    try:
        return pipeline.base_tree_digest(image)
    except (FexstackError, OSError) as exc:
        return f"unreadable: {exc}"  # the step itself reports it
