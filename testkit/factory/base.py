"""A Fedora-like x86_64 base: the real loader and glibc, packaged and laid out as a tree.

The toolchain root's own x86_64 runtime (Debian's glibc, libgcc_s, libstdc++) is packaged
into /usr/lib64 as Fedora lays it out, so rpm's generators give the packages the same kind
of Provides Fedora's have (``libc.so.6()(64bit)``, ``libc.so.6(GLIBC_2.34)(64bit)``, ...),
and the files really load. :func:`base_tree` mimics the FEX RootFS: a plain directory with
/usr/lib64/ld-linux-x86-64.so.2, by default without /lib64.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from fexstack import atomic, command
from testkit.factory.factory import Factory
from testkit.factory.spec import Dir, FactoryError, File, Package, Symlink

RUNTIME_DIRS = (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/lib64"))

GLIBC_FILES = (
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libmvec.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
    "libBrokenLocale.so.1",
    "libc_malloc_debug.so.0",
    "libnss_files.so.2",
    "libthread_db.so.1",
)


def _runtime_file(name: str) -> Path:
    """The real file (symlinks resolved) of an x86_64 runtime library in the toolchain root."""
    for folder in RUNTIME_DIRS:
        candidate = folder / name
        if candidate.exists():
            return candidate.resolve()
    raise FactoryError(
        f"{name} is not in {', '.join(map(str, RUNTIME_DIRS))}",
        "run the tests through ./devroot (its root has the x86_64 runtime)",
    )


def _lib(name: str, target_name: str | None = None) -> File:
    data = _runtime_file(name).read_bytes()
    return File(f"/usr/lib64/{target_name or name}", data, 0o755)


@functools.cache
def glibc_package(version: str = "2.99", release: str = "1") -> Package:
    """The real loader and glibc libraries in /usr/lib64, with Fedora's ld.so.conf."""
    contents: list[File | Dir | Symlink] = [_lib(name) for name in GLIBC_FILES]
    contents += [
        File("/etc/ld.so.conf", b"include ld.so.conf.d/*.conf\n", 0o644),
        Dir("/etc/ld.so.conf.d"),
    ]
    return Package(
        "glibc",
        version,
        release,
        summary="The GNU libc libraries (fexstack fixture of the real toolchain glibc)",
        contents=tuple(contents),
        provides=("rtld(GNU_HASH)",),
        license="LGPL-2.1-or-later",
    )


@functools.cache
def libgcc_package(version: str = "16.0", release: str = "1") -> Package:
    """The real libgcc_s.so.1 in /usr/lib64."""
    return Package(
        "libgcc",
        version,
        release,
        contents=(_lib("libgcc_s.so.1"),),
        license="GPL-3.0-or-later WITH GCC-exception-3.1",
    )


@functools.cache
def libstdcxx_package(version: str = "16.0", release: str = "1") -> Package:
    """The real libstdc++.so.6.0.N in /usr/lib64 with its libstdc++.so.6 symlink."""
    real = _runtime_file("libstdc++.so.6")
    return Package(
        "libstdc++",
        version,
        release,
        contents=(
            File(f"/usr/lib64/{real.name}", real.read_bytes(), 0o755),
            Symlink("/usr/lib64/libstdc++.so.6", real.name),
        ),
        license="GPL-3.0-or-later WITH GCC-exception-3.1",
    )


def base_tree(
    dest: Path,
    packages: Iterable[Package],
    *,
    lib64_symlink: bool = False,
    usrmerge: bool = True,
    factory: Factory | None = None,
) -> Path:
    """Lay the packages' RPM payloads into ``dest`` and write ``dest/etc/ld.so.cache``.

    ``usrmerge`` adds Fedora's ``bin``, ``sbin`` and ``lib`` symlinks into ``usr``;
    ``lib64_symlink`` adds ``lib64 -> usr/lib64`` (the FEX RootFS lacks it, so by default
    /lib64/ld-linux-x86-64.so.2 does not resolve). The cache covers /usr/lib64 (and a
    real /lib64 folder) plus whatever /etc/ld.so.conf includes; ldconfig does not create
    soname links (-X), so the tree holds exactly the packaged files. It needs root:
    ``ldconfig -r`` chroots into the tree.
    """
    factory = factory or Factory.default()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        rpm = factory.rpm(pkg)
        command.run(["bsdtar", "-xpf", str(rpm), "-C", str(dest)])
    links = [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] if usrmerge else []
    if lib64_symlink:
        links.append(("lib64", "usr/lib64"))
    for name, target in links:
        (dest / target).mkdir(parents=True, exist_ok=True)
        if not (dest / name).exists() and not (dest / name).is_symlink():
            (dest / name).symlink_to(target)
    (dest / "etc").mkdir(exist_ok=True)
    dirs = [
        f"/{d}"
        for d in ("usr/lib64", "lib64")
        if (dest / d).is_dir() and not (dest / d).is_symlink()
    ]
    command.run(["ldconfig", "-X", "-r", str(dest), *dirs], hint="ldconfig -r failed")
    if not (dest / "etc" / "ld.so.cache").exists():
        raise FactoryError(f"ldconfig wrote no ld.so.cache in {dest}", None)
    return dest


def write_kiwi_packages(
    path: Path, packages: Iterable[Package], *, missing: str = "(none)"
) -> Path:
    """Write a kiwi ``.packages`` list: ``NAME|EPOCH|VERSION|RELEASE|ARCH|DISTURL|LICENSE``.

    kiwi writes rpm's query output, so an unset EPOCH (epoch 0) and DISTURL read
    ``(none)``; pass ``missing=""`` for empty fields instead. Lines are sorted.
    """
    lines = sorted(
        "|".join(
            [
                p.name,
                str(p.epoch) if p.epoch else missing,
                p.version,
                p.release,
                p.arch,
                missing,
                p.license,
            ]
        )
        for p in packages
    )
    atomic.write_text(Path(path), "".join(line + "\n" for line in lines))
    return Path(path)
