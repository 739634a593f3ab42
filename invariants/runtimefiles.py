"""Files and programs libraries need at run time that no DT_NEEDED names.

A small data table keyed by soname: what the library execs (WebKitGTK's sandbox runs
``bwrap`` and ``xdg-dbus-proxy``), or reads and dies without (GTK 3's MIME database and
GSettings schemas, glvnd's EGL vendor files). appcheck looks each up in the merged view,
host fallback included (``host_provides``): a need met by no layer and not by the host is
a blocking finding naming the path, before the app is launched. ``paths`` are
alternatives (Fedora's and Debian's places); a path ending in ``/*.json`` is met by any
matching file in that folder.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from invariants.view import View


@dataclass(frozen=True)
class Need:
    kind: str  # "exec": a program the library runs; "file": data it reads
    paths: tuple[str, ...]  # any one of them meets the need
    why: str  # what the library does with it, and what happens without it
    contains: tuple[str, ...] = ()  # names the file must hold (a schema id in a cache)


NEEDS: Mapping[str, tuple[Need, ...]] = MappingProxyType({
    "libwebkit2gtk-4.1.so.0": (
        Need("exec", ("/usr/bin/bwrap",), "WebKitGTK starts its web and network processes "
             "in a bubblewrap sandbox; without bwrap the web process never starts"),
        Need("exec", ("/usr/bin/xdg-dbus-proxy",), "WebKitGTK's sandbox reaches D-Bus "
             "through xdg-dbus-proxy; without it the web process cannot start"),
    ),
    "libgtk-3.so.0": (
        Need("file", ("/usr/share/mime/mime.cache",), "gdk-pixbuf tells image formats with "
             "the shared MIME database: without it 'Unrecognized image file format' for "
             "GTK's own icons and GTK 3 aborts (ensure_surface_for_gicon)"),
        Need("file", ("/usr/share/glib-2.0/schemas/gschemas.compiled",), "GTK 3's widgets "
             "read org.gtk.Settings.* schemas: without them GLib aborts ('No GSettings "
             "schemas are installed' / 'Settings schema ... is not installed')",
             contains=("org.gtk.Settings.ColorChooser", "org.gtk.Settings.FileChooser")),
    ),
    "libEGL.so.1": (
        Need("file", ("/usr/share/glvnd/egl_vendor.d/*.json", "/etc/glvnd/egl_vendor.d/*.json"),
             "glvnd's libEGL finds its vendor library (Mesa's libEGL_mesa.so.0) through a "
             "vendor file: without one eglGetDisplay fails and WebKitGTK aborts"),
    ),
})


def lacking(view: View, path: str, need: Need) -> list[str]:
    """The names of ``need.contains`` the file at ``path`` does not hold."""
    if not need.contains:
        return []
    disk = view.disk(path)
    try:
        data = disk.read_bytes() if disk is not None else b""
    except OSError:
        data = b""
    return [name for name in need.contains if name.encode() not in data]


def met(view: View, path: str, kind: str) -> str | None:
    """The view path that meets ``path`` (a file, executable for "exec"), or None."""
    folder, _, name = path.rpartition("/")
    if "*" in name:
        for candidate, _node in sorted(view.walk(folder)):
            if posixpath.dirname(candidate) == folder and fnmatch.fnmatchcase(
                posixpath.basename(candidate), name
            ):
                found = view.resolve(candidate)
                if found.node is not None and found.node.kind == "file":
                    return candidate
        resolved = view.resolve(folder)
        if resolved.node is not None and resolved.path != folder:
            for candidate, _node in sorted(view.walk(resolved.path)):
                if fnmatch.fnmatchcase(posixpath.basename(candidate), name):
                    return candidate
        return None
    found = view.resolve(path)
    if found.node is None or found.node.kind != "file":
        return None
    if kind == "exec" and not found.node.mode & 0o111:
        return None
    return path


def needs_of(sonames: Sequence[str]) -> list[tuple[str, Need]]:
    return [(s, n) for s in sorted(set(sonames)) for n in NEEDS.get(s, ())]
