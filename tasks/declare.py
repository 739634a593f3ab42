"""What dodo.py needs to declare tasks: per-stack dependency files, uptodate checks, and
the actions of the tasks that are not pipeline steps (run, why, doctor).

A stack that fails to load still gets its tasks: their action reports the error with its
hint, so ``doit list`` works while one stack file is broken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from doit.reporter import ConsoleReporter

from fexstack import atomic, buildlock, jsonio
from fexstack.errors import ConfigError, FexstackError, RunError
from overlays import pipeline
from overlays.project import Project
from overlays.stack import Stack, buildable, load_stack
from tasks.action import step_log

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


# --- uptodate checks and clean actions ---------------------------------------------------


def exists(path: Path) -> Callable[[], bool]:
    """An uptodate check: the output folder is still there."""
    return lambda: path.exists()


def cached_rpms(project: Project, name: str) -> Callable[[], bool]:
    """An uptodate check for fetch: every locked RPM is still in the cache (size matches).

    The fetch step re-hashes what it hands on; this only notices a cache that was wiped.
    """

    def check() -> bool:
        from fexstack.paths import cache_dir
        from overlays import lockfile
        from overlays.fetch import rpm_path

        try:
            lock = lockfile.read(project.lock_path(name))
        except FexstackError:
            return False
        cache = cache_dir()
        for pkg in lock.packages:
            path = rpm_path(cache, pkg.sha256)
            if not path.is_file() or path.stat().st_size != pkg.size:
                return False
        return True

    return check


def remove(path: Path) -> Callable[[], None]:
    return lambda: atomic.remove(path)


def remove_image(project: Project, name: str) -> Callable[[], None]:
    def clean() -> None:
        atomic.remove(project.image(name))
        atomic.remove(project.manifest(name))

    return clean


def report_passed(report: Path) -> Callable[[], bool]:
    """An uptodate check for check: its report exists and says the invariants held.

    A failed check leaves its report for the user; it must never count as done.
    """

    def check() -> bool:
        try:
            return jsonio.read(report).get("failed") is False
        except (OSError, ValueError, AttributeError):
            return False

    return check


# --- what check and image read from a stack (config_changed values) ----------------------
#
# check and image do not depend on the stack files themselves: a comment or description
# edit must not rebuild an overlay. They depend on these settings instead (and on the
# lock, the step records and the base's image files as file_dep).


def _base_inputs(stack: Stack) -> dict[str, Any]:
    base = stack.base
    return {
        "id": base.id,
        "image": str(base.image),
        "overlays": [str(p) for p in base.overlays],
        "lib_dirs": list(base.lib_dirs),
        "tree": base_tree_digest(base.image),
    }


def check_inputs(info: StackInfo) -> Any:
    """The stack settings the check step reads."""
    stack = info.stack
    if stack is None:
        return {"error": info.error.message if info.error else "not loaded"}
    # the same object the check step checks with (overlays/pipeline.check)
    return {"policy": stack.check_policy().inputs(), "base": _base_inputs(stack)}


def stage_inputs(info: StackInfo) -> Any:
    """The stack settings the stage step reads: the base it installs into, whether it
    drops tool executables (the class) and which it keeps, what the host provides."""
    stack = info.stack
    if stack is None:
        return {"error": info.error.message if info.error else "not loaded"}
    return {
        "class": stack.klass,
        "base": _base_inputs(stack),
        "keep_executable": [dataclasses.asdict(k) for k in stack.keep_executables],
        # the caches pass leaves a folder the host provides to the host's cache
        "host_provides": list(stack.base.host_provides),
    }


def image_inputs(info: StackInfo) -> Any:
    """The stack settings the image step reads (what goes into the image and manifest)."""
    stack = info.stack
    if stack is None:
        return {"error": info.error.message if info.error else "not loaded"}
    return {
        "class": stack.klass,
        "compression": stack.compression,
        "base": _base_inputs(stack),
        "files": info.stack_files,
    }


# --- actions of the non-pipeline tasks ---------------------------------------------------


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


def appcheck_for(project: Project, stack: Stack) -> Any:
    """The appcheck hook of a run (interpreter, linkability and ISA of the AppImage's ELF)."""
    from runner.appcheck import make_appcheck

    def layers() -> list[Any]:
        return [*pipeline.view_layers(project, stack), deps_view(project, stack.name)]

    return make_appcheck(stack, view_layers=layers)


# --- completion stamps: a step is up to date only when it completed for these inputs ------
#
# doit records a task's success in its database only when the doit process ends normally.
# A build killed with SIGKILL leaves the outputs of the steps it completed (and the
# database of the run before). Were the inputs then put back as they were, doit would
# take those newer outputs for the old inputs' ones. Each step therefore writes a stamp
# when it completes, with the fingerprints of its file_dep and its settings, and is up to
# date only when its stamp matches the current ones. The stamp is removed first thing
# when the step starts, so a step that fails or is killed is never taken as done.

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
            jsonio.validate(recorded, STAMP_SCHEMA)
        except (OSError, ValueError, jsonschema.ValidationError):
            return False  # missing or not a stamp: the step runs again
        return bool(recorded == _stamp(file_dep, config))

    return check


# --- evidence when a run's overlay fails to build -----------------------------------------

_STEPS = ("lock", "fetch", "stage", "check", "image", "overlay")


class EvidenceReporter(ConsoleReporter):  # type: ignore[misc]
    """doit's console reporter, plus: when ``run:<app>`` was asked for and a step it
    depends on (``check:<app>``, ``compat:<base>`` ...) failed, so that doit never ran
    it, the run's evidence bundle is still written (INFRA, naming the step and stack).
    The up-to-date rules stay doit's: the run task keeps its task_dep on the overlay.
    The project is the first argument of the run task's action."""

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        # doit calls this before it reads any task's state: a doit that loaded dodo.py
        # (not tasks/loader.py, which took it already) takes the build lock here
        project = _project_of(tasks.values())
        if project is not None:
            buildlock.acquire(project.build_dir)
        super().initialize(tasks, selected_tasks)
        self.fexstack_started = time.time()
        self.fexstack_tasks = tasks
        self.fexstack_runs = [t for t in selected_tasks if t.startswith("run:")]
        self.fexstack_failed: list[tuple[str, str]] = []

    def add_failure(self, task: Any, fail: Any) -> None:
        super().add_failure(task, fail)
        if not task.name.startswith("run:"):
            self.fexstack_failed.append((task.name, fail.get_msg()))

    def complete_run(self) -> None:
        for run_task in getattr(self, "fexstack_runs", []):
            task = self.fexstack_tasks.get(run_task)
            if task is None or task.executed or not task.actions:
                continue
            project = task.actions[0].args[0]
            name = run_task.partition(":")[2]
            with contextlib.suppress(FexstackError):
                _build_failed_evidence(project, stacks(project).get(name), name, task,
                                       self.fexstack_failed, self.fexstack_started)
        super().complete_run()


def _project_of(tasks: Iterable[Any]) -> Project | None:
    """The project of the first task whose action is called with one (Step actions are)."""
    for task in tasks:
        for act in task.actions or ():
            args = getattr(act, "args", None)
            if args and isinstance(args[0], Project):
                return args[0]
    return None


def _build_failed_evidence(
    project: Project, info: StackInfo | None, name: str, task: Any,
    failed: list[tuple[str, str]], started: float,
) -> None:
    from runner.launch import build_failed
    from runner.options import RunOptions
    from runner.profile import from_stack

    if info is None or info.stack is None:
        return
    stack = info.stack
    mine = {f"{step}:{name}" for step in _STEPS} | {f"compat:{stack.base.id}"}
    culprit = next(((t, msg) for t, msg in failed if t in mine), None)
    if culprit is None:
        return
    failed_task, message = culprit
    step, _, target = failed_task.partition(":")
    log = step_log(project, step, target)
    # the step's own output (its error included) when this build ran it; else doit's message
    fresh = log.is_file() and log.stat().st_mtime >= started - 1
    text = log.read_text(errors="replace") if fresh else f"{message}\n"
    if step == "check" and project.invariants(name).is_file():
        text += f"== the check report: {project.invariants(name)}\n"
    options = task.options or {}
    out_dir = options.get("out_dir") or ""
    build_failed(
        from_stack(stack, deps=deps_layers(project, name)),
        RunOptions(
            out_dir=Path(out_dir).absolute() if out_dir else None,
            gpu_mode=options.get("gpu_mode") or None,
            backend=options.get("backend") or None,
            timeout_seconds=options.get("timeout_seconds") or None,
            evidence_root=project.evidence_dir,
        ),
        task=failed_task,
        stack_name=name,
        log=text,
    )
