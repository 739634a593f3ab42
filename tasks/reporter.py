"""doit's console reporter for fexstack (:class:`EvidenceReporter`): it takes the build
lock for a doit that loaded dodo.py, and writes a run's evidence when an overlay the run
needs failed to build."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from doit.reporter import ConsoleReporter

from fexstack import buildlock
from fexstack.errors import FexstackError
from overlays.project import Project
from tasks.action import step_log
from tasks.layers import deps_layers
from tasks.stackinfo import StackInfo, stacks

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
