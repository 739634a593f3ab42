"""What an AppImage's ``AppRun`` does to the environment before it starts the app.

Bambu Studio's AppRun (FACTS.md "2026 facts") is ``#!/bin/sh``: it unsets GTK_PATH,
GTK_EXE_PREFIX, GIO_MODULE_DIR, GSETTINGS_SCHEMA_DIR, GDK_PIXBUF_MODULE_FILE and
LD_PRELOAD, overwrites ``LD_LIBRARY_PATH="$DIR/bin"`` and execs bin/bambu-studio. So the
app never sees a profile's LD_LIBRARY_PATH, and its bundled libraries in bin/ are found.

:func:`read` models a simple shell AppRun, line by line:

- ``DIR="$(dirname "$0")"``, ``HERE="$(dirname "$(readlink -f "$0")")"`` and the like (any
  assignment whose value uses ``$0``, ``${0}`` or ``BASH_SOURCE``): a location variable, the
  AppDir itself (fexstack starts AppRun by its absolute path, so ``dirname "$0"`` is it);
- ``export VAR=value``, ``VAR=value`` (then or before ``export VAR``), ``unset A B``:
  ``$DIR``-style variables, ``$VAR`` and ``${VAR}`` of the environment so far expand;
  an assignment to an upper-case name counts as an environment change (such names come
  from, or go to, the environment in AppRun scripts);
- ``exec "$DIR/bin/app" "$@"`` (or the same without exec): the program it starts.

Comments, blank lines, ``set``, ``cd`` and ``echo`` are skipped. Anything else (``if``,
``case``, loops, functions, ``source``) makes the script too complex: the model says so and
the environment is taken as the profile gives it. An ELF AppRun cannot be read either.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHELLS = ("sh", "bash", "dash", "ash", "zsh", "ksh")
_ASSIGN = re.compile(r"^(export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_EXPORT = re.compile(r"^export\s+([A-Za-z_][A-Za-z0-9_]*(?:\s+[A-Za-z_][A-Za-z0-9_]*)*)$")
_UNSET = re.compile(r"^unset\s+(?:-v\s+)?([A-Za-z_][A-Za-z0-9_]*(?:\s+[A-Za-z_][A-Za-z0-9_]*)*)$")
_LOCATION = re.compile(r"\$0\b|\$\{0\}|BASH_SOURCE|\$\{0[%#]")
_SKIP = re.compile(r"^(set\s|cd\s|echo\s|printf\s|:\s*$|true$)")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Change:
    """One environment change: ``value`` None means unset."""

    var: str
    value: str | None
    line: int
    self_reference: bool = False  # the new value includes the old one ($VAR)


@dataclass
class AppRun:
    """The model of one AppRun."""

    path: Path
    kind: str  # shell, elf, complex, other, missing
    interpreter: str | None = None
    changes: list[Change] = field(default_factory=list)
    exec: str | None = None
    note: str | None = None

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """The environment the app gets when AppRun starts with ``env``."""
        out = dict(env)
        if self.kind != "shell":
            return out
        for change in self.changes:
            if change.value is None:
                out.pop(change.var, None)
            else:
                out[change.var] = change.value
        return out

    def no_effect(self, profile_env: Mapping[str, str]) -> list[dict[str, Any]]:
        """Profile variables AppRun unsets or overwrites (so setting them does nothing)."""
        if self.kind != "shell":
            return []
        out = []
        for var in sorted(profile_env):
            last = next((c for c in reversed(self.changes) if c.var == var), None)
            if last is None or last.self_reference:
                continue
            how = "unsets it" if last.value is None else f"overwrites it with {last.value!r}"
            out.append({"var": var, "line": last.line,
                        "detail": f"AppRun {how} (line {last.line})"})
        return out

    def to_json(self, profile_env: Mapping[str, str]) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "interpreter": self.interpreter,
            "unset": sorted({c.var for c in self.changes if c.value is None}),
            "set": {c.var: c.value for c in self.changes if c.value is not None},
            "exec": self.exec,
            "note": self.note,
            "no_effect": self.no_effect(profile_env),
        }


def read(appdir: Path, env: Mapping[str, str] | None = None) -> AppRun:
    """The model of ``appdir/AppRun`` started with ``env`` (for ``$VAR`` expansion)."""
    path = appdir / "AppRun"
    if not path.is_file():
        return AppRun(path, "missing", note="the AppDir has no AppRun file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"\x7fELF":
        return AppRun(path, "elf", note="AppRun is an ELF program: its environment changes "
                      "cannot be read; the profile's environment is assumed")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return AppRun(path, "other", note="AppRun is neither ELF nor a text script")
    lines = text.splitlines()
    shebang = lines[0][2:].strip().split() if lines and lines[0].startswith("#!") else []
    interp = shebang[0] if shebang else None
    name = Path(interp).name if interp else ""
    if name == "env" and len(shebang) > 1:
        name = Path(shebang[1]).name
    if name not in SHELLS:
        return AppRun(path, "other", interp,
                      note=f"AppRun is run by {interp or 'no interpreter line'}, not a shell: "
                      "its environment changes are not modelled")
    model = AppRun(path, "shell", interp)
    _parse(model, lines, str(appdir.resolve()), dict(env or {}))
    return model


def _parse(model: AppRun, lines: list[str], appdir: str, env: dict[str, str]) -> None:
    local: dict[str, str] = {}  # location and other shell variables
    pending: dict[str, tuple[str, int, bool]] = {}  # assigned, not yet exported (lower case)
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if number == 1 and line.startswith("#!"):
            continue
        if not line or line.startswith("#") or _SKIP.match(line):
            continue
        line = line.rstrip(";").strip()
        if (m := _UNSET.match(line)) is not None:
            for var in m.group(1).split():
                env.pop(var, None)
                model.changes.append(Change(var, None, number))
            continue
        if (m := _EXPORT.match(line)) is not None:
            for var in m.group(1).split():
                if var in pending:
                    value, at, self_ref = pending.pop(var)
                    env[var] = value
                    model.changes.append(Change(var, value, at, self_ref))
            continue
        if (m := _ASSIGN.match(line)) is not None:
            exported, var, text = bool(m.group(1)), m.group(2), m.group(3)
            if _LOCATION.search(text):
                local[var] = appdir
                continue
            expanded = _expand(text, {**env, **local})
            if expanded is None:
                model.kind, model.note = "complex", f"line {number}: {line!r} is not modelled"
                return
            value = expanded
            self_ref = bool(re.search(rf"\$\{{?{var}\b", text))
            if exported or var.isupper():
                env[var] = value
                model.changes.append(Change(var, value, number, self_ref))
            else:
                local[var] = value
                pending[var] = (value, number, self_ref)
            continue
        words = _words(line)
        if words and words[0] == "exec":
            words = words[1:]
        if words and "/" in words[0] and not any(c in line for c in "|&<>()"):
            model.exec = _expand(words[0], {**env, **local})
            return
        model.kind = "complex"
        model.note = f"line {number}: {line!r} is too complex to model; the profile's " \
            "environment is assumed"
        return


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        return []


def _expand(text: str, variables: Mapping[str, str]) -> str | None:
    """The shell value of ``text`` with ``$VAR``/``${VAR}`` expanded (unknown: empty);
    None when it needs a command substitution or anything else not modelled."""
    if "$(" in text or "`" in text:
        return None
    words = _words(text)
    if len(words) != 1:
        return "" if not words else None
    return _VAR.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), words[0])
