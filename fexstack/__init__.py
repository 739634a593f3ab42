"""fexstack: declarative EROFS overlays for running x86_64 AppImages under muvm + FEX.

The shared core lives here: the exception hierarchy, the one wrapper through which
every external tool runs, atomic file writes, sorted JSON and the cache locations.
The pipeline's steps live in ``overlays`` (stacks, lock, fetch, stage, image),
``invariants`` (the checks and the loader model) and ``runner`` (AppImages, muvm,
evidence).
"""

__version__ = "0.1.0"
