"""The fixture factory: real RPMs, ELF files, repositories and bases, built from source.

The tests build every scenario with it, and the embedded demo (``overlays/demo.py``) builds
its repository and base with it.

Declarative specs (:class:`Package` holding :class:`Library`, :class:`Executable`,
:class:`File`, :class:`Symlink`, :class:`Dir`) become x86_64 (or i686, aarch64, noarch)
RPMs built by rpmbuild from C compiled on the spot, so rpm computes the soname
Requires/Provides itself; :meth:`Factory.repo` makes createrepo_c repositories, optionally
signed with a throwaway key. :func:`glibc_package` packages the toolchain root's real
loader and glibc in the Fedora layout, and :func:`base_tree` lays packages out as a plain
directory base with its ld.so.cache.
"""

from testkit.factory.base import (
    base_tree,
    glibc_package,
    libgcc_package,
    libstdcxx_package,
    write_kiwi_packages,
)
from testkit.factory.factory import Factory
from testkit.factory.spec import (
    Dir,
    Executable,
    FactoryError,
    File,
    GpgKey,
    Library,
    Package,
    Symlink,
    fixture_symbol,
)

__all__ = [
    "Dir",
    "Executable",
    "Factory",
    "FactoryError",
    "File",
    "GpgKey",
    "Library",
    "Package",
    "Symlink",
    "base_tree",
    "fixture_symbol",
    "glibc_package",
    "libgcc_package",
    "libstdcxx_package",
    "write_kiwi_packages",
]
