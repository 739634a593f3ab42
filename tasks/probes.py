"""doit tasks for probes, A/B runs and the start-up bench (tasks/creators.py declares them).

- ``probe:display`` and ``probe:gpu``: run in a stack's context (``--stack NAME``, default
  the first stack with an ``[app]`` whose base is on this machine; ``--bare`` leaves its
  deps overlays out: base, gpu overlays and compat only).
- ``ab:<app>`` for each stack with an ``[app]``, and ``ab:probe-gpu``: one run per
  ``--gpu-mode`` and a diff.json.
- ``bench:<app>``: ``--runs N`` cold and warm starts, ``--ready REGEX``.

The generators take the project and its loaded stacks from tasks/creators.py; the actions
take the project and names (picklable), and read the stacks again when they run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from fexstack.errors import ConfigError, RunError
from overlays import pipeline
from overlays.project import Project
from overlays.stack import GPU_MODES, Stack
from runner.evidence import Outcome
from runner.options import RunOptions
from runner.profile import from_stack
from tasks.action import Step
from tasks.layers import appcheck_for, deps_layers
from tasks.stackinfo import StackInfo, stacks
from tasks.stamp import ensure_compat

PROBE_GPU = "probe-gpu"

_COMMON = [
    {"name": "timeout_seconds", "long": "timeout-seconds", "type": int, "default": 0,
     "help": "end each run after N seconds (its evidence is still written)"},
    {"name": "out_dir", "long": "out-dir", "default": "", "help": "write the evidence here"},
    {"name": "backend", "long": "backend", "default": "", "help": "muvm or native"},
]  # fmt: skip
_CONTEXT = [
    {"name": "stack", "long": "stack", "default": "",
     "help": "run in this stack's context (default: the first stack with an [app])"},
    {"name": "bare", "long": "bare", "type": bool, "default": False,
     "help": "leave the stack's deps overlays out (base, gpu overlays and compat only)"},
]  # fmt: skip
_FORCE = [
    {"name": "force", "long": "force", "type": bool, "default": False,
     "help": "run even when appcheck finds a blocking problem (recorded)"},
]  # fmt: skip
PROBE_PARAMS = [
    *_CONTEXT,
    {"name": "gpu_mode", "long": "gpu-mode", "default": "", "help": "drm, venus or software"},
    *_COMMON,
]  # fmt: skip
AB_PARAMS = [
    {"name": "modes", "long": "modes", "default": ",".join(GPU_MODES),
     "help": "the --gpu-mode values to compare, comma-separated"},
    *_COMMON,
    *_FORCE,
]  # fmt: skip
AB_PROBE_PARAMS = [
    *_CONTEXT,
    {"name": "modes", "long": "modes", "default": ",".join(GPU_MODES),
     "help": "the --gpu-mode values to compare, comma-separated"},
    *_COMMON,
]  # fmt: skip
BENCH_PARAMS = [
    {"name": "runs", "long": "runs", "type": int, "default": 3,
     "help": "cold and warm starts each (default 3)"},
    {"name": "ready", "long": "ready", "default": "",
     "help": "a regular expression in the output that ends the launch phase (then stops the app)"},
    *_COMMON,
    *_FORCE,
]  # fmt: skip


# --- resolving a context -----------------------------------------------------------------


def app_stacks(infos: Mapping[str, StackInfo]) -> list[str]:
    return [name for name, info in infos.items() if info.has_app]


def _compat(project: Project, stack: Stack) -> Path | None:
    """The base's compat overlay, brought up to date now (it is cheap), stamped like
    ``compat:<base>``."""
    ensure_compat(project, stack.base.id)
    return pipeline.compat_layer_path(project, stack.base.id)


def _app_stack(project: Project, name: str) -> Stack:
    stack = pipeline.stack_of(project, name)
    if stack.app is None:
        raise ConfigError(f"stack {name} has no [app] table", "add [app] appimage = '...'")
    return stack


def context(
    project: Project, infos: Mapping[str, StackInfo], stack: str, bare: bool
) -> tuple[Stack, list[tuple[str, Path, Path]], Path | None, str]:
    """The stack a probe runs on, its deps layers (none when bare), compat, and a label."""
    name = stack
    if not name:
        apps = app_stacks(infos)
        # The first app stack whose base is on this machine (bambu's on Asahi, the demo's
        # elsewhere), so that a plain `doit probe:gpu` works wherever it can.
        present = [a for a in apps if (s := infos[a].stack) is not None and s.base.image.exists()]
        if not apps:
            raise ConfigError(
                "no stack has an [app] table to take the probe's context from",
                "pass --stack NAME, or add [app] to a stack",
            )
        if not present:
            raise ConfigError(
                f"no app stack has its base on this machine ({', '.join(apps)})",
                "install the base (fex-emu-rootfs-fedora on Asahi), build the demo base with "
                "doit demo:base, or pass --stack NAME",
            )
        name = present[0]
    loaded = pipeline.stack_of(project, name)
    deps = [] if bare else deps_layers(project, name)
    return loaded, deps, _compat(project, loaded), f"{name} (bare)" if bare else name


def _path(text: str) -> Path | None:
    return Path(text).absolute() if text else None


def _check(kind: str, outcome: str, reason: str, where: Path, files: str) -> None:
    if outcome != Outcome.PASS:
        raise RunError(f"{kind} ended {outcome}: {reason}", f"see {where} ({files})")


# --- actions -----------------------------------------------------------------------------


def probe(
    project: Project,
    kind: str,
    stack: str = "",
    bare: bool = False,
    gpu_mode: str = "",
    timeout_seconds: int = 0,
    out_dir: str = "",
    backend: str = "",
) -> None:
    """``doit probe:<kind>``: run the probe, write probe.json into the run's evidence."""
    from runner.probe import run_probe

    loaded, deps, compat, label = context(project, stacks(project), stack, bare)
    result = run_probe(kind, from_stack(loaded, deps=deps, compat=compat), RunOptions(
        gpu_mode=gpu_mode or None, timeout_seconds=timeout_seconds or None,
        backend=backend or None, out_dir=_path(out_dir), evidence_root=project.evidence_dir,
    ), context=label)  # fmt: skip
    _check(f"probe:{kind}", result.probe["outcome"], result.probe["reason"],
           result.run.evidence_dir, "run.log, probe.json")  # fmt: skip


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in GPU_MODES]
    if not modes or bad:
        raise ConfigError(
            f"--modes {text!r}: {', '.join(bad) or 'no mode'} is not one of {', '.join(GPU_MODES)}",
            "pass --modes drm,venus,software (or a subset)",
        )
    return modes


