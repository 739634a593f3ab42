"""gdk-pixbuf: ``loaders.cache``, the loader modules and the formats each reads."""

from invariants.cachekinds.kind import Kind

DIR = "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0"

KIND = Kind(
    name="gdk-pixbuf",
    cache=f"{DIR}/loaders.cache",
    inputs=f"{DIR}/loaders",
    patterns=("*.so",),
    outputs=(f"{DIR}/loaders.cache",),
    tools=(
        "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/gdk-pixbuf-query-loaders",
        "/usr/bin/gdk-pixbuf-query-loaders-64",
        "/usr/bin/gdk-pixbuf-query-loaders",
    ),
    host_tool=None,  # it dlopens each x86_64 loader
    argv=("--update-cache",),
    meets="no image loader is found: 'Unrecognized image file format' for PNG/JPEG icons "
    "(GTK 3 aborts in ensure_surface_for_gicon)",
    normalize="blocks",
)
