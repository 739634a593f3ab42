"""What dodo.py needs to declare tasks: per-stack dependency files, uptodate checks, and
the actions of the tasks that are not pipeline steps (run, why, doctor).

A stack that fails to load still gets its tasks: their action reports the error with its
hint, so ``doit list`` works while one stack file is broken.
"""

from __future__ import annotations

import glob
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fexstack import atomic
from fexstack.errors import ConfigError, FexstackError, RunError
from overlays import pipeline
from overlays.project import Project
from overlays.stack import Stack, buildable, load_stack

# doit commands that never execute tasks (no build lock needed for them).
READ_ONLY_COMMANDS = frozenset(
    {"list", "info", "help", "dumpdb", "tabcompletion", "strace", "forget", "ignore", "reset-dep"}
)

RUN_PARAMS = [
    {"name": "gpu_mode", "long": "gpu-mode", "default": "", "help": "drm, venus or software"},
    {"name": "timeout_seconds", "long": "timeout-seconds", "type": int, "default": 0,
     "help": "end the app after N seconds (its evidence is still written)"},
    {"name": "out_dir", "long": "out-dir", "default": "", "help": "write the evidence here"},
    {"name": "backend", "long": "backend", "default": "", "help": "muvm or native"},
    {"name": "force", "long": "force", "type": bool, "default": False,
     "help": "run even when appcheck finds a blocking problem (recorded)"},
]


def executes_tasks(argv: Sequence[str]) -> bool:
    """Whether a doit command line may execute tasks (and so needs the build lock)."""
    words = [a for a in argv if not a.startswith("-")]
    return not words or words[0] not in READ_ONLY_COMMANDS


@dataclass
class StackInfo:
    """What the task declarations need to know of one stack."""

    name: str
    stack: Stack | None
    error: FexstackError | None = None
    stack_files: list[str] = field(default_factory=list)
    lock_deps: list[str] = field(default_factory=list)
    check_deps: list[str] = field(default_factory=list)
    compat_tasks: list[str] = field(default_factory=list)
    app_deps: list[str] = field(default_factory=list)

    @property
    def has_app(self) -> bool:
        return self.stack is None or self.stack.app is not None


@dataclass
class BaseInfo:
    file_deps: list[str]


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
    try:
        names = buildable(project.stacks_dir)
    except FexstackError:
        names = []
    found: dict[str, StackInfo] = {}
    for name in names:
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
            check_deps=[*files, base_record, *_image_deps(project, stack)],
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
        found[base.id] = BaseInfo(deps)
    return found


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


def announce(project: Project, name: str) -> Callable[[], None]:
    def say() -> None:
        print(f"overlay:{name} is up to date")
        print(f"  image:    {project.image(name)}")
        print(f"  manifest: {project.manifest(name)}")

    return say


# --- actions of the non-pipeline tasks ---------------------------------------------------


def why(project: Project, name: str, package: str = "") -> None:
    from overlays import lockfile
    from overlays.why import why as why_lines

    if not package:
        raise ConfigError(
            f"why:{name} needs a package name", f"run: doit why:{name} --package NAME"
        )
    for line in why_lines(lockfile.read(project.lock_path(name)), package):
        print(line)


def doctor(project: Project, json: bool = False) -> None:
    from runner.preflight import doctor as run_doctor

    if not run_doctor(json_output=json):
        raise RunError("doctor found failing checks", "fix the checks marked fail above")


def deps_layers(project: Project, name: str) -> list[tuple[str, Path, Path]]:
    return [(name, project.image(name), project.manifest(name))]


def deps_view(project: Project, name: str) -> Any:
    """The deps overlay as a layer of the merged view (its image, extracted once)."""
    from invariants.view import layer

    return layer(project.image(name), "deps", name)


def run(
    project: Project,
    name: str,
    gpu_mode: str = "",
    timeout_seconds: int = 0,
    out_dir: str = "",
    backend: str = "",
    force: bool = False,
) -> None:
    """``doit run:<app>``: the overlays are up to date (task deps); launch and report."""
    from runner.launch import run_app

    stack = pipeline.stack_of(project, name)
    if stack.app is None:
        raise ConfigError(f"stack {name} has no [app] table", "add [app] appimage = '...'")
    result = run_app(
        stack,
        deps=deps_layers(project, name),
        compat=pipeline.compat_layer_path(project, stack.base.id),
        out_dir=Path(out_dir).absolute() if out_dir else None,
        gpu_mode=gpu_mode or None,
        timeout_seconds=timeout_seconds or None,
        backend=backend or None,
        force=force,
        evidence_root=project.evidence_dir,
        appcheck=appcheck_for(project, stack),
    )
    if result.outcome != "PASS":
        raise RunError(
            f"run:{name} ended {result.outcome}: {result.reason}",
            f"see {result.evidence_dir}/run.log and run.report.json",
        )


def appcheck_for(project: Project, stack: Stack) -> Any:
    """The appcheck hook of a run (interpreter, linkability and ISA of the AppImage's ELF)."""
    from runner.appcheck import make_appcheck

    layers = [*pipeline.view_layers(project, stack), deps_view(project, stack.name)]
    return make_appcheck(stack, view_layers=layers)
