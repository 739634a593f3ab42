"""fontconfig: the ``fc-cache`` caches of font folders (reported, never generated).

fc-cache's files record each font folder's mtime, so no two builds would give the same
bytes; fontconfig without them scans the fonts when an app starts and works.
"""

from invariants.cachekinds.kind import Kind

KIND = Kind(
    name="fontconfig",
    cache="/usr/lib/fontconfig/cache",
    inputs="/usr/share/fonts/**",
    patterns=("*.ttf", "*.otf", "*.pcf.gz", "*.ttc"),
    outputs=(),
    tools=("/usr/bin/fc-cache",),
    host_tool=None,
    argv=(),
    meets="fontconfig scans the overlay's fonts at every start (slower first window, "
    "nothing fails)",
    generate=False,
)
