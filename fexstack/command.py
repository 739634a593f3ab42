"""The one wrapper through which fexstack runs external tools.

argv lists only (never a shell string), each call logged with :func:`shlex.join`, and a
failure raised as :class:`~fexstack.errors.ToolError` naming the command, its exit code
and the end of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from fexstack.errors import ToolError

log = logging.getLogger("fexstack.command")

Arg = str | os.PathLike[str]

STDERR_TAIL_LINES = 20


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    argv: Sequence[Arg],
    *,
    cwd: Arg | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process (stdout/stderr as bytes).

    ``env`` entries are added to the current environment. With ``check`` (the default)
    a nonzero exit raises :class:`ToolError`; a missing program always does.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("run() needs a command")
    log.debug("run: %s", shlex.join(args))
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            args,
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=full_env,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolError(
            f"{args[0]} is not installed or not on PATH (running {shlex.join(args)})",
            hint or "run the command through ./devroot, or install the tool (see README.md)",
            argv=args,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(
            f"{shlex.join(args)} did not finish within {timeout} seconds",
            hint,
            argv=args,
        ) from exc
    if check and proc.returncode != 0:
        stderr = (proc.stderr or b"").decode("utf-8", "replace")
        tail = _tail(stderr)
        message = f"{shlex.join(args)} failed with exit code {proc.returncode}"
        if tail:
            message += ":\n" + tail
        raise ToolError(message, hint, argv=args, returncode=proc.returncode, stderr_tail=tail)
    return proc


def output(argv: Sequence[Arg], **kwargs: object) -> str:
    """Run ``argv`` (see :func:`run`) and return its stdout as text."""
    proc = run(argv, **kwargs)  # type: ignore[arg-type]
    return (proc.stdout or b"").decode("utf-8", "replace")


def which(program: str) -> Path | None:
    """The absolute path of ``program`` on PATH, or None."""
    found = shutil.which(program)
    return Path(found) if found else None


def tool_version(argv: Sequence[Arg]) -> str:
    """First line of a tool's version output, or ``"unavailable"``."""
    try:
        proc = run(argv, check=False)
    except ToolError:
        return "unavailable"
    text = ((proc.stdout or b"") + (proc.stderr or b"")).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "unavailable"