def ab(
    project: Project,
    name: str,
    modes: str = ",".join(GPU_MODES),
    timeout_seconds: int = 0,
    out_dir: str = "",
    backend: str = "",
    force: bool = False,
    stack: str = "",
    bare: bool = False,
) -> None:
    """``doit ab:<app>`` / ``doit ab:probe-gpu``: one run per mode, then diff.json."""
    from runner.ab import run_ab

    options = RunOptions(
        timeout_seconds=timeout_seconds or None, backend=backend or None,
        out_dir=_path(out_dir), evidence_root=project.evidence_dir,
    )  # fmt: skip
    if name == PROBE_GPU:
        loaded, deps, compat, label = context(project, stacks(project), stack, bare)
        result = run_ab(from_stack(loaded, deps=deps, compat=compat), options, name=PROBE_GPU,
                        modes=_modes(modes), probe_kind="gpu", context=label)  # fmt: skip
    else:
        loaded = _app_stack(project, name)
        profile = from_stack(loaded, deps=deps_layers(project, name),
                             compat=_compat(project, loaded))  # fmt: skip
        options = replace(options, appcheck=appcheck_for(project, loaded), force=force)
        result = run_ab(profile, options, modes=_modes(modes))
    if not result.all_pass:
        differing = ", ".join(d["field"] for d in result.diff["differences"]) or "nothing"
        raise RunError(
            f"ab:{name}: not every mode passed ("
            + ", ".join(f"{m} {r['outcome']}" for m, r in result.diff["runs"].items())
            + f"); differs: {differing}",
            f"see {result.dir}/diff.json and each mode's run.log",
        )


