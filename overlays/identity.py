"""The identity of an image: what it contains and how it is made, never where.

An overlay image is a function of its locked packages (name, EVR, arch, sha256), how they
were installed (paths redirected into the base's layout, executables dropped), the image
settings (compression and the fixed mkfs.erofs flags) and the versions of the tools that
stage and image it (fexstack, erofs-utils). :func:`identity` gathers exactly these into a
record whose canonical-JSON digest seeds the image's UUID (:func:`overlays.image.image_uuid`)
and is written as the manifest's ``content`` section.

Nothing location-dependent enters: no repository URL or id (the same RPM from a mirror or a
file:// repository is the same content), no path of the clone, cache or stack files, no time,
no stack name or seed reason. Two clones that lock the same packages therefore make
byte-identical images wherever they live.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fexstack
from overlays.image import BLOCK_SIZE, MKFS_ENV, erofs_utils_version, mkfs_flags
from overlays.lockfile import LockedPackage

FORMAT = 1


@dataclass(frozen=True)
class Identity:
    """The content record of an image and its digest (``sha256:<hex>``)."""

    record: Mapping[str, Any]  # format, packages, settings, tools (no digest)
    digest: str

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``content`` section: the record and its digest."""
        return {**json.loads(json.dumps(dict(self.record))), "digest": self.digest}


def settings(compression: str) -> dict[str, Any]:
    """How the image is made: compression, block size, the mkfs.erofs flags but the UUID."""
    # The seed only picks the -U value, which is left out here (it is derived from this).
    flags = [f for f in mkfs_flags(compression, "identity") if not f.startswith("-U")]
    return {
        "compression": compression,
        "block_size": BLOCK_SIZE,
        "mkfs_flags": flags,
        "mkfs_env": dict(sorted(MKFS_ENV.items())),
    }


def tools() -> dict[str, str]:
    """The versions of what stages and images the tree."""
    return {"fexstack": fexstack.__version__, "erofs-utils": erofs_utils_version()}


def identity(
    packages: Iterable[LockedPackage],
    compression: str,
    *,
    base: str | None = None,
    install: Mapping[str, Any] | None = None,
    tool_versions: Mapping[str, str] | None = None,
) -> Identity:
    """The identity of an image of ``packages`` made with ``compression``.

    ``base`` is the content digest of the base an image is derived from (the compat
    overlay, whose tree is made from the base's layout rather than from packages).
    ``install`` is the stage record's account of how the payload went in (paths redirected
    through the base's directory symlinks, tool executables dropped): the same packages
    staged over another base layout or with other kept executables make another tree.
    ``tool_versions`` defaults to :func:`tools` (the tools on this host).
    """
    record: dict[str, Any] = {
        "format": FORMAT,
        "packages": [
            {"name": p.name, "evr": p.evr, "arch": p.arch, "sha256": p.sha256}
            for p in sorted(packages, key=lambda p: (p.name, p.arch, p.evr, p.sha256))
        ],
        "settings": settings(compression),
        "tools": dict(sorted((tool_versions if tool_versions is not None else tools()).items())),
    }
    if base is not None:
        record["base"] = base
    if install is not None:
        record["install"] = {
            "redirected": [dict(r) for r in install.get("redirected", [])],
            "dropped": [dict(r) for r in install.get("dropped", [])],
        }
        if install.get("caches"):  # install-time caches: the tool and inputs made the bytes
            keys = ("kind", "cache", "status", "tool_sha256", "inputs_sha256", "files")
            record["install"]["caches"] = [
                {k: c[k] for k in keys if k in c} for c in install["caches"]
            ]
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Identity(record, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest())
