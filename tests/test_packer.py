"""The AppImage packer and the demo AppImage."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from runner import appimage
from runner.entrypoint import entrypoint
from testkit import packer


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return packer.build_demo_appimage(tmp_path_factory.mktemp("demo") / "demo.AppImage")


def test_runtime_is_x86_64_elf_with_magic_and_sections(tmp_path: Path) -> None:
    runtime = packer.build_runtime(tmp_path / "runtime")
    data = runtime.read_bytes()
    assert data[8:11] == b"AI\x02"
    with runtime.open("rb") as fh:
        elf = ELFFile(fh)
        assert elf["e_machine"] == "EM_X86_64"
        assert elf.num_sections() > 0
        shoff, shnum, shentsize = elf["e_shoff"], elf["e_shnum"], elf["e_shentsize"]
    assert shoff + shnum * shentsize == len(data)
    # The runtime says what it is and does not pretend to mount anything.
    run = subprocess.run([str(runtime)], capture_output=True, text=True, check=False)
    assert run.returncode == 127
    assert "fexstack" in run.stderr and "unsquashfs" in run.stderr


def test_demo_appimage_contents(tmp_path: Path, demo: Path) -> None:
    extraction = appimage.extract(demo, cache=tmp_path / "cache")
    appdir = extraction.appdir
    names = sorted(p.relative_to(appdir).as_posix() for p in appdir.rglob("*"))
    assert names == [
        "AppRun",
        "fexstack-demo.desktop",
        "fexstack-demo.svg",
        "usr",
        "usr/bin",
        "usr/bin/fexstack-demo",
    ]
    with (appdir / "usr/bin/fexstack-demo").open("rb") as fh:
        elf = ELFFile(fh)
        dynamic = elf.get_section_by_name(".dynamic")
        needed = [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        assert elf["e_machine"] == "EM_X86_64"
    assert "libdemo-greet.so.1" in needed
    assert entrypoint(appdir).argv[0] == "/bin/bash"


def test_demo_runs_with_overlay_like_libraries(tmp_path: Path, demo: Path) -> None:
    """With libraries of the overlay's sonames on the path, AppRun prints the greeting."""
    appdir = appimage.extract(demo, cache=tmp_path / "cache").appdir
    libdir = tmp_path / "lib64"
    libdir.mkdir()
    (tmp_path / "fmt.c").write_text(
        '#include "demo.h"\nconst char *demo_fmt(const char *n){(void)n;return "hello, overlay";}\n'
    )
    (tmp_path / "greet.c").write_text(
        '#include "demo.h"\nconst char *demo_greet(void){return demo_fmt("x");}\n'
    )
    inc = ["-I", str(packer.DEMO_SOURCE_DIR)]
    subprocess.run(["gcc", "-shared", "-fPIC", *inc, "-Wl,-soname,libdemo-fmt.so.1", "-o",
                    str(libdir / "libdemo-fmt.so.1"), str(tmp_path / "fmt.c")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", *inc, "-Wl,-soname,libdemo-greet.so.1", "-o",
                    str(libdir / "libdemo-greet.so.1"), str(tmp_path / "greet.c"),
                    str(libdir / "libdemo-fmt.so.1")], check=True)
    ep = entrypoint(appdir)
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir)}
    run = subprocess.run(list(ep.argv), capture_output=True, text=True, env=env, check=True,
                         cwd="/")
    assert run.stdout == "hello, overlay\nfexstack-demo: ok\n"
    # Without them it cannot start: the AppImage does not ship the overlay's libraries.
    env.pop("LD_LIBRARY_PATH")
    bare = subprocess.run(list(ep.argv), capture_output=True, text=True, env=env, check=False)
    assert bare.returncode != 0 and "libdemo-greet.so.1" in bare.stderr


def test_demo_appimage_is_reproducible(tmp_path: Path, demo: Path) -> None:
    again = packer.build_demo_appimage(tmp_path / "again.AppImage")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(
        demo.read_bytes()
    ).digest()


def test_build_appimage_with_given_runtime(tmp_path: Path) -> None:
    runtime = packer.build_runtime(tmp_path / "rt", magic=b"XX\x00")
    appdir = tmp_path / "AppDir"
    appdir.mkdir()
    (appdir / "AppRun").write_text("#!/bin/sh\n")
    image = packer.build_appimage(appdir, tmp_path / "a.AppImage", runtime=runtime)
    assert image.read_bytes()[8:11] == b"AI\x02"
    assert runtime.read_bytes()[8:11] == b"XX\x00"  # the given runtime is not modified
    assert os.access(image, os.X_OK)
    assert appimage.inspect(image).payload_offset == runtime.stat().st_size
