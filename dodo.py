"""fexstack's doit tasks. This file only declares them; the work is in overlays/,
invariants/ and runner/ (see overlays/pipeline.py for the actions).

    doit list                      every task
    doit overlay:<name>            lock, fetch, stage, check and image one stack
    doit build overlay:<name>      the same, refusing anything that would launch an app
    doit run:<app>                 bring the app's overlays up to date, then run it
    doit suggest:<app>             run it traced; print seed lines for what it missed
"""

from __future__ import annotations

import functools
import multiprocessing
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from fexstack import buildlock
from overlays import pipeline
from overlays.project import Project
from tasks import action, demo
from tasks import declare as tasking
from tasks import probes as probetasks

PROJECT = Project(Path(__file__).resolve().parent)
PROJECT.build_dir.mkdir(parents=True, exist_ok=True)

DOIT_CONFIG = {
    "backend": "sqlite3",
    "dep_file": str(PROJECT.build_dir / ".doit.db"),
    "verbosity": 2,
    "default_tasks": [],
    # `doit list` shows every task (each stack's steps), not only the task groups.
    "subtasks": True,
}

if tasking.executes_tasks(sys.argv[1:]):
    buildlock.acquire(PROJECT.build_dir)

# `doit -n N` starts its workers with multiprocessing's default method. Python 3.14
# defaults to forkserver, which pickles every task (actions are closures: it fails);
# fork is what doit expects, and the workers inherit the build lock with it.
multiprocessing.set_start_method("fork", force=True)

STACKS = tasking.stacks(PROJECT)
# run:<app> leaves its evidence also when one of its overlays fails to build or check.
DOIT_CONFIG["reporter"] = tasking.evidence_reporter(PROJECT, STACKS)


def _do(step: Any, *args: Any) -> Any:
    return functools.partial(action.action(step), PROJECT, *args)


def _recipe(step: str, inputs: Any = None) -> Any:
    """Rerun ``step`` when its code (RECIPE) or the stack settings it reads change."""
    return config_changed({"recipe": action.RECIPE[step], "inputs": inputs})


