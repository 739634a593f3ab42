"""The clean actions of fexstack's tasks (``doit clean``), under the project's build lock.

doit's clean command uses neither the reporter nor the step actions, which take the lock
for ``doit -f dodo.py``: each clean action here is a :class:`Clean`, which takes the lock
before it removes anything and keeps it for the rest of the doit process (as
tasks/loader.py does for ``python3 -m tasks clean``). A clean waits for a running build
and a build for a clean, never half of one. A dry run (``doit clean -n``) removes
nothing and takes no lock.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.task import clean_targets

from fexstack import atomic, buildlock
from overlays.project import Project
from tasks.action import Step, action


class Clean(Step):
    """A clean action named ``"module:function"``, called with the project first."""

    def __call__(self, *args: Any, **kwargs: Any) -> TaskFailed | None:
        if args and isinstance(args[0], Project) and not kwargs.get("dryrun"):
            # doit captures a clean action's stderr: say that it waits where the user sees it
            with contextlib.redirect_stderr(sys.__stderr__):
                buildlock.acquire(args[0].build_dir)  # held until doit ends
        result: TaskFailed | None = action(self.target())(*args, **kwargs)
        return result

    def __str__(self) -> str:
        # doit prints a clean action as "Python: " + str(callable)[1:].split(" at ")[0]
        return f"<{self.ref} at {id(self):#x}>"


def remove_targets(project: Project, task: Any, dryrun: bool = False) -> None:
    """Remove the task's targets as doit's ``"clean": True`` does (files, empty folders)."""
    clean_targets(task, dryrun)


def remove(project: Project, *paths: Path) -> None:
    """Remove each path (a folder with all it holds), atomically for each."""
    for path in paths:
        atomic.remove(path)
