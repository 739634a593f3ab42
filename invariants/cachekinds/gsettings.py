"""GSettings: ``gschemas.compiled`` from the schema files (glib's file trigger)."""

from invariants.cachekinds.kind import Kind

SCHEMAS = "/usr/share/glib-2.0/schemas"

KIND = Kind(
    name="gsettings",
    cache=f"{SCHEMAS}/gschemas.compiled",
    inputs=SCHEMAS,
    patterns=("*.gschema.xml", "*.gschema.override"),
    outputs=(f"{SCHEMAS}/gschemas.compiled",),
    tools=(
        "/usr/lib/x86_64-linux-gnu/glib-2.0/glib-compile-schemas",
        "/usr/lib64/glib-2.0/glib-compile-schemas",
        "/usr/bin/glib-compile-schemas",
    ),
    host_tool="glib-compile-schemas",  # GVariant database: the same bytes on every arch
    argv=(SCHEMAS,),
    meets="GLib-GIO-ERROR: No GSettings schemas are installed on the system "
    "(or: Settings schema '<id>' is not installed), and the app aborts",
)