def _step(
    step: str, name: str, file_dep: list[str], inputs: Any = None, also: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The actions, file_dep and uptodate checks of one pipeline step of one stack (or base).

    The step counts as done only when it completed for the current inputs (see
    tasking.step_done): a step that failed or was killed always runs again. ``also``
    names outputs that are checked like inputs (the lock, which users may replace).
    """
    stamp = tasking.stamp_path(PROJECT, step, name)
    config = {"recipe": action.RECIPE[step], "inputs": inputs}
    stamped = [*file_dep, *also]
    return {
        "name": name,
        "actions": [
            tasking.forget_step(stamp),
            _do(getattr(pipeline, step), name),
            tasking.complete_step(stamp, stamped, config),
        ],
        "file_dep": file_dep,
        "uptodate": [config_changed(config), tasking.step_done(stamp, stamped, config)],
    }


def task_demo() -> Iterator[dict[str, Any]]:
    """Generate the embedded demo's repository, base and AppImage from demo/."""
    sources = sorted(str(p) for p in (PROJECT.root / "demo").rglob("*") if p.is_file())
    folder = demo.demo_dir(PROJECT)
    common = {"file_dep": sources, "uptodate": [_recipe("demo")], "clean": True}
    yield {
        "name": "repo",
        "doc": "build the demo's RPM repository from demo/ sources",
        "actions": [_do(demo.demo_repo)],
        "targets": [str(folder / "repo" / "repodata" / "repomd.xml")],
        **common,
    }
    yield {
        "name": "base",
        "doc": "build the demo base image (glibc and bash, laid out like Fedora's FEX RootFS)",
        "actions": [_do(demo.demo_base)],
        "targets": [str(folder / "base.erofs"), str(folder / "base.packages")],
        **common,
    }
    yield {
        "name": "appimage",
        "doc": "build the demo AppImage (#!/bin/bash AppRun, needs the demo overlay)",
        "actions": [_do(demo.demo_appimage)],
        "targets": [str(folder / "fexstack-demo.AppImage")],
        **common,
    }


def task_compat() -> Iterator[dict[str, Any]]:
    """The compat overlay of each base (loader path symlinks the base lacks)."""
    for base_id, info in tasking.bases(PROJECT, STACKS).items():
        yield {
            **_step("compat", base_id, info.file_deps, info.inputs),
            "doc": f"compat overlay for base {base_id} (missing loader paths as symlinks)",
            "targets": [str(pipeline.compat_record(PROJECT, base_id))],
            "clean": True,
        }


def task_lock() -> Iterator[dict[str, Any]]:
    """Resolve a stack's seeds into stacks/<name>.lock.toml."""
    for name, info in STACKS.items():
        lock = str(PROJECT.lock_path(name))
        yield {
            **_step("lock", name, info.lock_deps, also=(lock,)),
            "doc": f"resolve {name}'s seeds into stacks/{name}.lock.toml (libdnf5)",
            "targets": [lock],
        }


def task_fetch() -> Iterator[dict[str, Any]]:
    """Download and verify the locked RPMs into the cache."""
    for name in STACKS:
        step = _step("fetch", name, [str(PROJECT.lock_path(name))])
        yield {
            **step,
            "doc": f"download and verify {name}'s locked RPMs (sha256, signatures)",
            "targets": [str(PROJECT.record(name, "fetch"))],
            "uptodate": [*step["uptodate"], tasking.cached_rpms(PROJECT, name)],
            "clean": True,
        }


def task_stage() -> Iterator[dict[str, Any]]:
    """Extract the RPMs safely into build/<name>/staging."""
    for name, info in STACKS.items():
        # the base (and its gpu and compat overlays): payload paths install through them
        deps = [str(PROJECT.lock_path(name)), str(PROJECT.record(name, "fetch")),
                *info.check_deps]
        step = _step("stage", name, deps, tasking.stage_inputs(info))
        yield {
            **step,
            "doc": f"extract {name}'s RPMs into build/{name}/staging",
            "targets": [str(PROJECT.record(name, "stage")), str(PROJECT.owners(name))],
            "uptodate": [*step["uptodate"], tasking.exists(PROJECT.staging(name))],
            "clean": [tasking.remove(PROJECT.staging(name))],
        }


def task_check() -> Iterator[dict[str, Any]]:
    """Run the invariants on the staged tree against the base view."""
    for name, info in STACKS.items():
        deps = [str(PROJECT.record(name, "stage")), str(PROJECT.owners(name)), *info.check_deps]
        step = _step("check", name, deps, tasking.check_inputs(info))
        yield {
            **step,
            "doc": f"check {name}'s staged tree (arch, ABI boundary, precedence, loader)",
            "targets": [str(PROJECT.invariants(name))],
            "uptodate": [*step["uptodate"], tasking.report_passed(PROJECT.invariants(name))],
            "clean": True,
        }


def task_image() -> Iterator[dict[str, Any]]:
    """Make the reproducible EROFS image and its manifest."""
    for name, info in STACKS.items():
        deps = [
            str(PROJECT.invariants(name)),
            str(PROJECT.record(name, "stage")),
            str(PROJECT.owners(name)),
            str(PROJECT.lock_path(name)),
            *info.image_deps,
        ]
        step = _step("image", name, deps, tasking.image_inputs(info))
        yield {
            **step,
            "doc": f"make build/overlays/{name}.erofs and its manifest",
            "targets": [str(PROJECT.image(name)), str(PROJECT.manifest(name))],
            "uptodate": [*step["uptodate"], tasking.exists(PROJECT.staging(name))],
            "clean": True,
        }


def task_overlay() -> Iterator[dict[str, Any]]:
    """Bring an overlay up to date (lock, fetch, stage, check, image)."""
    for name, info in STACKS.items():
        yield {
            "name": name,
            "doc": f"bring the {name} overlay up to date (lock, fetch, stage, check, image)",
            # No action: the image step says where the image and manifest are.
            "actions": None,
            "task_dep": [f"image:{name}", *info.compat_tasks],
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
        "doc": "preflight checks for running apps, as a table (--json, --stack NAME)",
        "actions": [_do(tasking.doctor)],
        "params": [
            {"name": "json", "long": "json", "type": bool, "default": False},
            {"name": "stack", "long": "stack", "default": "",
             "help": "check this app stack's own layers instead of the system defaults"},
        ],
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
            "task_dep": tasking.run_deps(PROJECT, info),
            "file_dep": info.app_deps,
            "params": tasking.RUN_PARAMS,
            "uptodate": [False],
            "verbosity": 2,
        }


def task_suggest() -> Iterator[dict[str, Any]]:
    """suggest:<app>: run the app traced and print the seeds that provide what it missed."""
    for name, info in STACKS.items():
        if info.has_app:
            yield {
                "basename": f"suggest:{name}",
                "doc": f"run {name}'s app traced; print seed lines for what it missed",
                "actions": [_do(tasking.suggest, name)],
                "task_dep": tasking.run_deps(PROJECT, info),
                "file_dep": info.app_deps,
                "params": tasking.SUGGEST_PARAMS,
                "uptodate": [False],
                "verbosity": 2,
            }


def task_publish() -> Iterator[dict[str, Any]]:
    """Push a built overlay to an OCI registry (overlays/publish.py)."""
    from overlays import publish

    for name in STACKS:
        yield {
            "name": name,
            "doc": f"push {name}'s overlay, lock, invariants and SBOM to a registry (--to REF)",
            "actions": [_do(publish.publish, name)],
            "task_dep": [f"overlay:{name}"],
            "params": [{"name": "to", "long": "to", "default": "",
                        "help": "HOST[:PORT]/REPOSITORY:TAG"}],
            "uptodate": [False],
            "verbosity": 2,
        }


def task_pull() -> Iterator[dict[str, Any]]:
    """Fetch a published overlay and use it for runs (overlays/pull.py)."""
    from overlays import pull

    for name in STACKS:
        yield {
            "name": name,
            "doc": f"fetch and verify a published {name} overlay; runs use it (--from REF)",
            "actions": [_do(pull.pull, name)],
            "params": [{"name": "source", "long": "from", "default": "",
                        "help": "HOST[:PORT]/REPOSITORY:TAG or ...@sha256:DIGEST"}],
            "uptodate": [False],
            "clean": [functools.partial(pull.forget, PROJECT, name)],
            "verbosity": 2,
        }


def task_apps() -> Iterator[dict[str, Any]]:
    """run:<app> tasks (doit's own 'run' command name is taken, so each has a basename)."""
    yield from _run_tasks()


def task_probe() -> Iterator[dict[str, Any]]:
    """probe:display and probe:gpu: what the guest sees of the display and the GPU."""
    yield from probetasks.task_probe(PROJECT, STACKS)


def task_ab() -> Iterator[dict[str, Any]]:
    """ab:<app> and ab:probe-gpu: the same run under each --gpu-mode, and diff.json."""
    yield from probetasks.task_ab(PROJECT, STACKS)


def task_bench() -> Iterator[dict[str, Any]]:
    """bench:<app>: cold and warm start-up timings per phase (bench.json)."""
    yield from probetasks.task_bench(PROJECT, STACKS)
