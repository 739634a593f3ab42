"""shared-mime-info: ``mime.cache`` and its companions from ``packages/*.xml``."""

from invariants.cachekinds.kind import Kind

MIME = "/usr/share/mime"

KIND = Kind(
    name="mime",
    cache=f"{MIME}/mime.cache",
    inputs=f"{MIME}/packages",
    patterns=("*.xml",),
    outputs=(MIME,),  # mime.cache, globs2, magic, the per-type XML files ...
    tools=("/usr/bin/update-mime-database",),
    host_tool="update-mime-database",  # a documented byte format, the same on every arch
    argv=("-n", MIME),
    meets="gdk-pixbuf cannot tell image formats apart: 'Unrecognized image file format' "
    "for every icon; GTK 3 aborts in ensure_surface_for_gicon",
)
