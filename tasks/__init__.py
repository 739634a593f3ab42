"""The doit task layer: every task of a fexstack project, declared on top of the packages.

:mod:`tasks.creators` declares the tasks (pipeline steps, runs, probes, benches, publish
and pull), :mod:`tasks.loader` hands them to doit and takes the build lock,
:mod:`tasks.build_command` is ``doit build``. What the declarations read of the
stacks is in :mod:`tasks.stackinfo`, :mod:`tasks.inputs`, :mod:`tasks.stamp` and
:mod:`tasks.uptodate`; the actions in :mod:`tasks.commands`, :mod:`tasks.clean` and
:mod:`tasks.probes`; :mod:`tasks.reporter` is doit's reporter. Any folder with a
``stacks/`` directory is a project: ``python3 -m tasks overlay:NAME`` there (``doit`` in
this checkout does the same through pyproject.toml). Nothing runs at import time.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from fexstack import jsonio

jsonio.register_schemas(Path(__file__).resolve().parent / "schemas")

# doit's plugin commands of a fexstack project (the only copy: pyproject.toml's are for
# `doit` run in this checkout)
COMMANDS = {"build": "tasks.build_command:Build"}


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    """Run doit's command line on the project at ``root`` (default: the current folder)."""
    from doit.doit_cmd import DoitMain

    from tasks.loader import Loader

    args = list(sys.argv[1:] if argv is None else argv)
    doit = DoitMain(Loader(root), config_filenames=(), extra_config={"COMMAND": COMMANDS})
    return int(doit.run(args) or 0)  # doit returns None where it means success
