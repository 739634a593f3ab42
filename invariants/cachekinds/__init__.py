"""Install-time caches: the one table of cache kinds, one small module each.

See :mod:`invariants.cachekinds.kind` for what a kind declares,
:mod:`overlays.caches.generate` for how the stage step writes them, and
:mod:`invariants.caches` for the check (both read this table).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from invariants.cachekinds import fontconfig, giomodules, gsettings, immodules, mime, pixbuf
from invariants.cachekinds.kind import Kind

KINDS: Mapping[str, Kind] = MappingProxyType({
    k.name: k
    for k in (
        gsettings.KIND,
        mime.KIND,
        pixbuf.KIND,
        giomodules.KIND,
        immodules.KIND,
        fontconfig.KIND,
    )
})

__all__ = ["KINDS", "Kind"]
