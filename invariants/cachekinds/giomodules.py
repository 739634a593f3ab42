"""GIO modules: ``giomodule.cache``, which extension points each module implements."""

from invariants.cachekinds.kind import Kind

DIR = "/usr/lib/x86_64-linux-gnu/gio/modules"

KIND = Kind(
    name="gio-modules",
    cache=f"{DIR}/giomodule.cache",
    inputs=DIR,
    patterns=("*.so",),
    outputs=(f"{DIR}/giomodule.cache",),
    tools=(
        "/usr/lib/x86_64-linux-gnu/glib-2.0/gio-querymodules",
        "/usr/bin/gio-querymodules-64",
        "/usr/bin/gio-querymodules",
    ),
    host_tool=None,  # it dlopens each x86_64 module
    argv=(DIR,),
    meets="GIO loads every module at startup to find its extension points (slower "
    "start; a module with a missing library is reported then, not at build time)",
    normalize="lines",
)
