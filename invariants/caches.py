"""Install-time caches: one the overlay's inputs need and the merged view lacks or has stale.

For each kind of :data:`invariants.cachekinds.KINDS` whose inputs the overlay adds: the cache
must be the overlay's own (the stage step writes it, :mod:`overlays.caches.generate`).
A cache a lower layer has (the base's: precedence keeps it, and it does not list the
overlay's inputs) is reported stale; no cache at all is reported missing (no tool in the
view or on the host, a format that cannot be reproducible, or a folder the host provides,
whose cache then comes from the host without the overlay's inputs). Each finding says
what the app will meet.
"""

from __future__ import annotations

from invariants.cachekinds import KINDS
from invariants.context import CheckContext, Finding

NAME = "caches"


def check(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    for kind in KINDS.values():
        added = sorted(p for p, n in ctx.overlay.nodes.items()
                       if n.kind != "dir" and kind.is_input(p))  # fmt: skip
        if not added:
            continue
        node = ctx.view.resolve(kind.cache).node
        listed = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
        if node is None:
            out.append(Finding(
                NAME, kind.cache,
                f"{kind.name} cache {kind.cache} is missing for the overlay's {listed}: "
                f"{kind.meets}",
                "see the stage step's caches.json for why it was not made (no tool, host "
                "provided, not reproducible); add the package of its tool or waive it",
                None, status="reported"))
        elif node.layer != ctx.overlay.layer:
            out.append(Finding(
                NAME, kind.cache,
                f"{kind.name} cache {kind.cache} is the {node.layer} layer's and does not "
                f"list the overlay's {listed} (precedence keeps it): {kind.meets}",
                "rebuild the base with the inputs, or leave them out of the overlay",
                None, status="reported"))
    return out