def bench(
    project: Project,
    name: str,
    runs: int = 3,
    ready: str = "",
    timeout_seconds: int = 0,
    out_dir: str = "",
    backend: str = "",
    force: bool = False,
) -> None:
    """``doit bench:<app>``: cold and warm starts, bench.json and a table."""
    from runner.bench import run_bench

    loaded = _app_stack(project, name)
    profile = from_stack(loaded, deps=deps_layers(project, name),
                         compat=_compat(project, loaded))  # fmt: skip
    result = run_bench(profile, RunOptions(
        ready=ready or None, timeout_seconds=timeout_seconds or None, backend=backend or None,
        appcheck=appcheck_for(project, loaded), force=force,
        out_dir=_path(out_dir), evidence_root=project.evidence_dir,
    ), runs=runs)  # fmt: skip
    if not result.all_pass:
        failed = [f"{r['kind']}-{r['index']} {r['outcome']}" for r in result.doc["runs"]
                  if r["outcome"] != Outcome.PASS]  # fmt: skip
        raise RunError(
            f"bench:{name}: {', '.join(failed)}",
            f"see {result.dir}/bench.json and the failed runs' run.log",
        )


# --- task generators ---------------------------------------------------------------------


def _do(step: str, *args: Any) -> tuple[Step, list[Any]]:
    return (Step(f"tasks.probes:{step}"), list(args))


def _app_task(project: Project, info: StackInfo, kind: str,
              params: list[Any], doc: str) -> dict[str, Any]:
    """``<kind>:<app>``: after the app's overlay is up to date, never itself up to date."""
    return {
        "basename": f"{kind}:{info.name}",
        "doc": doc,
        "actions": [_do(kind, project, info.name)],
        "task_dep": [f"overlay:{info.name}"],
        "file_dep": info.app_deps,
        "params": params,
        "uptodate": [False],
        "verbosity": 2,
    }


def task_probe(
    project: Project, infos: Mapping[str, StackInfo]
) -> Iterator[dict[str, Any]]:
    """probe:display and probe:gpu: what the guest sees of the display and the GPU."""
    docs = {
        "display": "run the display probe in an app's context (DISPLAY, Wayland, X11 bridge)",
        "gpu": "run the GPU probe in an app's context (glxinfo, eglinfo, vulkaninfo renderer)",
    }
    for kind, doc in docs.items():
        yield {
            "basename": f"probe:{kind}",
            "doc": doc,
            "actions": [_do("probe", project, kind)],
            "params": PROBE_PARAMS,
            "uptodate": [False],
            "verbosity": 2,
        }


def task_ab(
    project: Project, infos: Mapping[str, StackInfo]
) -> Iterator[dict[str, Any]]:
    """ab:<app> and ab:probe-gpu: the same run under each --gpu-mode, and diff.json."""
    for name in app_stacks(infos):
        yield _app_task(project, infos[name], "ab", AB_PARAMS,
                        f"run {name}'s app under each --gpu-mode; evidence per mode and diff.json")
    yield {
        "basename": f"ab:{PROBE_GPU}",
        "doc": "run the GPU probe under each --gpu-mode; diff.json lines up the renderers",
        "actions": [_do("ab", project, PROBE_GPU)],
        "params": AB_PROBE_PARAMS,
        "uptodate": [False],
        "verbosity": 2,
    }


def task_bench(
    project: Project, infos: Mapping[str, StackInfo]
) -> Iterator[dict[str, Any]]:
    """bench:<app>: cold and warm start-up timings per phase (bench.json)."""
    for name in app_stacks(infos):
        yield _app_task(project, infos[name], "bench", BENCH_PARAMS,
                        f"time {name}'s cold and warm starts (--runs N, --ready REGEX); bench.json")
