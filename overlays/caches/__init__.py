"""Install-time caches the stage step writes (:mod:`overlays.caches.generate`, one pass per
overlay: :mod:`overlays.caches.step`). The cache kinds, the one table the check shares, are
:mod:`invariants.cachekinds`."""
