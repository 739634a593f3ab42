"""What every install-time cache kind declares (:class:`Kind`), the one signature.

A cache is a file that package scriptlets or file triggers write from the files of other
packages (its inputs). An overlay made from RPM payloads carries the inputs but not the
cache, so the stage step writes it for the merged view (:mod:`overlays.caches.generate`)
and the check reports one it could not write (:mod:`invariants.caches`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One cache kind.

    - ``cache``: the cache file, at its default path (no environment variable points an
      app elsewhere: Bambu's AppRun unsets GSETTINGS_SCHEMA_DIR, GIO_MODULE_DIR and
      GDK_PIXBUF_MODULE_FILE);
    - ``inputs``: the folder of its inputs and ``patterns`` their names;
    - ``outputs``: the folders (or files) the tool writes, copied into the overlay;
    - ``tools``: candidate paths of the x86_64 tool in the merged view, tried in order;
    - ``host_tool``: the host's tool, for formats that are the same on every architecture
      (None: the cache holds x86_64 facts, only the view's own tool can write it);
    - ``argv``: the tool's arguments after its path;
    - ``meets``: what an app meets without the cache (the check's finding says it);
    - ``normalize``: a name of :data:`overlays.caches.generate.NORMALIZERS`, or "" when
      the tool's output is already independent of readdir order;
    - ``generate``: False for a cache whose bytes cannot be reproducible (fontconfig's
      hold folder mtimes): the check reports it, nothing writes it.
    """

    name: str
    cache: str
    inputs: str
    patterns: tuple[str, ...]
    outputs: tuple[str, ...]
    tools: tuple[str, ...]
    host_tool: str | None
    argv: tuple[str, ...]
    meets: str
    normalize: str = ""
    generate: bool = True

    def is_input(self, path: str) -> bool:
        """Whether ``path`` (absolute, in the view) is one of this cache's inputs."""
        folder, _, name = path.rpartition("/")
        if folder != self.inputs and not (
            self.inputs.endswith("/**") and folder.startswith(self.inputs[:-3])
        ):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
