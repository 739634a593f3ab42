"""fexstack's tasks are declared in the task layer, tasks/ (see tasks/creators.py).

`doit` in this checkout loads them through the loader pyproject.toml names; `python3 -m
tasks` does the same in any folder with a stacks/ directory. This file serves a doit that
reads no pyproject.toml (``doit -f path/to/dodo.py``).
"""

from pathlib import Path

from tasks.creators import namespace

ROOT = Path(__file__).resolve().parent
(ROOT / "build").mkdir(exist_ok=True)  # doit's database is there
globals().update(namespace(ROOT))
