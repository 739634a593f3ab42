"""``doit publish:<stack> --to REF``: push a built overlay to an OCI registry.

The artifact is one OCI image manifest whose layers are the overlay's files, each with
a media type of fexstack's own (the SBOM with SPDX's):

=========================  =================================================
``<name>.erofs``           ``application/vnd.fexstack.overlay.erofs``
``<name>.manifest.json``   ``application/vnd.fexstack.overlay.manifest+json``
``<name>.lock.toml``       ``application/vnd.fexstack.overlay.lock+toml``
``<name>.invariants.json`` ``application/vnd.fexstack.overlay.invariants+json``
``<name>.spdx.json``       ``application/spdx+json`` (SPDX 2.3, see overlays/sbom.py)
=========================  =================================================

Its config (``application/vnd.fexstack.overlay.config.v1+json``) and its annotations
bind it to what it was checked against: the base image's sha256, the gpu overlays'
sha256 (in order), the lock's and the image's. Equal overlays give equal bytes, so
publishing the same overlay again gives the same digest.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fexstack import digest, jsonio, paths
from fexstack.errors import ConfigError, ImageError
from overlays import lockfile, oci, sbom
from overlays.project import Project
from overlays.stack import Stack

if TYPE_CHECKING:
    from overlays.manifest import Manifest

FORMAT = 1
ARTIFACT_TYPE = "application/vnd.fexstack.overlay.config.v1+json"
IMAGE = "application/vnd.fexstack.overlay.erofs"
MANIFEST = "application/vnd.fexstack.overlay.manifest+json"
LOCK = "application/vnd.fexstack.overlay.lock+toml"
INVARIANTS = "application/vnd.fexstack.overlay.invariants+json"
SBOM = sbom.MEDIA_TYPE
# Layer media type -> file name suffix (the title is <stack><suffix>).
SUFFIXES = {
    IMAGE: ".erofs",
    MANIFEST: ".manifest.json",
    LOCK: ".lock.toml",
    INVARIANTS: ".invariants.json",
    SBOM: ".spdx.json",
}

CONFIG_SCHEMA = "overlay-config"  # overlays/schemas/overlay-config.schema.json

PREFIX = "dev.fexstack."
ANN_STACK = PREFIX + "stack"
ANN_BASE = PREFIX + "base.image.sha256"
ANN_GPU = PREFIX + "base.overlays.sha256"
ANN_LOCK = PREFIX + "lock.sha256"
ANN_IMAGE = PREFIX + "image.sha256"


@dataclass(frozen=True)
class Binding:
    """What an overlay was checked against, as sha256 hex digests."""

    base: str
    gpu: tuple[str, ...]
    lock: str
    image: str

    def annotations(self, stack: str) -> dict[str, str]:
        return {
            ANN_STACK: stack,
            ANN_BASE: f"sha256:{self.base}",
            ANN_GPU: ",".join(f"sha256:{g}" for g in self.gpu),
            ANN_LOCK: f"sha256:{self.lock}",
            ANN_IMAGE: f"sha256:{self.image}",
            "org.opencontainers.image.title": f"fexstack overlay {stack}",
        }


def local_base(stack: Stack) -> tuple[str | None, tuple[str, ...]]:
    """The sha256 of this machine's base image (None for a directory) and gpu overlays."""
    from overlays.pipeline import base_digest

    base = stack.base.image
    if not base.exists():
        raise ConfigError(
            f"base {stack.base.id}: {base} does not exist",
            f"install or build the base image named in {stack.base.path}",
        )
    gpu = []
    for path in stack.base.overlays:
        if not path.is_file():
            raise ConfigError(
                f"base {stack.base.id}: gpu overlay {path} does not exist",
                f"install it or fix [base] overlays in {stack.base.path}",
            )
        gpu.append(base_digest(path) or "")
    return base_digest(base), tuple(gpu)


def licenses(lock: lockfile.Lock, name: str) -> dict[str, str | None]:
    """Each locked package's License tag, from its RPM header in the fetch cache."""
    import rpm

    from overlays.fetch import rpm_path
    from overlays.payload import read_header

    found: dict[str, str | None] = {}
    for pkg in lock.packages:
        path = rpm_path(paths.cache_dir(), pkg.sha256)
        if not path.is_file():
            raise ImageError(
                f"publish:{name}: {pkg.nevra} is not in the fetch cache ({path})",
                f"fetch it again: doit fetch:{name}",
            )
        value = read_header(path, pkg.name)[rpm.RPMTAG_LICENSE]
        found[pkg.sha256] = value.decode() if isinstance(value, bytes) else value
    return found


