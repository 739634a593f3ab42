"""fexstack's doit tasks. This file only declares them; the work is in overlays/,
invariants/ and runner/ (see overlays/pipeline.py for the actions).

    doit list                      every task
    doit overlay:<name>            lock, fetch, stage, check and image one stack
    doit build overlay:<name>      the same, refusing anything that would launch an app
    doit run:<app>                 bring the app's overlays up to date, then run it
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from fexstack import buildlock
from overlays import pipeline, tasks as tasking
from overlays.project import Project

PROJECT = Project(Path(__file__).resolve().parent)
PROJECT.build_dir.mkdir(parents=True, exist_ok=True)

DOIT_CONFIG = {
    "backend": "sqlite3",
    "dep_file": str(PROJECT.build_dir / ".doit.db"),
    "verbosity": 2,
    "default_tasks": [],
}

if tasking.executes_tasks(sys.argv[1:]):
    buildlock.acquire(PROJECT.build_dir)

STACKS = tasking.stacks(PROJECT)


def _do(step: Any, *args: Any) -> Any:
    return functools.partial(pipeline.action(step), PROJECT, *args)


def _recipe(step: str, *extra: Any) -> Any:
    return config_changed({"recipe": pipeline.RECIPE[step], "extra": [str(e) for e in extra]})


def task_demo() -> Iterator[dict[str, Any]]:
    """Generate the embedded demo's repository, base and AppImage from demo/."""
    sources = sorted(str(p) for p in (PROJECT.root / "demo").rglob("*") if p.is_file())
    folder = pipeline.demo_dir(PROJECT)
    common = {"file_dep": sources, "uptodate": [_recipe("demo")], "clean": True}
    yield {
        "name": "repo",
        "doc": "build the demo's RPM repository from demo/ sources",
        "actions": [_do(pipeline.demo_repo)],
        "targets": [str(folder / "repo" / "repodata" / "repomd.xml")],
        **common,
    }
    yield {
        "name": "base",
        "doc": "build the demo base image (glibc and bash, laid out like Fedora's FEX RootFS)",
        "actions": [_do(pipeline.demo_base)],
        "targets": [str(folder / "base.erofs"), str(folder / "base.packages")],
        **common,
    }
    yield {
        "name": "appimage",
        "doc": "build the demo AppImage (#!/bin/bash AppRun, needs the demo overlay)",
        "actions": [_do(pipeline.demo_appimage)],
        "targets": [str(folder / "fexstack-demo.AppImage")],
        **common,
    }


def task_compat() -> Iterator[dict[str, Any]]:
    """The compat overlay of each base (loader path symlinks the base lacks)."""
    for base_id, info in tasking.bases(PROJECT, STACKS).items():
        yield {
            "name": base_id,
            "doc": f"compat overlay for base {base_id} (missing loader paths as symlinks)",
            "actions": [_do(pipeline.compat, base_id)],
            "file_dep": info.file_deps,
            "targets": [str(pipeline.compat_record(PROJECT, base_id))],
            "uptodate": [_recipe("compat")],
            "clean": True,
        }


def task_lock() -> Iterator[dict[str, Any]]:
    """Resolve a stack's seeds into stacks/<name>.lock.toml."""
    for name, info in STACKS.items():
        yield {
            "name": name,
            "doc": f"resolve {name}'s seeds into stacks/{name}.lock.toml (libdnf5)",
            "actions": [_do(pipeline.lock, name)],
            "file_dep": info.lock_deps,
            "targets": [str(PROJECT.lock_path(name))],
            "uptodate": [_recipe("lock")],
        }


def task_fetch() -> Iterator[dict[str, Any]]:
    """Download and verify the locked RPMs into the cache."""
    for name in STACKS:
        yield {
            "name": name,
            "doc": f"download and verify {name}'s locked RPMs (sha256, signatures)",
            "actions": [_do(pipeline.fetch, name)],
            "file_dep": [str(PROJECT.lock_path(name))],
            "targets": [str(PROJECT.record(name, "fetch"))],
            "uptodate": [_recipe("fetch"), tasking.cached_rpms(PROJECT, name)],
            "clean": True,
        }


