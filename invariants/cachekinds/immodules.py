"""GTK 3 input methods: ``immodules.cache``."""

from invariants.cachekinds.kind import Kind

DIR = "/usr/lib/x86_64-linux-gnu/gtk-3.0/3.0.0"

KIND = Kind(
    name="gtk3-immodules",
    cache=f"{DIR}/immodules.cache",
    inputs=f"{DIR}/immodules",
    patterns=("*.so",),
    outputs=(f"{DIR}/immodules.cache",),
    tools=(
        "/usr/lib/x86_64-linux-gnu/libgtk-3-0t64/gtk-query-immodules-3.0",
        "/usr/lib/x86_64-linux-gnu/libgtk-3-0/gtk-query-immodules-3.0",
        "/usr/bin/gtk-query-immodules-3.0-64",
        "/usr/bin/gtk-query-immodules-3.0",
    ),
    host_tool=None,  # it dlopens each x86_64 module
    argv=("--update-cache",),
    meets="GTK 3 offers only its built-in input methods (the modules are never loaded)",
    normalize="blocks",
)
