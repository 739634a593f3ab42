"""Every task of a fexstack project, declared for doit (dodo.py and ``python3 -m tasks``).

    doit list                      every task
    doit overlay:<name>            lock, fetch, stage, check and image one stack
    doit build overlay:<name>      the same, refusing anything that would launch an app
    doit run:<app>                 bring the app's overlays up to date, then run it
    doit suggest:<app>             run it traced; print seed lines for what it missed

:func:`namespace` returns doit's namespace for a project: DOIT_CONFIG and the ``task_*``
creators. Nothing happens when it is made: the stacks are read when doit first asks for
tasks, once. Each action is ``(function, args)`` of plain values (see
:class:`tasks.action.Step`), so doit's workers need no fork.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from overlays import pipeline
from overlays.project import Project
from tasks import demo
from tasks import probes as probetasks
from tasks.action import Step
from tasks.clean import Clean
from tasks.commands import RUN_PARAMS, SUGGEST_PARAMS
from tasks.inputs import check_inputs, image_inputs, stage_inputs
from tasks.layers import run_deps
from tasks.reporter import EvidenceReporter
from tasks.stackinfo import StackInfo, bases, stacks
from tasks.stamp import complete_step, forget_step, stamp_path, step_config, step_done
from tasks.uptodate import cached_rpms, exists, report_passed


def doit_config(project: Project) -> dict[str, Any]:
    """doit's settings for the project (the only copy: pyproject.toml names the loader)."""
    return {
        "backend": "sqlite3",
        "dep_file": str(project.build_dir / ".doit.db"),
        "verbosity": 2,
        "default_tasks": [],
        # `doit list` shows every task (each stack's steps), not only the task groups.
        "subtasks": True,
        # run:<app> leaves its evidence also when one of its overlays fails to build or check.
        "reporter": EvidenceReporter,
    }


