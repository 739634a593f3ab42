"""doit's side of a pipeline step: its errors become failed tasks, its output a log.

A :class:`~fexstack.errors.FexstackError` is caught once, here, at the edge of the
action, and turned into a failed task whose message carries the hint.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from doit.exceptions import TaskFailed

from fexstack import atomic, buildlock
from fexstack.errors import FexstackError, format_error
from overlays.project import Project

# Bumped whenever a step's code changes what it writes, so doit reruns it (config_changed).
RECIPE = {"lock": 1, "fetch": 1, "stage": 3, "check": 3, "image": 4, "compat": 2, "demo": 1}


def action(step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a step for doit: a :class:`FexstackError` becomes a failed task with its hint.

    A step of a stack or base (``step(project, name)``) also leaves what it printed, and
    its error, in ``build/logs/<step>-<name>.log``: a run whose overlay failed to build
    puts it into its evidence.
    """

    @functools.wraps(step)
    def wrapped(*args: Any, **kwargs: Any) -> TaskFailed | None:
        named = (step.__name__ in RECIPE and len(args) >= 2 and isinstance(args[0], Project)
                 and isinstance(args[1], str))
        out = io.StringIO()
        failed: TaskFailed | None = None
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, out)), contextlib.redirect_stderr(
                _Tee(sys.stderr, out)
            ):
                step(*args, **kwargs)
        except FexstackError as err:
            failed = TaskFailed(format_error(err))
            # the check prints its summary, which is also its error's message: once is enough
            said = err.message in out.getvalue()
            out.write(f"hint: {err.hint}\n" if said and err.hint else
                      "" if said else f"{format_error(err)}\n")
        finally:
            if named:
                atomic.write_text(step_log(args[0], step.__name__, args[1]), out.getvalue())
        return failed

    return wrapped


def step_log(project: Project, step: str, name: str) -> Path:
    """What the last run of ``<step>:<name>`` printed (and its error, if it failed)."""
    return project.build_dir / "logs" / f"{step}-{name}.log"


class _Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy."""

    def __init__(self, stream: TextIO, copy: io.StringIO) -> None:
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class Step:
    """A task action named ``"module:function"``, wrapped by :func:`action` when called.

    doit's parallel workers (``doit -n N``) get their tasks pickled unless they are
    forked: an action is this object and plain arguments (a Project, names), never a
    closure. Its signature is the function's, so doit passes the task's params by name.
    Called with its project, it holds the project's build lock (fexstack/buildlock.py).
    """

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def target(self) -> Callable[..., Any]:
        module, _, name = self.ref.partition(":")
        found: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return found

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target())

    def __call__(self, *args: Any, **kwargs: Any) -> TaskFailed | None:
        if not (args and isinstance(args[0], Project)):
            result: TaskFailed | None = action(self.target())(*args, **kwargs)
            return result
        # a step changes its project only under the build lock: this process's, that of
        # the doit whose -n N worker this is, or else taken for the step
        with buildlock.hold(args[0].build_dir):
            result = action(self.target())(*args, **kwargs)
        return result

    def __repr__(self) -> str:
        return f"Step({self.ref!r})"
