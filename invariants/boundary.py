"""B. ABI boundary: the loader, glibc's runtime, libgcc_s, libstdc++ and the other
toolchain runtimes belong to the base.

A deps overlay may not carry them, matched by file name in any directory and by the
package that brought a file; each finding names the file and that package.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re

from invariants.context import CheckContext, Finding

NAME = "abi-boundary"

# File names (any directory). glibc's runtime, the loader, then the compiler's runtimes.
FILE_PATTERNS = (
    "ld-linux*.so*", "ld64.so*", "ld-[0-9]*.so", "ld.so",
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "libresolv.so.2", "libutil.so.1", "libanl.so.1", "libnsl.so.1", "libnss_*.so.2",
    "libBrokenLocale.so.1", "libmvec.so.1", "libc_malloc_debug.so.0", "libthread_db.so.1",
    "libmemusage.so", "libpcprofile.so", "libSegFault.so",
    "libc-[0-9]*.so", "libm-[0-9]*.so", "libpthread-[0-9]*.so",
    "libgcc_s.so*", "libgcc_s-*.so*", "libstdc++.so*", "libatomic.so*", "libgomp.so*",
    "libquadmath.so*", "libitm.so*",
    "libasan.so*", "libubsan.so*", "libtsan.so*", "liblsan.so*", "libhwasan.so*",
)
# Paths that change how every process loads (any layer above the base replaces them).
PATHS = ("/etc/ld.so.cache", "/etc/ld.so.preload")
# Packages (fnmatch) that are the ABI boundary as a whole.
PACKAGES = (
    "glibc", "glibc-*", "libgcc", "libstdc++", "libatomic", "libgomp", "libquadmath",
    "libitm", "libasan", "libubsan", "libtsan", "liblsan", "libhwasan", "compat-libstdc++*",
    "compat-libgcc*",
)

HINT = ("the base owns the loader, glibc and the toolchain runtimes: exclude the package "
        "(or the dependency that pulls it in) from the stack, or use class = "
        '"base-refresh" for a deliberate ABI change')


# All of FILE_PATTERNS at once: most names match none, and one regex says so fastest.
_ANY_FILE = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in FILE_PATTERNS))


def file_rule(path: str) -> str | None:
    if path in PATHS:
        return path
    name = posixpath.basename(path)
    if _ANY_FILE.match(name) is None:
        return None
    return next((p for p in FILE_PATTERNS if fnmatch.fnmatchcase(name, p)), None)


@functools.cache
def package_rule(package: str | None) -> str | None:
    if not package:
        return None
    return next((p for p in PACKAGES if fnmatch.fnmatchcase(package, p)), None)


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for path, node in ctx.overlay.nodes.items():
        if node.kind == "dir":
            continue
        package = ctx.package(path)
        by_name = file_rule(path)
        by_package = package_rule(package)
        if by_name is None and by_package is None:
            continue
        reasons = []
        if by_name is not None:
            reasons.append(f"its name matches {by_name}")
        if by_package is not None:
            reasons.append(f"package {package} is part of the ABI boundary ({by_package})")
        brought = f"brought by {package}" if package else "owner unknown"
        out.append(Finding(NAME, path, f"{path} ({brought}): {' and '.join(reasons)}",
                           HINT, package))
    return out
