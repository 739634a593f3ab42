"""Entrypoint resolution: how an AppDir's AppRun is started."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fexstack.errors import RunError
from runner import appimage
from runner.entrypoint import Entrypoint, entrypoint
from testkit import packer


def _appdir(tmp_path: Path, apprun: bytes | None, mode: int = 0o755) -> Path:
    appdir = tmp_path / "AppDir"
    appdir.mkdir()
    if apprun is not None:
        (appdir / "AppRun").write_bytes(apprun)
        (appdir / "AppRun").chmod(mode)
    return appdir


@pytest.fixture(scope="module")
def elf_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("elf")
    (work / "m.c").write_text('#include <stdio.h>\nint main(void){puts("elf ok");return 0;}\n')
    subprocess.run(["gcc", "-O2", "-o", str(work / "m"), str(work / "m.c")], check=True)
    return (work / "m").read_bytes()


@pytest.mark.parametrize(
    ("shebang", "prefix"),
    [
        (b"#!/bin/bash\n", ("/bin/bash",)),
        (b"#! /bin/bash\n", ("/bin/bash",)),
        (b"#!/usr/bin/env bash\n", ("/usr/bin/env", "bash")),
        (b"#!/bin/sh -e\n", ("/bin/sh", "-e")),
        # Linux passes everything after the interpreter as ONE argument.
        (b"#!/usr/bin/env -S bash -e  \n", ("/usr/bin/env", "-S bash -e")),
        (b"#!/bin/sh\t-eu\n", ("/bin/sh", "-eu")),
    ],
)
def test_script_runs_through_interpreter(
    tmp_path: Path, shebang: bytes, prefix: tuple[str, ...]
) -> None:
    appdir = _appdir(tmp_path, shebang + b"echo hi\n")
    ep = entrypoint(appdir)
    apprun = str(appdir.resolve() / "AppRun")
    assert ep == Entrypoint(argv=(*prefix, apprun), kind="script", interpreter=prefix[0])


def test_script_argv_really_runs(tmp_path: Path) -> None:
    appdir = _appdir(tmp_path, b'#!/bin/sh -e\necho "ran $0"\n')
    ep = entrypoint(appdir)
    out = subprocess.run(list(ep.argv), capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout == f"ran {appdir.resolve() / 'AppRun'}\n"


def test_relative_appdir_gives_absolute_argv(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _appdir(tmp_path, b"#!/bin/bash\n")
    monkeypatch.chdir(tmp_path)
    ep = entrypoint(Path("AppDir"))
    assert all(os.path.isabs(a) for a in (ep.argv[0], ep.argv[-1]))
    assert ep.argv[-1] == str(tmp_path.resolve() / "AppDir" / "AppRun")


def test_elf_runs_directly(tmp_path: Path, elf_binary: bytes) -> None:
    appdir = _appdir(tmp_path, elf_binary)
    ep = entrypoint(appdir)
    assert ep == Entrypoint(argv=(str(appdir.resolve() / "AppRun"),), kind="elf",
                            interpreter=None)
    out = subprocess.run(list(ep.argv), capture_output=True, text=True, check=True)
    assert out.stdout == "elf ok\n"


def test_symlinked_apprun_inside_appdir(tmp_path: Path, elf_binary: bytes) -> None:
    appdir = _appdir(tmp_path, None)
    (appdir / "usr" / "bin").mkdir(parents=True)
    (appdir / "usr" / "bin" / "app").write_bytes(elf_binary)
    (appdir / "usr" / "bin" / "app").chmod(0o755)
    os.symlink("usr/bin/app", appdir / "AppRun")
    ep = entrypoint(appdir)
    assert ep.kind == "elf"
    assert ep.argv == (str(appdir.resolve() / "AppRun"),)


def test_symlinked_script_apprun(tmp_path: Path) -> None:
    appdir = _appdir(tmp_path, None)
    (appdir / "bin").mkdir()
    (appdir / "bin" / "start.sh").write_text("#!/bin/sh\necho hi\n")
    (appdir / "bin" / "start.sh").chmod(0o755)
    os.symlink("bin/start.sh", appdir / "AppRun")
    assert entrypoint(appdir).argv == ("/bin/sh", str(appdir.resolve() / "AppRun"))


def test_demo_appimage_entrypoint(tmp_path: Path) -> None:
    image = packer.build_demo_appimage(tmp_path / "demo.AppImage")
    appdir = appimage.extract(image, cache=tmp_path / "cache").appdir
    ep = entrypoint(appdir)
    assert ep.kind == "script"
    assert ep.argv == ("/bin/bash", str(appdir.resolve() / "AppRun"))


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("missing", "has no AppRun"),
        ("not-executable", "not executable (mode 0644)"),
        ("outside", "leads outside the AppDir"),
        ("dangling", "dangling symlink"),
        ("directory", "not a regular file"),
        ("no-shebang", "neither an ELF executable nor a #! script"),
        ("crlf", "carriage return"),
        ("relative-interpreter", "relative path"),
        ("empty-shebang", "names no interpreter"),
    ],
)
def test_broken_apprun(tmp_path: Path, setup: str, needle: str) -> None:
    appdir = _appdir(tmp_path, None)
    apprun = appdir / "AppRun"
    if setup == "not-executable":
        apprun.write_text("#!/bin/sh\n")
        apprun.chmod(0o644)
    elif setup == "outside":
        outside = tmp_path / "elsewhere"
        outside.write_text("#!/bin/sh\n")
        outside.chmod(0o755)
        os.symlink(outside, apprun)
    elif setup == "dangling":
        os.symlink("usr/bin/missing", apprun)
    elif setup == "directory":
        apprun.mkdir()
    elif setup != "missing":
        body = {
            "no-shebang": b"echo hi\n",
            "crlf": b"#!/bin/bash\r\necho hi\r\n",
            "relative-interpreter": b"#!bash\n",
            "empty-shebang": b"#!   \n",
        }[setup]
        apprun.write_bytes(body)
        apprun.chmod(0o755)
    with pytest.raises(RunError) as err:
        entrypoint(appdir)
    assert needle in err.value.message
    assert str(appdir) in err.value.message
    assert err.value.hint


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a directory"):
        entrypoint(tmp_path / "nothing")