def namespace(root: Path) -> dict[str, Any]:
    """DOIT_CONFIG and the task creators of the project at ``root``."""
    project = Project(Path(root).resolve())

    @functools.cache
    def infos() -> dict[str, StackInfo]:
        return stacks(project)

    def _do(step: str, *args: Any) -> tuple[Step, list[Any]]:
        """An action: the step named ``"module:function"``, called with the project and args."""
        return (Step(step), [project, *args])

    def _clean(step: str, *args: Any) -> tuple[Clean, list[Any]]:
        """A clean action: the step, called with the project and args under the build lock."""
        return (Clean(step), [project, *args])

    def _clean_targets() -> list[tuple[Clean, list[Any]]]:
        """Remove the task's targets, as doit's ``"clean": True`` (tasks/clean.py)."""
        return [_clean("tasks.clean:remove_targets")]

    def _recipe(step: str, inputs: Any = None) -> Any:
        """Rerun ``step`` when its code (RECIPE) or the stack settings it reads change."""
        return config_changed(step_config(step, inputs))

    def _step(
        step: str, name: str, file_dep: list[str], inputs: Any = None, also: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The actions, file_dep and uptodate checks of one pipeline step of one stack (or base).

        The step counts as done only when it completed for the current inputs (see
        step_done): a step that failed or was killed always runs again. ``also``
        names outputs that are checked like inputs (the lock, which users may replace).
        """
        stamp = stamp_path(project, step, name)
        config = step_config(step, inputs)
        stamped = [*file_dep, *also]
        return {
            "name": name,
            "actions": [
                (forget_step, [stamp]),
                _do(f"overlays.pipeline:{step}", name),
                (complete_step, [stamp, stamped, config]),
            ],
            "file_dep": file_dep,
            "uptodate": [config_changed(config), step_done(stamp, stamped, config)],
        }

    def task_demo() -> Iterator[dict[str, Any]]:
        """Generate the embedded demo's repository, base and AppImage from demo/."""
        sources = sorted(str(p) for p in (project.root / "demo").rglob("*") if p.is_file())
        folder = demo.demo_dir(project)
        common = {"file_dep": sources, "uptodate": [_recipe("demo")], "clean": _clean_targets()}
        yield {
            "name": "repo",
            "doc": "build the demo's RPM repository from demo/ sources",
            "actions": [_do("tasks.demo:demo_repo")],
            "targets": [str(folder / "repo" / "repodata" / "repomd.xml")],
            **common,
        }
        yield {
            "name": "base",
            "doc": "build the demo base image (glibc and bash, laid out like Fedora's FEX RootFS)",
            "actions": [_do("tasks.demo:demo_base")],
            "targets": [str(folder / "base.erofs"), str(folder / "base.packages")],
            **common,
        }
        yield {
            "name": "appimage",
            "doc": "build the demo AppImage (#!/bin/bash AppRun, needs the demo overlay)",
            "actions": [_do("tasks.demo:demo_appimage")],
            "targets": [str(folder / "fexstack-demo.AppImage")],
            **common,
        }

    def task_compat() -> Iterator[dict[str, Any]]:
        """The compat overlay of each base (loader path symlinks the base lacks)."""
        for base_id, info in bases(project, infos()).items():
            yield {
                **_step("compat", base_id, info.file_deps, info.inputs),
                "doc": f"compat overlay for base {base_id} (missing loader paths as symlinks)",
                "targets": [str(pipeline.compat_record(project, base_id))],
                "clean": _clean_targets(),
            }

    def task_lock() -> Iterator[dict[str, Any]]:
        """Resolve a stack's seeds into stacks/<name>.lock.toml."""
        for name, info in infos().items():
            lock = str(project.lock_path(name))
            yield {
                **_step("lock", name, info.lock_deps, also=(lock,)),
                "doc": f"resolve {name}'s seeds into stacks/{name}.lock.toml (libdnf5)",
                "targets": [lock],
            }

    def task_fetch() -> Iterator[dict[str, Any]]:
        """Download and verify the locked RPMs into the cache."""
        for name in infos():
            step = _step("fetch", name, [str(project.lock_path(name))])
            yield {
                **step,
                "doc": f"download and verify {name}'s locked RPMs (sha256, signatures)",
                "targets": [str(project.record(name, "fetch"))],
                "uptodate": [*step["uptodate"], cached_rpms(project, name)],
                "clean": _clean_targets(),
            }

    def task_stage() -> Iterator[dict[str, Any]]:
        """Extract the RPMs safely into build/<name>/staging."""
        for name, info in infos().items():
            # the base (and its gpu and compat overlays): payload paths install through them
            deps = [str(project.lock_path(name)), str(project.record(name, "fetch")),
                    *info.check_deps]
            step = _step("stage", name, deps, stage_inputs(info))
            yield {
                **step,
                "doc": f"extract {name}'s RPMs into build/{name}/staging",
                "targets": [str(project.record(name, "stage")), str(project.owners(name))],
                "uptodate": [*step["uptodate"], exists(project.staging(name))],
                "clean": [_clean("tasks.clean:remove", project.staging(name))],
            }

    def task_check() -> Iterator[dict[str, Any]]:
        """Run the invariants on the staged tree against the base view."""
        for name, info in infos().items():
            deps = [str(project.record(name, "stage")), str(project.owners(name)), *info.check_deps]
            step = _step("check", name, deps, check_inputs(info))
            yield {
                **step,
                "doc": f"check {name}'s staged tree (arch, ABI boundary, precedence, loader)",
                "targets": [str(project.invariants(name))],
                "uptodate": [*step["uptodate"], report_passed(project.invariants(name))],
                "clean": _clean_targets(),
            }

    def task_image() -> Iterator[dict[str, Any]]:
        """Make the reproducible EROFS image and its manifest."""
        for name, info in infos().items():
            deps = [
                str(project.invariants(name)),
                str(project.record(name, "stage")),
                str(project.owners(name)),
                str(project.lock_path(name)),
                *info.image_deps,
            ]
            step = _step("image", name, deps, image_inputs(info))
            yield {
                **step,
                "doc": f"make build/overlays/{name}.erofs and its manifest",
                "targets": [str(project.image(name)), str(project.manifest(name))],
                "uptodate": [*step["uptodate"], exists(project.staging(name))],
                "clean": _clean_targets(),
            }

    def task_overlay() -> Iterator[dict[str, Any]]:
        """Bring an overlay up to date (lock, fetch, stage, check, image)."""
        for name, info in infos().items():
            yield {
                "name": name,
                "doc": f"bring the {name} overlay up to date (lock, fetch, stage, check, image)",
                # No action: the image step says where the image and manifest are.
                "actions": None,
                "task_dep": [f"image:{name}", *info.compat_tasks],
                "clean": [_clean("tasks.clean:remove", project.step_dir(name),
                                 project.image(name), project.manifest(name))],
            }

    def task_why() -> Iterator[dict[str, Any]]:
        """Print why a package is in a stack's lock (its path to a seed)."""
        for name in infos():
            yield {
                "name": name,
                "doc": f"print the dependency path of a package in {name}'s lock (--package P)",
                "actions": [_do("tasks.commands:why", name)],
                "file_dep": [str(project.lock_path(name))],
                "params": [{"name": "package", "long": "package", "short": "p", "default": ""}],
                "uptodate": [False],
                "verbosity": 2,
            }

    def task_doctor() -> dict[str, Any]:
        """Preflight checks for running apps (muvm, FEX, images, display)."""
        return {
            "doc": "preflight checks for running apps, as a table (--json, --stack NAME)",
            "actions": [_do("tasks.commands:doctor")],
            "params": [
                {"name": "json", "long": "json", "type": bool, "default": False},
                {"name": "stack", "long": "stack", "default": "",
                 "help": "check this app stack's own layers instead of the system defaults"},
            ],
            "uptodate": [False],
            "verbosity": 2,
        }

    def _run_tasks() -> Iterator[dict[str, Any]]:
        for name, info in infos().items():
            if not info.has_app:
                continue
            yield {
                "basename": f"run:{name}",
                "doc": f"bring {name}'s overlays up to date, then run its app and write evidence",
                "actions": [_do("tasks.commands:run", name)],
                "task_dep": run_deps(project, info),
                "file_dep": info.app_deps,
                "params": RUN_PARAMS,
                "uptodate": [False],
                "verbosity": 2,
            }

    def task_suggest() -> Iterator[dict[str, Any]]:
        """suggest:<app>: run the app traced and print the seeds that provide what it missed."""
        for name, info in infos().items():
            if info.has_app:
                yield {
                    "basename": f"suggest:{name}",
                    "doc": f"run {name}'s app traced; print seed lines for what it missed",
                    "actions": [_do("tasks.commands:suggest", name)],
                    "task_dep": run_deps(project, info),
                    "file_dep": info.app_deps,
                    "params": SUGGEST_PARAMS,
                    "uptodate": [False],
                    "verbosity": 2,
                }

    def task_publish() -> Iterator[dict[str, Any]]:
        """Push a built overlay to an OCI registry (overlays/publish.py)."""
        for name in infos():
            yield {
                "name": name,
                "doc": f"push {name}'s overlay, lock, invariants and SBOM to a registry (--to REF)",
                "actions": [_do("overlays.publish:publish", name)],
                "task_dep": [f"overlay:{name}"],
                "params": [{"name": "to", "long": "to", "default": "",
                            "help": "HOST[:PORT]/REPOSITORY:TAG"}],
                "uptodate": [False],
                "verbosity": 2,
            }

    def task_pull() -> Iterator[dict[str, Any]]:
        """Fetch a published overlay and use it for runs (overlays/pull.py)."""
        for name in infos():
            yield {
                "name": name,
                "doc": f"fetch and verify a published {name} overlay; runs use it (--from REF)",
                "actions": [_do("overlays.pull:pull", name)],
                "params": [{"name": "source", "long": "from", "default": "",
                            "help": "HOST[:PORT]/REPOSITORY:TAG or ...@sha256:DIGEST"}],
                "uptodate": [False],
                "clean": [_clean("overlays.pull:forget", name)],
                "verbosity": 2,
            }

    def task_apps() -> Iterator[dict[str, Any]]:
        """run:<app> tasks (doit's own 'run' command name is taken, so each has a basename)."""
        yield from _run_tasks()

    def task_probe() -> Iterator[dict[str, Any]]:
        """probe:display and probe:gpu: what the guest sees of the display and the GPU."""
        yield from probetasks.task_probe(project, infos())

    def task_ab() -> Iterator[dict[str, Any]]:
        """ab:<app> and ab:probe-gpu: the same run under each --gpu-mode, and diff.json."""
        yield from probetasks.task_ab(project, infos())

    def task_bench() -> Iterator[dict[str, Any]]:
        """bench:<app>: cold and warm start-up timings per phase (bench.json)."""
        yield from probetasks.task_bench(project, infos())

    creators = {k: v for k, v in locals().items() if k.startswith("task_")}
    return {"DOIT_CONFIG": doit_config(project), **creators}
