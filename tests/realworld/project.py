"""A throwaway fexstack project on the real-world corpus, for ``doit overlay:``/``run:``.

Test tooling only. :func:`new_project` makes ``where/project`` (``python3 -m tasks`` runs
doit with fexstack's tasks there) with ``stacks/repos.toml`` (repo ``realworld``) and
``stacks/bases/realworld.toml`` (the corpus base, plus ``host_provides`` when given);
:func:`write_stack` writes a deps stack with seeds, an ``[app]`` (a thin AppImage from
:mod:`tests.realworld.apps`) and kept executables. ``project.doit("run:<name>",
"--backend", "native")`` then builds and runs it (see :class:`tests.pipeline_support.Project`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from tests.pipeline_support import Project
from tests.realworld import corpus
from tests.realworld.corpus import Corpus


def set_host_provides(project: Project, found: Corpus, paths: Sequence[str]) -> None:
    """Rewrite the base TOML with ``host_provides = paths`` (none: the key left out)."""
    text = found.base_toml.read_text()
    if paths:
        text += f"host_provides = {json.dumps(list(paths))}\n"
    (project.stacks / "bases" / f"{corpus.BASE_ID}.toml").write_text(text)


def new_project(where: Path, found: Corpus, *, host_provides: Sequence[str] = ()) -> Project:
    root = where / "project"
    (root / "stacks" / "bases").mkdir(parents=True)
    shutil.copyfile(found.repos_toml, root / "stacks" / "repos.toml")
    project = Project(root, where / "cache", cast(Any, None))
    set_host_provides(project, found, host_provides)
    return project


def write_stack(
    project: Project,
    found: Corpus,
    name: str,
    seeds: Mapping[str, str],
    *,
    appimage: Path | None = None,
    keep_executables: Mapping[str, str] | None = None,
    app_env: Mapping[str, str] | None = None,
    timeout_seconds: int | None = None,
) -> Path:
    lines = [
        "[stack]", f'description = "{name}"', 'class = "deps"', f'base = "{corpus.BASE_ID}"',
        "", "[source]", f'release = "{found.release}"', f'repos = ["{corpus.REPO_ID}"]', "",
        "[seeds]", *(f'"{seed}" = {json.dumps(why)}' for seed, why in seeds.items()), "",
    ]  # fmt: skip
    for path, why in (keep_executables or {}).items():
        lines += ["[[policy.keep_executable]]", f'path = "{path}"', f"reason = {json.dumps(why)}",
                  ""]  # fmt: skip
    if appimage is not None:
        lines += ["[app]", f'appimage = "{appimage}"']
        if timeout_seconds is not None:
            lines.append(f"timeout_seconds = {timeout_seconds}")
        if app_env:
            lines.append("[app.env]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in sorted(app_env.items())]
    path = project.stacks / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def bundles(project: Project, name: str) -> list[Path]:
    folder = project.root / "evidence" / name
    return sorted(folder.iterdir()) if folder.is_dir() else []
