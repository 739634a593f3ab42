"""The embedded demo: a repository, a base and an AppImage built from sources in ``demo/``.

``doit overlay:demo`` and ``doit run:demo`` work on a fresh x86_64 machine with nothing
but the toolchain root: the RPMs are compiled from ``demo/libs/*.c`` by the same fixture
factory the tests use, and the base carries the toolchain root's own glibc and bash, laid
out like Fedora's FEX RootFS (loader in /usr/lib64, no /lib64, so the compat overlay is
needed). Its loader is the toolchain root's, whose default search path is
/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib and /usr/lib; the demo's
libraries therefore install into /usr/lib, and ``stacks/bases/demo.toml`` says so in
``lib_dirs``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fexstack import atomic
from fexstack.paths import PROJECT_ROOT
from testkit.factory import (
    Factory,
    File,
    Library,
    Package,
    base_tree,
    glibc_package,
    write_kiwi_packages,
)

SOURCES = PROJECT_ROOT / "demo"
GLIBC_VERSION = "2.99"


def _source(name: str) -> str:
    return (SOURCES / "libs" / name).read_text()


def _host_file(path: str) -> bytes:
    return Path(path).read_bytes()


def base_packages() -> list[Package]:
    """What the demo base holds: glibc, and bash with its terminfo library."""
    return [
        glibc_package(GLIBC_VERSION),
        Package(
            "ncurses-libs",
            version="6.5",
            summary="terminfo library for bash",
            contents=(
                File(
                    "/usr/lib64/libtinfo.so.6",
                    _host_file("/lib/x86_64-linux-gnu/libtinfo.so.6"),
                    0o755,
                ),
            ),
        ),
        Package(
            "bash",
            version="5.2",
            summary="the shell that AppRun scripts start with",
            contents=(File("/usr/bin/bash", _host_file("/bin/bash"), 0o755),),
        ),
    ]


def overlay_packages() -> list[Package]:
    """The demo stack's packages: a greeting library that needs a formatting library."""
    fmt = Library(
        "libdemo-fmt.so.1", path="/usr/lib/libdemo-fmt.so.1.0", source=_source("demo-fmt.c")
    )
    greet = Library(
        "libdemo-greet.so.1",
        path="/usr/lib/libdemo-greet.so.1.0",
        needs=("libdemo-fmt.so.1",),
        source=_source("demo-greet.c"),
    )
    return [
        Package("libdemo-fmt", version="1.0", summary="demo formatting library", contents=(fmt,)),
        Package(
            "libdemo-greet", version="1.0", summary="demo greeting library", contents=(greet,)
        ),
        Package(
            "demo-data",
            version="1.0",
            arch="noarch",
            summary="demo data files",
            contents=(File("/usr/share/fexstack-demo/greeting.txt", b"hello, overlay\n"),),
        ),
    ]


def build_repo(dest: Path, *, workdir: Path) -> Path:
    """The demo repository (base packages too, as Fedora's repos hold the RootFS's)."""
    factory = Factory(workdir)
    try:
        with atomic.temp_dir(dest) as tmp:
            factory.repo(tmp, [*base_packages(), *overlay_packages()])
    finally:
        factory.close()
    return dest


def build_base(image: Path, packages_list: Path, *, workdir: Path) -> Path:
    """The demo base as an EROFS image plus its kiwi package list."""
    from overlays.image import build_image

    factory = Factory(workdir)
    tree = image.parent / ".tmp-demo-base-tree"
    atomic.remove(tree)
    try:
        base_tree(tree, base_packages(), factory=factory)
        tree.chmod(0o755)
        build_image(tree, image, uuid_seed="fexstack demo base")
        write_kiwi_packages(packages_list, base_packages())
    finally:
        factory.close()
        shutil.rmtree(tree, ignore_errors=True)
    return image


def build_appimage(out: Path) -> Path:
    """The demo AppImage (``#!/bin/bash`` AppRun starting a program that needs the overlay)."""
    from testkit.packer import build_demo_appimage

    return build_demo_appimage(out)
