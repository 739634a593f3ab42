"""``doit build TASK...``: bring overlays up to date, never run an app.

Registered in pyproject.toml under ``[tool.doit.plugins.command]``. It is doit's own
``run`` command with one difference: it refuses ``run:<app>`` (and the probes that launch
muvm), so a build never starts an application by accident.
"""

from __future__ import annotations

import inspect
from typing import Any

from doit.cmd_run import Run
from doit.exceptions import InvalidCommand

LAUNCHING_PREFIXES = ("run:", "ab:", "bench:", "probe:")


class Build(Run):  # type: ignore[misc]
    name = "build"
    doc_purpose = "build overlays (lock, fetch, stage, check, image) without running anything"
    doc_usage = "overlay:<name> [TASK ...]"
    doc_description = (
        "Builds the named tasks and what they depend on, like 'doit TASK'.\n"
        "Tasks that launch an application (run:*, ab:*, bench:*, probe:*) are refused:\n"
        "use 'doit run:<app>' for those."
    )

    def _execute(self, outfile: Any, *args: Any, **kwargs: Any) -> int:
        selected = list(self.sel_tasks or [])
        if not selected:
            raise InvalidCommand(
                "doit build needs a task to build, e.g. 'doit build overlay:demo' "
                "('doit list' shows them)"
            )
        refused = [t for t in selected if t.startswith(LAUNCHING_PREFIXES)]
        if refused:
            raise InvalidCommand(
                f"doit build only builds; {', '.join(refused)} would launch an application. "
                f"Use 'doit {refused[0]}' to run it (it builds its overlays first)."
            )
        result: int = super()._execute(outfile, *args, **kwargs)
        return result

    # doit calls _execute with the options its signature names (DoitCmdBase.execute reads
    # it with inspect.signature): keep Run's, not (*args, **kwargs).
    _execute.__signature__ = inspect.signature(Run._execute)  # type: ignore[attr-defined]
