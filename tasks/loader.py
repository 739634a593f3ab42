"""doit's task loader for a fexstack project (``python3 -m tasks``; pyproject.toml names it
for ``doit`` in this checkout).

It takes the project's build lock before doit reads any task state, for the commands
that change the project: those that execute tasks (``run``, ``build``) and ``clean``.
doit says which command it is running, so no command line is parsed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.cmd_base import TaskLoader2
from doit.loader import load_tasks

from fexstack import buildlock
from overlays.project import Project
from tasks import creators

WRITING_COMMANDS = frozenset({"clean"})  # besides those that execute tasks


class Loader(TaskLoader2):  # type: ignore[misc]
    """The tasks of the project at ``root`` (default: the current directory)."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__()
        self.root = root
        self.namespace: dict[str, Any] = {}

    def setup(self, opt_values: dict[str, Any]) -> None:
        self.project = Project((self.root or Path.cwd()).resolve())
        self.namespace = creators.namespace(self.project.root)

    def load_doit_config(self) -> dict[str, Any]:
        self.project.build_dir.mkdir(parents=True, exist_ok=True)  # doit's database is there
        config: dict[str, Any] = self.namespace["DOIT_CONFIG"]
        return config

    def load_tasks(self, cmd: Any, pos_args: list[str]) -> list[Any]:
        if cmd.execute_tasks or cmd.name in WRITING_COMMANDS:
            buildlock.acquire(self.project.build_dir)
        tasks: list[Any] = load_tasks(
            self.namespace, self.cmd_names, allow_delayed=cmd.execute_tasks, args=pos_args,
            config=self.config, task_opts=self.task_opts,
        )
        return tasks
