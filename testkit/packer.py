"""Build Type 2 AppImages: fexstack's demo AppImage and the AppImages the tests use.

An AppImage here is a small x86_64 ELF runtime (``demo/appimage/runtime.c``, with the
magic ``AI\\x02`` written at offset 8) followed by a reproducible SquashFS image of an
AppDir. Helpers also build the malformed kinds (Type 1, DwarFS payload, truncated) that
:func:`runner.appimage.inspect` must refuse.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

from fexstack import command
from fexstack.atomic import temp_path, write_bytes
from fexstack.paths import PROJECT_ROOT

DEMO_DIR = PROJECT_ROOT / "demo" / "appimage"
RUNTIME_SOURCE = DEMO_DIR / "runtime.c"
DEMO_SOURCE_DIR = DEMO_DIR / "src"
DEMO_APPDIR = DEMO_DIR / "AppDir"
DEMO_PROGRAM = "fexstack-demo"

AI_OFFSET = 8
MKSQUASHFS_OPTIONS = ("-root-owned", "-noappend", "-all-time", "0", "-mkfs-time", "0", "-quiet")

_GCC_HINT = "gcc is needed to build the demo AppImage; run through ./devroot"


def stamp_magic(path: Path, magic: bytes) -> None:
    """Write ``magic`` into e_ident's padding (offset 8) of the ELF file ``path``."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    data[AI_OFFSET : AI_OFFSET + len(magic)] = magic
    mode = path.stat().st_mode
    write_bytes(path, bytes(data))
    path.chmod(stat.S_IMODE(mode))


def build_runtime(out: Path, *, magic: bytes = b"AI\x02") -> Path:
    """Compile the runtime stub to ``out`` and stamp the AppImage magic into it."""
    with temp_path(out) as tmp:
        command.run(
            ["gcc", "-Os", "-s", "-o", str(tmp), str(RUNTIME_SOURCE)], hint=_GCC_HINT
        )
        stamp_magic(tmp, magic)
    return out


def squashfs(appdir: Path, out: Path) -> Path:
    """A reproducible SquashFS image of ``appdir`` (root-owned, all times zero)."""
    with temp_path(out) as tmp:
        command.run(
            ["mksquashfs", str(appdir), str(tmp), *MKSQUASHFS_OPTIONS],
            hint="mksquashfs (squashfs-tools) is needed; run through ./devroot",
        )
    return out


def _concat(out: Path, *parts: Path | bytes) -> Path:
    with temp_path(out) as tmp:
        with tmp.open("wb") as dst:
            for part in parts:
                if isinstance(part, bytes):
                    dst.write(part)
                else:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, dst)
        tmp.chmod(0o755)
    return out


def build_appimage(appdir: Path, out: Path, *, runtime: Path | None = None) -> Path:
    """Pack ``appdir`` as a Type 2 AppImage at ``out``: runtime + SquashFS.

    ``runtime`` is an ELF to use as the runtime (the magic is stamped into a copy);
    by default the stub from ``demo/appimage/runtime.c`` is compiled.
    """
    with tempfile.TemporaryDirectory(prefix="fexstack-pack-") as scratch:
        work = Path(scratch)
        stub = work / "runtime"
        if runtime is None:
            build_runtime(stub)
        else:
            shutil.copyfile(runtime, stub)
            stamp_magic(stub, b"AI\x02")
        image = squashfs(appdir, work / "payload.sqfs")
        return _concat(out, stub, image)


def build_type1_like(out: Path) -> Path:
    """An ELF runtime with the Type 1 magic ``AI\\x01`` and an ISO 9660 signature."""
    with tempfile.TemporaryDirectory(prefix="fexstack-pack-") as scratch:
        stub = build_runtime(Path(scratch) / "runtime", magic=b"AI\x01")
        size = stub.stat().st_size
        # ISO 9660 keeps its first volume descriptor at byte 32768: "\x01CD001".
        pad = b"\0" * max(0, 32768 - size) + b"\x01CD001\x01" + b"\0" * 2041
        return _concat(out, stub, pad)


def build_dwarfs_like(out: Path) -> Path:
    """A Type 2 runtime followed by bytes that start like a DwarFS image."""
    with tempfile.TemporaryDirectory(prefix="fexstack-pack-") as scratch:
        stub = build_runtime(Path(scratch) / "runtime")
        return _concat(out, stub, b"DWARFS\x02\x05" + b"\0" * 4088)


def build_truncated(appimage: Path, out: Path, *, keep: int) -> Path:
    """The first ``keep`` bytes of ``appimage``, as an interrupted download leaves it."""
    with appimage.open("rb") as src:
        data = src.read(keep)
    return _concat(out, data)


def build_demo_program(out_dir: Path) -> Path:
    """Compile ``fexstack-demo`` into ``out_dir`` against link-time stub libraries.

    The stubs carry the demo overlay's sonames, so the program's DT_NEEDED names
    ``libdemo-greet.so.1``; they are built in a scratch directory and never shipped.
    """
    with tempfile.TemporaryDirectory(prefix="fexstack-demo-") as scratch:
        work = Path(scratch)
        stubs = DEMO_SOURCE_DIR / "stubs"
        include = ["-I", str(DEMO_SOURCE_DIR)]
        fmt = work / "libdemo-fmt.so.1"
        greet = work / "libdemo-greet.so.1"
        command.run(
            ["gcc", "-shared", "-fPIC", "-O2", *include, "-Wl,-soname,libdemo-fmt.so.1",
             "-o", str(fmt), str(stubs / "demo-fmt.c")],
            hint=_GCC_HINT,
        )
        command.run(
            ["gcc", "-shared", "-fPIC", "-O2", *include, "-Wl,-soname,libdemo-greet.so.1",
             "-o", str(greet), str(stubs / "demo-greet.c"), str(fmt)],
            hint=_GCC_HINT,
        )
        program = out_dir / DEMO_PROGRAM
        with temp_path(program) as tmp:
            command.run(
                ["gcc", "-O2", *include, f"-Wl,-rpath-link,{work}", "-o", str(tmp),
                 str(DEMO_SOURCE_DIR / "fexstack-demo.c"), str(greet)],
                hint=_GCC_HINT,
            )
    return program


def build_demo_appdir(appdir: Path) -> Path:
    """Lay out the demo AppDir at ``appdir`` (which must not exist yet)."""
    shutil.copytree(DEMO_APPDIR, appdir, symlinks=True)
    build_demo_program(appdir / "usr" / "bin")
    return appdir


def build_demo_appimage(out: Path) -> Path:
    """Build fexstack's demo AppImage at ``out``.

    Its ``#!/bin/bash`` AppRun execs ``usr/bin/fexstack-demo``, which needs
    ``libdemo-greet.so.1`` (and through it ``libdemo-fmt.so.1``) from the demo overlay.
    """
    with tempfile.TemporaryDirectory(prefix="fexstack-demo-") as scratch:
        appdir = build_demo_appdir(Path(scratch) / "AppDir")
        return build_appimage(appdir, out)
