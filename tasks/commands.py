"""The actions of the tasks that are not pipeline steps: ``why:<stack>``, ``doctor``,
``run:<app>`` and ``suggest:<app>``, with the parameters doit offers for them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fexstack.errors import ConfigError, FexstackError, RunError
from overlays import pipeline
from overlays.project import Project
from tasks.layers import appcheck_for, deps_layers

RUN_PARAMS = [
    {"name": "gpu_mode", "long": "gpu-mode", "default": "", "help": "drm, venus or software"},
    {"name": "timeout_seconds", "long": "timeout-seconds", "type": int, "default": 0,
     "help": "end the app after N seconds (its evidence is still written)"},
    {"name": "out_dir", "long": "out-dir", "default": "", "help": "write the evidence here"},
    {"name": "backend", "long": "backend", "default": "", "help": "muvm or native"},
    {"name": "force", "long": "force", "type": bool, "default": False,
     "help": "run even when appcheck finds a blocking problem (recorded)"},
    {"name": "privileged", "long": "privileged", "type": bool, "default": False,
     "help": "native backend: run the app as root (a warning in the report)"},
]


def why(project: Project, name: str, package: str = "") -> None:
    from overlays import lockfile
    from overlays.why import why as why_lines

    if not package:
        raise ConfigError(
            f"why:{name} needs a package name", f"run: doit why:{name} --package NAME"
        )
    from overlays.locking import base_packages_of

    stack = pipeline.stack_of(project, name)
    lock = lockfile.read(project.lock_path(name))
    base: Sequence[Any] = ()
    if lock.package(package) is None:  # a package the base carries says so
        try:
            base = base_packages_of(stack)
        except FexstackError as exc:
            print(f"why: the base's package list is not readable here ({exc.message}); "
                  "answering from the lock alone", file=sys.stderr)
    for line in why_lines(lock, package, base, stack.seeds):
        print(line)


def doctor(project: Project, json: bool = False, stack: str = "") -> None:
    """``doit doctor``: the system defaults, or with ``--stack NAME`` that app's own layers
    (its base, gpu overlays, compat and deps overlay, as ``doit run:NAME`` would use)."""
    from runner.preflight import doctor as run_doctor
    from runner.profile import from_stack

    profile = None
    if stack:
        loaded = pipeline.stack_of(project, stack)
        compat = None
        if pipeline.compat_record(project, loaded.base.id).exists():
            compat = pipeline.compat_layer_path(project, loaded.base.id)
        profile = from_stack(loaded, deps=deps_layers(project, stack), compat=compat)
    if not run_doctor(profile, json_output=json):
        raise RunError("doctor found failing checks", "fix the checks marked fail above")


def run(
    project: Project,
    name: str,
    gpu_mode: str = "",
    timeout_seconds: int = 0,
    out_dir: str = "",
    backend: str = "",
    force: bool = False,
    privileged: bool = False,
) -> None:
    """``doit run:<app>``: the overlays are up to date (task deps); launch and report."""
    from runner.launch import run_app
    from runner.options import RunOptions
    from runner.profile import from_stack

    stack = pipeline.stack_of(project, name)
    if stack.app is None:
        raise ConfigError(f"stack {name} has no [app] table", "add [app] appimage = '...'")
    profile = from_stack(stack, deps=deps_layers(project, name),
                         compat=pipeline.compat_layer_path(project, stack.base.id))
    result = run_app(profile, RunOptions(
        out_dir=Path(out_dir).absolute() if out_dir else None,
        gpu_mode=gpu_mode or None,
        timeout_seconds=timeout_seconds or None,
        backend=backend or None,
        force=force,
        evidence_root=project.evidence_dir,
        appcheck=appcheck_for(project, stack),
        privileged=privileged,
    ))  # fmt: skip
    if not result.outcome.ok:
        raise RunError(
            f"run:{name} ended {result.outcome}: {result.reason}",
            f"see {result.evidence_dir}/run.log and run.report.json",
        )


SUGGEST_PARAMS = [
    p for p in RUN_PARAMS
    if isinstance(p, dict) and p.get("name") in ("timeout_seconds", "out_dir", "backend")
]


def suggest(
    project: Project, name: str, timeout_seconds: int = 0, out_dir: str = "", backend: str = ""
) -> None:
    """``doit suggest:<app>``: run the app traced and print seed lines (runner/suggest.py)."""
    from overlays.lockfile import read as read_lock
    from overlays.locking import base_packages_of
    from runner.options import RunOptions
    from runner.suggest import audit

    stack = pipeline.stack_of(project, name)
    if stack.app is None:
        raise ConfigError(f"stack {name} has no [app] table", "add [app] appimage = '...'")
    lock = project.lock_path(name)
    options = RunOptions(
        appcheck=appcheck_for(project, stack),
        out_dir=Path(out_dir).absolute() if out_dir else None,
        evidence_root=project.evidence_dir,
        backend=backend or None,
        timeout_seconds=timeout_seconds or None,
    )
    audit(
        stack,
        options,
        deps=deps_layers(project, name),
        compat=pipeline.compat_layer_path(project, stack.base.id),
        locked=[p.name for p in read_lock(lock).packages] if lock.is_file() else [],
        base=[p.name for p in base_packages_of(stack)],
    )
