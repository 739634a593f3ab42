"""``doit pull:<stack> --from REF``: fetch a published overlay and adopt it for runs.

A pull verifies before it keeps anything: the manifest's digest (against the digest in
REF and the stack's ``[pull] digest`` pin), that it is a fexstack overlay of this stack,
that it was checked against this machine's base image and gpu overlays (sha256), that it
was built from this clone's ``stacks/<name>.lock.toml``, and every layer's sha256 and
size as it streams in (into a temp folder outside the cache). Only then does the
artifact go into the content-addressed cache, ``<cache>/oci/sha256/<manifest digest>/``,
and ``build/pulled/<name>.json`` record that this clone uses it. A refusal leaves the
cache and the clone as they were.

The rule for runs (:func:`adopted`): ``doit run:<app>`` uses the pulled image instead
of building the overlay while the record's lock sha256 equals the current lock file's
and its base and gpu overlays' sha256 equal this machine's. Then the overlay's build
steps are not run at all (the run depends on the base's compat overlay only). Change
the lock or the base and the next run builds locally again; ``doit clean pull:<name>``
drops the record (the cache keeps the artifact).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import atomic, digest, jsonio, paths
from fexstack.errors import ConfigError, FexstackError, RegistryError
from overlays import lockfile, oci, publish
from overlays.project import Project
from overlays.stack import Stack

RECORD_FORMAT = 1
RECORD_SCHEMA = "pulled"  # overlays/schemas/pulled.schema.json
CONFIG_FILE = "config.json"


def record_path(project: Project, name: str) -> Path:
    return project.build_dir / "pulled" / f"{name}.json"


def artifact_dir(manifest_digest: str) -> Path:
    """The cache folder of one pulled artifact, named by its manifest's digest."""
    return paths.cache_dir() / "oci" / "sha256" / manifest_digest.removeprefix("sha256:")


@dataclass(frozen=True)
class Pulled:
    """A pulled overlay this clone uses: its image and overlay manifest in the cache."""

    digest: str
    ref: str
    image: Path
    manifest: Path


