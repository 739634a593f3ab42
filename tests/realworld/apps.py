"""Thin AppImages of real programs for the tests: the program, an AppRun, no libraries.

Test tooling only. A thin AppImage carries its program and nothing it links: every
library, plugin, cache and helper must come from the base, the overlays built from a
stack's seeds, or what the base declares the host provides. That is what the real-app
tests measure.

API (all paths absolute; every builder returns the AppImage's path and writes it
atomically through :func:`testkit.packer.build_appimage`, reproducibly: same inputs, same
bytes):

- :func:`from_deb` ``(deb, out, program=..., keep=(), env={})``: the AppDir holds the
  ``.deb`` payload's ``program`` (e.g. ``/usr/bin/gtk3-widget-factory`` from
  ``found.deb("gtk-3-examples")``, with ``found`` a :class:`tests.realworld.corpus.Corpus`)
  and the payload paths in ``keep`` (files or folders, e.g. ``/usr/share/gtk-3.0``), under
  ``AppDir/usr/...``; nothing else of the package.
- :func:`from_c` ``(source, out, name=..., cflags=(), libs=(), env={})``: compiles the C
  file ``source`` with the toolchain root's gcc to ``AppDir/usr/bin/<name>`` (link only
  what the base and overlays will provide, or ``-ldl`` and dlopen the rest).
- :func:`write_apprun` ``(appdir, program, env={})``: the AppRun both use: a bash script
  (``#!/bin/bash``: Fedora's RootFS and the corpus base have bash and nothing like
  coreutils) that exports ``env`` and execs ``$APPDIR/<program> "$@"``; ``APPDIR`` is the
  AppDir (set from the script's own absolute path when the caller did not set it).

Example (a test with the ``realworld_corpus`` fixture)::

    from tests.realworld import apps
    image = apps.from_deb(realworld_corpus.deb("gtk-3-examples"), tmp / "wf.AppImage",
                          program="/usr/bin/gtk3-widget-factory")

then ``[app] appimage = "<image>"`` in the stack's TOML, and ``doit run:<stack>``.
"""

from __future__ import annotations

import shlex
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from fexstack import command
from fexstack.atomic import write_bytes
from testkit.packer import build_appimage


def write_apprun(appdir: Path, program: str, env: Mapping[str, str] | None = None) -> Path:
    """Write ``appdir/AppRun``: export ``env``, then exec ``$APPDIR/<program>`` with the
    arguments. ``program`` is relative to the AppDir or absolute in its payload
    (``/usr/bin/x`` means ``$APPDIR/usr/bin/x``)."""
    rel = program.lstrip("/")
    lines = [
        "#!/bin/bash",
        "# thin AppImage: the program only; its libraries come from the base and overlays",
        'if [ -z "$APPDIR" ]; then APPDIR=${0%/*}; fi',
        "export APPDIR",
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted((env or {}).items())]
    lines.append(f'exec "$APPDIR/{rel}" "$@"')
    path = appdir / "AppRun"
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    path.chmod(0o755)
    return path


def _copy_payload(payload: Path, appdir: Path, wanted: str) -> None:
    rel = wanted.lstrip("/")
    src = payload / rel
    if not (src.exists() or src.is_symlink()):
        raise FileNotFoundError(f"{wanted} is not in the package's payload")
    dest = appdir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dest, follow_symlinks=False)


def from_deb(
    deb: Path,
    out: Path,
    *,
    program: str,
    keep: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Path:
    """A thin AppImage of ``program`` (a payload path of ``deb``) and the ``keep`` paths."""
    with tempfile.TemporaryDirectory(prefix="thin-app.", dir=out.parent) as tmp:
        payload = Path(tmp) / "payload"
        command.run(["dpkg-deb", "-x", str(deb), str(payload)],
                    hint="dpkg-deb is in the toolchain root; run through ./devroot")  # fmt: skip
        appdir = Path(tmp) / "AppDir"
        appdir.mkdir()
        for wanted in (program, *keep):
            _copy_payload(payload, appdir, wanted)
        main = appdir / program.lstrip("/")
        if not main.is_file() or not main.stat().st_mode & stat.S_IXUSR:
            raise ValueError(f"{program} in {deb.name} is not an executable file")
        write_apprun(appdir, program, env)
        return build_appimage(appdir, out)


def from_c(
    source: Path,
    out: Path,
    *,
    name: str,
    cflags: Sequence[str] = (),
    libs: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Path:
    """A thin AppImage of the C program ``source``, compiled to ``usr/bin/<name>``."""
    with tempfile.TemporaryDirectory(prefix="thin-app.", dir=out.parent) as tmp:
        appdir = Path(tmp) / "AppDir"
        (appdir / "usr/bin").mkdir(parents=True)
        binary = appdir / "usr/bin" / name
        command.run(["gcc", "-O1", *cflags, "-o", str(binary), str(source), *libs],
                    hint="gcc is in the toolchain root; run through ./devroot")  # fmt: skip
        write_apprun(appdir, f"/usr/bin/{name}", env)
        return build_appimage(appdir, out)