def task_stage() -> Iterator[dict[str, Any]]:
    """Extract the RPMs safely into build/<name>/staging."""
    for name in STACKS:
        yield {
            "name": name,
            "doc": f"extract {name}'s RPMs into build/{name}/staging",
            "actions": [_do(pipeline.stage, name)],
            "file_dep": [str(PROJECT.lock_path(name)), str(PROJECT.record(name, "fetch"))],
            "targets": [str(PROJECT.record(name, "stage")), str(PROJECT.owners(name))],
            "uptodate": [_recipe("stage"), tasking.exists(PROJECT.staging(name))],
            "clean": [tasking.remove(PROJECT.staging(name))],
        }


def task_check() -> Iterator[dict[str, Any]]:
    """Run the invariants on the staged tree against the base view."""
    for name, info in STACKS.items():
        yield {
            "name": name,
            "doc": f"check {name}'s staged tree (arch, ABI boundary, precedence, loader)",
            "actions": [_do(pipeline.check, name)],
            "file_dep": [
                str(PROJECT.record(name, "stage")),
                str(PROJECT.owners(name)),
                *info.check_deps,
            ],
            "targets": [str(PROJECT.invariants(name))],
            "uptodate": [_recipe("check")],
            "clean": True,
        }


def task_image() -> Iterator[dict[str, Any]]:
    """Make the reproducible EROFS image and its manifest."""
    for name, info in STACKS.items():
        yield {
            "name": name,
            "doc": f"make build/overlays/{name}.erofs and its manifest",
            "actions": [_do(pipeline.image, name)],
            "file_dep": [
                str(PROJECT.invariants(name)),
                str(PROJECT.record(name, "stage")),
                str(PROJECT.owners(name)),
                str(PROJECT.lock_path(name)),
                *info.stack_files,
            ],
            "targets": [str(PROJECT.image(name)), str(PROJECT.manifest(name))],
            "uptodate": [_recipe("image"), tasking.exists(PROJECT.staging(name))],
            "clean": True,
        }


def task_overlay() -> Iterator[dict[str, Any]]:
    """Bring an overlay up to date (lock, fetch, stage, check, image)."""
    for name, info in STACKS.items():
        yield {
            "name": name,
            "doc": f"bring the {name} overlay up to date (lock, fetch, stage, check, image)",
            "actions": [tasking.announce(PROJECT, name)],
            "task_dep": [f"image:{name}", *info.compat_tasks],
            "uptodate": [True],
            "clean": [tasking.remove(PROJECT.step_dir(name)), tasking.remove_image(PROJECT, name)],
        }


def task_why() -> Iterator[dict[str, Any]]:
    """Print why a package is in a stack's lock (its path to a seed)."""
    for name in STACKS:
        yield {
            "name": name,
            "doc": f"print the dependency path of a package in {name}'s lock (--package P)",
            "actions": [_do(tasking.why, name)],
            "file_dep": [str(PROJECT.lock_path(name))],
            "params": [{"name": "package", "long": "package", "short": "p", "default": ""}],
            "uptodate": [False],
            "verbosity": 2,
        }


def task_doctor() -> dict[str, Any]:
    """Preflight checks for running apps (muvm, FEX, images, display)."""
    return {
        "doc": "preflight checks for running apps, as a table (--json for JSON)",
        "actions": [_do(tasking.doctor)],
        "params": [{"name": "json", "long": "json", "type": bool, "default": False}],
        "uptodate": [False],
        "verbosity": 2,
    }


def _run_tasks() -> Iterator[dict[str, Any]]:
    for name, info in STACKS.items():
        if not info.has_app:
            continue
        yield {
            "basename": f"run:{name}",
            "doc": f"bring {name}'s overlays up to date, then run its app and write evidence",
            "actions": [_do(tasking.run, name)],
            "task_dep": [f"overlay:{name}"],
            "file_dep": info.app_deps,
            "params": tasking.RUN_PARAMS,
            "uptodate": [False],
            "verbosity": 2,
        }


def task_apps() -> Iterator[dict[str, Any]]:
    """run:<app> tasks (doit's own 'run' command name is taken, so each has a basename)."""
    yield from _run_tasks()