def _hex(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value.removeprefix("sha256:")
    return None


def _lock_difference(ours: Path, theirs: Path) -> str:
    """What differs between two locks, in a few words (package versions first)."""
    try:
        mine, other = lockfile.read(ours), lockfile.read(theirs)
    except FexstackError:
        return "the lock files differ"
    a = {p.name: p.evr for p in mine.packages}
    b = {p.name: p.evr for p in other.packages}
    parts = []
    for pkg in sorted(a.keys() | b.keys()):
        if a.get(pkg) != b.get(pkg):
            parts.append(f"{pkg} {a.get(pkg, '(absent)')} here, {b.get(pkg, '(absent)')} there")
    if not parts:
        return "same packages, other lock inputs (seeds, repositories or base package list)"
    more = f" and {len(parts) - 5} more" if len(parts) > 5 else ""
    return "; ".join(parts[:5]) + more


def _check_binding(
    stack: Stack, annotations: dict[str, Any], where: str, rebuild: str
) -> None:
    base_sha, gpu = publish.local_base(stack)
    theirs = _hex(annotations.get(publish.ANN_BASE))
    if theirs is None:
        raise RegistryError(f"{where} does not record the base it was checked against", rebuild)
    if theirs != base_sha:
        raise RegistryError(
            f"{where} was checked against base image sha256:{theirs}; this machine's base "
            f"{stack.base.id} ({stack.base.image}) is sha256:{base_sha}",
            rebuild,
        )
    their_gpu = [g for g in str(annotations.get(publish.ANN_GPU, "")).split(",") if g]
    our_gpu = [f"sha256:{g}" for g in gpu]
    if their_gpu != our_gpu:
        raise RegistryError(
            f"{where} was checked against gpu overlays {their_gpu or 'none'}; this machine's "
            f"({', '.join(str(p) for p in stack.base.overlays) or 'none'}) are "
            f"{our_gpu or 'none'}",
            rebuild,
        )


def pull(project: Project, name: str, source: str = "") -> Pulled:
    """Fetch and verify ``source`` for stack ``name``, cache it and adopt it."""
    from overlays.pipeline import stack_of

    if not source:
        raise ConfigError(
            f"pull:{name} needs a reference",
            f"run: doit pull:{name} --from HOST[:PORT]/REPOSITORY:TAG (or @sha256:...)",
        )
    ref = oci.parse_reference(source)
    stack = stack_of(project, name)
    rebuild = f"build it locally instead: doit overlay:{name} (then doit run:{name})"
    body, manifest_digest = oci.fetch_manifest(ref)
    where = f"{ref.text} ({manifest_digest})"
    if ref.digest is not None and manifest_digest != ref.digest:
        raise RegistryError(
            f"{ref.text}: the registry sent a manifest whose digest is {manifest_digest}",
            "the registry or something between is serving other bytes; do not use it",
        )
    pin = stack.pull_digest
    if pin is not None and manifest_digest != pin:
        raise RegistryError(
            f"{where}: stack {name} accepts only {pin} ([pull] digest in {stack.path})",
            f"pull {ref.registry}/{ref.repository}@{pin}, or change the pin if the new "
            "artifact is trusted",
        )
    manifest = oci.parse_manifest(body, where)
    config = manifest.get("config") or {}
    annotations = manifest.get("annotations") or {}
    if config.get("mediaType") != publish.ARTIFACT_TYPE:
        raise RegistryError(
            f"{where} is not a fexstack overlay (config {config.get('mediaType')!r})",
            "pull what doit publish:<stack> pushed",
        )
    if annotations.get(publish.ANN_STACK) != name:
        raise RegistryError(
            f"{where} is the overlay of stack {annotations.get(publish.ANN_STACK)!r}, not {name!r}",
            f"pull it with doit pull:{annotations.get(publish.ANN_STACK)}",
        )
    _check_binding(stack, annotations, where, rebuild)
    lock_path = project.lock_path(name)
    if not lock_path.is_file():
        raise ConfigError(
            f"{lock_path} does not exist; a pulled overlay is used only for the lock it was "
            "built from",
            f"commit the publisher's lock into the clone, or {rebuild}",
        )
    our_lock = digest.sha256_file(lock_path)
    their_lock = _hex(annotations.get(publish.ANN_LOCK))
    layers = {layer.get("mediaType"): layer for layer in manifest.get("layers") or []}
    missing = [m for m in publish.SUFFIXES if m not in layers]
    if missing:
        raise RegistryError(f"{where} lacks the layers {', '.join(missing)}", rebuild)

    with tempfile.TemporaryDirectory(prefix="fexstack-pull-") as tmp:
        folder = Path(tmp)
        _fetch_config(ref, config, folder / CONFIG_FILE, annotations, where, rebuild)
        # The lock first: another lock is refused before the image is downloaded.
        lock_file = folder / f"{name}{publish.SUFFIXES[publish.LOCK]}"
        _fetch_layer(ref, layers[publish.LOCK], lock_file, where, rebuild)
        if their_lock != our_lock or digest.sha256_file(lock_file) != our_lock:
            raise RegistryError(
                f"{where} was built from another lock than {lock_path}: "
                f"{_lock_difference(lock_path, lock_file)}",
                f"to use it, take the publisher's lock (commit it); or {rebuild}",
            )
        print(f"pull:{name}: fetching {len(layers)} layers of {where}", file=sys.stderr)
        for media_type, suffix in publish.SUFFIXES.items():
            if media_type != publish.LOCK:
                _fetch_layer(ref, layers[media_type], folder / f"{name}{suffix}", where, rebuild)
        _check_overlay_manifest(folder, name, their_lock, annotations, where, rebuild)
        (folder / "oci-manifest.json").write_bytes(body)
        dest = artifact_dir(manifest_digest)
        if not dest.is_dir():
            with atomic.temp_dir(dest) as staged:
                for item in sorted(folder.iterdir()):
                    shutil.copyfile(item, staged / item.name)
    record = {
        "format": RECORD_FORMAT,
        "stack": name,
        "ref": ref.text,
        "digest": manifest_digest,
        "lock_sha256": our_lock,
        "base_image_sha256": annotations.get(publish.ANN_BASE),
        "gpu_overlays_sha256": annotations.get(publish.ANN_GPU, ""),
    }
    jsonio.write(record_path(project, name), record, RECORD_SCHEMA)
    pulled = _verified(project, name, record)
    print(f"pull:{name}: {ref.text} is {manifest_digest}; doit run:{name} uses {pulled.image}")
    return pulled


def _fetch_layer(
    ref: oci.Reference, layer: dict[str, Any], dest: Path, where: str, rebuild: str
) -> None:
    """Fetch one layer into ``dest``; refused unless its sha256 and size are the named ones."""
    want, size = str(layer.get("digest")), layer.get("size")
    got, got_size = oci.fetch_blob(ref, want, dest, max_size=size)
    if got != want or got_size != size:
        raise RegistryError(
            f"{where}: layer {layer.get('mediaType')} should be {want} ({size} bytes); the "
            f"registry sent {got} ({got_size} bytes)",
            "the blob was changed in the registry or in transit; nothing was kept: "
            "ask the publisher to publish again, or " + rebuild,
        )


def _fetch_config(
    ref: oci.Reference, descriptor: dict[str, Any], dest: Path, annotations: dict[str, Any],
    where: str, rebuild: str,
) -> None:
    """Fetch the config blob, verify its digest and that it says what the annotations say."""
    want, size = str(descriptor.get("digest")), descriptor.get("size")
    got, got_size = oci.fetch_blob(ref, want, dest, max_size=size)
    if got != want or got_size != size:
        raise RegistryError(
            f"{where}: its config should be {want} ({size} bytes); the registry sent {got} "
            f"({got_size} bytes)",
            "the blob was changed in the registry or in transit; nothing was kept: " + rebuild,
        )
    try:
        config = jsonio.read(dest)
    except ValueError as exc:
        raise RegistryError(f"{where}: its config is not a fexstack overlay config: {exc}",
                            rebuild) from exc
    problem = jsonio.schema_error(config, publish.CONFIG_SCHEMA)
    if problem is not None:
        raise RegistryError(f"{where}: its config is not a fexstack overlay config: {problem}",
                            rebuild) from problem
    said = {
        "stack": (config["stack"], annotations.get(publish.ANN_STACK)),
        "base": ("sha256:" + config["base"]["image_sha256"], annotations.get(publish.ANN_BASE)),
        "gpu overlays": (
            ",".join("sha256:" + g for g in config["base"]["overlays_sha256"]),
            annotations.get(publish.ANN_GPU, ""),
        ),
        "lock": ("sha256:" + config["lock_sha256"], annotations.get(publish.ANN_LOCK)),
        "image": ("sha256:" + config["image_sha256"], annotations.get(publish.ANN_IMAGE)),
    }
    for what, (in_config, annotated) in said.items():
        if in_config != annotated:
            raise RegistryError(
                f"{where}: its config records {what} {in_config}, its annotations {annotated}",
                "the artifact is inconsistent; ask the publisher to publish again, or " + rebuild,
            )


def _check_overlay_manifest(
    folder: Path, name: str, lock_sha: str | None, annotations: dict[str, Any], where: str,
    rebuild: str,
) -> None:
    from overlays.manifest import read_manifest

    doc = read_manifest(folder / f"{name}{publish.SUFFIXES[publish.MANIFEST]}")
    image = folder / f"{name}{publish.SUFFIXES[publish.IMAGE]}"
    image_sha = digest.sha256_file(image)
    checks = [
        ("image", doc.image.sha256, image_sha),
        ("annotated image", _hex(annotations.get(publish.ANN_IMAGE)), image_sha),
        ("lock", doc.lock.sha256 if doc.lock is not None else None, lock_sha),
        ("base", doc.base.image_sha256, _hex(annotations.get(publish.ANN_BASE))),
    ]
    for what, recorded_value, actual in checks:
        if recorded_value is not None and recorded_value != actual:
            raise RegistryError(
                f"{where}: its overlay manifest records {what} sha256 {recorded_value}, "
                f"the artifact has {actual}",
                "the artifact is inconsistent; ask the publisher to publish again, or " + rebuild,
            )


def _verified(project: Project, name: str, record: dict[str, Any]) -> Pulled:
    """The cached artifact of ``record``, its small files checked against its manifest
    (the image is checked against the overlay manifest right before each launch)."""
    folder = artifact_dir(str(record.get("digest")))
    body_path = folder / "oci-manifest.json"
    try:
        body = body_path.read_bytes()
    except OSError as exc:
        raise RegistryError(
            f"the pulled overlay {record.get('digest')} of {name} is gone from {folder}",
            f"pull it again: doit pull:{name} --from {record.get('ref')}",
        ) from exc
    if "sha256:" + digest.sha256_bytes(body) != record.get("digest"):
        raise RegistryError(
            f"{body_path} does not match its digest {record.get('digest')}",
            f"pull it again: doit pull:{name} --from {record.get('ref')}",
        )
    layers = {
        layer.get("mediaType"): layer
        for layer in oci.parse_manifest(body, str(body_path)).get("layers") or []
    }
    for media_type in (publish.MANIFEST, publish.LOCK):
        path = folder / f"{name}{publish.SUFFIXES[media_type]}"
        if not path.is_file() or "sha256:" + digest.sha256_file(path) != layers.get(
            media_type, {}
        ).get("digest"):
            raise RegistryError(
                f"{path} does not match the artifact {record.get('digest')}",
                f"remove {folder} and pull again: doit pull:{name} --from {record.get('ref')}",
            )
    return Pulled(
        digest=str(record.get("digest")),
        ref=str(record.get("ref")),
        image=folder / f"{name}{publish.SUFFIXES[publish.IMAGE]}",
        manifest=folder / f"{name}{publish.SUFFIXES[publish.MANIFEST]}",
    )


def adoptable(project: Project, stack: Stack) -> dict[str, Any] | None:
    """The pull record of ``stack`` when it still applies (see the module's rule)."""
    try:
        record = jsonio.read(record_path(project, stack.name))
        if jsonio.schema_error(record, RECORD_SCHEMA) is not None or not isinstance(record, dict):
            return None
        if record.get("lock_sha256") != digest.sha256_file(project.lock_path(stack.name)):
            return None
        base_sha, gpu = publish.local_base(stack)
    except (OSError, ValueError, FexstackError):
        return None
    if record.get("base_image_sha256") != f"sha256:{base_sha}":
        return None
    if record.get("gpu_overlays_sha256") != ",".join(f"sha256:{g}" for g in gpu):
        return None
    if not (artifact_dir(str(record.get("digest"))) / "oci-manifest.json").is_file():
        return None
    return record


def adopted(project: Project, name: str) -> Pulled | None:
    """The pulled overlay ``doit run:<name>`` uses, verified; None: build locally."""
    from overlays.pipeline import stack_of

    try:
        stack = stack_of(project, name)
    except FexstackError:
        return None
    record = adoptable(project, stack)
    if record is None:
        return None
    return _verified(project, name, record)


def forget(project: Project, name: str) -> None:
    """``doit clean pull:<name>``: this clone stops using the pulled overlay."""
    atomic.remove(record_path(project, name))
