"""What to execute to start an extracted AppDir: its ``AppRun``, as an absolute argv.

A script ``AppRun`` runs through its interpreter the way the kernel would run it (the
``#!`` line's interpreter, then its one optional argument, then the script's path); an ELF
``AppRun`` runs directly. Paths are absolute because muvm starts the command in the
user's home directory, not the caller's working directory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fexstack.errors import RunError

APPRUN = "AppRun"
SHEBANG_MAX = 256  # the kernel reads at most this many bytes of a #! line (BINPRM_BUF_SIZE)

Kind = Literal["script", "elf"]


@dataclass(frozen=True)
class Entrypoint:
    """The argv that starts the app (before the user's arguments) and what AppRun is."""

    argv: tuple[str, ...]
    kind: Kind
    interpreter: str | None


def _broken(appdir: Path, why: str, hint: str | None = None) -> RunError:
    return RunError(
        f"cannot start the AppDir {appdir}: {why}",
        hint or "the AppImage is broken; ask its publisher for a working build",
    )


def resolve_apprun(appdir: Path) -> tuple[Path, Path]:
    """``(AppRun's absolute path, the file it is or points at)``; errors name the problem.

    A symlink is followed only to a regular file inside the AppDir.
    """
    root = Path(os.path.realpath(appdir))
    if not root.is_dir():
        raise _broken(appdir, "it is not a directory", "extract the AppImage first")
    apprun = root / APPRUN
    if not apprun.exists() and not apprun.is_symlink():
        raise _broken(appdir, f"it has no {APPRUN}")
    target = Path(os.path.realpath(apprun))
    if apprun.is_symlink():
        if not target.is_relative_to(root):
            raise _broken(
                appdir,
                f"{APPRUN} is a symlink to {os.readlink(apprun)!r}, which leads outside the "
                "AppDir",
            )
        if not target.exists():
            raise _broken(appdir, f"{APPRUN} is a dangling symlink to {os.readlink(apprun)!r}")
    st = target.stat()
    if not stat.S_ISREG(st.st_mode):
        raise _broken(appdir, f"{APPRUN} is not a regular file")
    if not st.st_mode & 0o111:
        raise _broken(
            appdir,
            f"{APPRUN} is not executable (mode {stat.S_IMODE(st.st_mode):04o}); the AppImage "
            "runtime could not start it either",
        )
    return apprun, target


def parse_shebang(line: bytes, appdir: Path) -> tuple[str, ...]:
    """Interpreter and optional argument from a ``#!`` line, split as Linux does.

    The interpreter runs to the first blank; everything after it (trimmed) is one argument.
    """
    text = line[2:SHEBANG_MAX].split(b"\n", 1)[0]
    if text.endswith(b"\r"):
        raise _broken(
            appdir,
            f"{APPRUN}'s #! line ends with a carriage return (DOS line endings), so its "
            "interpreter would not be found",
        )
    decoded = text.decode("utf-8", "surrogateescape").strip(" \t")
    if not decoded:
        raise _broken(appdir, f"{APPRUN} starts with #! but names no interpreter")
    parts = decoded.replace("\t", " ").split(" ", 1)
    interpreter = parts[0]
    if not interpreter.startswith("/"):
        raise _broken(
            appdir,
            f"{APPRUN}'s interpreter {interpreter!r} is a relative path, which would be looked "
            "up in the guest's working directory",
        )
    arg = parts[1].strip(" \t") if len(parts) > 1 else ""
    return (interpreter, arg) if arg else (interpreter,)


def entrypoint(appdir: Path) -> Entrypoint:
    """How to start ``appdir``: ``argv`` (absolute), whether AppRun is a script or an ELF."""
    apprun, target = resolve_apprun(appdir)
    with target.open("rb") as fh:
        head = fh.read(SHEBANG_MAX)
    if head.startswith(b"\x7fELF"):
        return Entrypoint(argv=(str(apprun),), kind="elf", interpreter=None)
    if head.startswith(b"#!"):
        interp = parse_shebang(head, appdir)
        return Entrypoint(argv=(*interp, str(apprun)), kind="script", interpreter=interp[0])
    raise _broken(appdir, f"{APPRUN} is neither an ELF executable nor a #! script")