def binding(project: Project, stack: Stack) -> tuple[Binding, Manifest]:
    """Check that the built overlay is the one of the current lock and base; its binding."""
    from overlays.manifest import read_manifest

    name = stack.name
    rebuild = f"bring it up to date first: doit overlay:{name}"
    manifest = read_manifest(project.manifest(name))
    image_sha = digest.sha256_file(project.image(name))
    if manifest.image.sha256 != image_sha:
        raise ImageError(
            f"{project.image(name)} (sha256 {image_sha}) is not the image its manifest "
            f"records ({manifest.image.sha256})",
            rebuild,
        )
    lock_sha = digest.sha256_file(project.lock_path(name))
    if (manifest.lock.sha256 if manifest.lock is not None else None) != lock_sha:
        raise ImageError(
            f"{project.manifest(name)} was built from another lock than "
            f"{project.lock_path(name)}",
            rebuild,
        )
    base_sha, gpu = local_base(stack)
    if base_sha is None:
        raise ConfigError(
            f"base {stack.base.id}: {stack.base.image} is a directory; a published overlay "
            "must be bound to a base image file's sha256",
            f"point [base] image in {stack.base.path} at the EROFS image",
        )
    if manifest.base.image_sha256 not in (None, base_sha):
        raise ImageError(
            f"{project.manifest(name)} was checked against another base image than "
            f"{stack.base.image} (sha256 {base_sha})",
            rebuild,
        )
    return Binding(base_sha, gpu, lock_sha, image_sha), manifest


def publish(project: Project, name: str, to: str = "") -> str:
    """Push ``name``'s built overlay to ``to``; print and return the pushed digest."""
    from overlays.pipeline import stack_of

    if not to:
        raise ConfigError(
            f"publish:{name} needs a destination",
            f"run: doit publish:{name} --to HOST[:PORT]/REPOSITORY:TAG",
        )
    ref = oci.parse_reference(to)
    stack = stack_of(project, name)
    bound, _ = binding(project, stack)
    lock = lockfile.read(project.lock_path(name))
    document = sbom.make_sbom(
        stack_name=name,
        lock=lock,
        licenses=licenses(lock, name),
        image_name=project.image(name).name,
        image_sha256=bound.image,
    )
    config = {
        "format": FORMAT,
        "stack": name,
        "base": {
            "id": stack.base.id,
            "image_sha256": bound.base,
            "overlays_sha256": list(bound.gpu),
        },
        "lock_sha256": bound.lock,
        "image_sha256": bound.image,
    }
    jsonio.validate(config, CONFIG_SCHEMA)
    sources = {
        IMAGE: project.image(name),
        MANIFEST: project.manifest(name),
        LOCK: project.lock_path(name),
        INVARIANTS: project.invariants(name),
    }
    with tempfile.TemporaryDirectory(prefix="fexstack-publish-") as tmp:
        folder = Path(tmp)
        layers = []
        for media_type, source in sources.items():
            dest = folder / f"{name}{SUFFIXES[media_type]}"
            try:
                shutil.copyfile(source, dest)
            except OSError as exc:
                raise ImageError(
                    f"publish:{name}: cannot read {source}: {exc.strerror}",
                    f"build the overlay: doit overlay:{name}",
                ) from exc
            layers.append(oci.Layer(dest, media_type))
        sbom_path = folder / f"{name}{SUFFIXES[SBOM]}"
        sbom_path.write_bytes(sbom.dumps(document))
        layers.append(oci.Layer(sbom_path, SBOM))
        config_path = folder / "config.json"
        config_path.write_text(json.dumps(config, sort_keys=True, indent=2) + "\n")
        print(f"publish:{name}: pushing {len(layers)} layers to {ref.text}", file=sys.stderr)
        pushed = oci.push(
            ref,
            layers,
            config=config_path,
            config_media_type=ARTIFACT_TYPE,
            annotations=bound.annotations(name),
        )
    print(f"publish:{name}: {ref.text} is {ref.with_digest(pushed)}")
    print(f'publish:{name}: to accept only this one, add to stacks/{name}.toml: '
          f'[pull] digest = "{pushed}"')
    return pushed
