"""The overlay manifest ``build/overlays/<name>.manifest.json``.

It says what an image is and why: the stack and its files, the lock and its packages
(with the reasons each is there), the base it was checked against, every file with its
owning package, the image's bytes and how they were made, the invariants report, and the
versions of the tools. No wall-clock time and no host-specific absolute path, so equal
inputs give an equal manifest. Validated against ``overlays/schemas/manifest.schema.json``.

Content and provenance are apart: ``content`` is the image's identity record
(:mod:`overlays.identity`: packages by name, EVR, arch and sha256, how they were installed,
image settings, tool versions, and its digest, the seed of the image's UUID) and is the
only part that feeds the image; with ``packages``, ``files``, ``counts``, ``image``,
``base``, ``tools`` and ``install`` it is the same wherever the stack is built. ``stack``,
``lock`` and ``invariants`` are provenance: where the image came from (paths relative to
the project, digests of files that hold repository URLs). Stack files are listed by path
only, without digests: their edits that do not change the image (comments, descriptions)
rerun nothing, so a digest would go stale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema

import fexstack
from fexstack import command, jsonio
from fexstack.digest import sha256_bytes, sha256_file
from fexstack.errors import ImageError
from overlays import lockfile, validator
from overlays.identity import Identity
from overlays.image import MKFS, ImageInfo, image_uuid
from overlays.lockfile import Lock
from overlays.readback import FSCK, list_image

FORMAT = 1
SCHEMA = "manifest"


def _anchor(paths: Sequence[Path]) -> Path | None:
    """The folder recorded paths are relative to: the common folder of all of them."""
    if not paths:
        return None
    resolved = [p.resolve() for p in paths]
    if len(resolved) == 1:
        return resolved[0].parent
    return Path(os.path.commonpath(resolved))


def _rel(path: Path, anchor: Path | None) -> str:
    if anchor is None:
        return path.name
    return Path(os.path.relpath(path.resolve(), anchor)).as_posix()


def _digest(path: Path, what: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the {what}: {exc.strerror}") from exc


def _owner_key(path: str) -> str:
    path = "/" + path.strip("/")
    return path


def make_manifest(
    *,
    stack_name: str,
    stack_class: str,
    stack_files: Sequence[Path],
    lock: Lock | None,
    lock_path: Path | None,
    base_image_sha256: str | None,
    owners: Mapping[str, str],
    image: ImageInfo,
    invariants_report: Path | None,
    install: Mapping[str, Any] | None = None,
    content: Identity,
    base_tree_sha256: str | None = None,
) -> dict[str, Any]:
    """The manifest of ``image``; its file list is ``image.entries``.

    Those entries are the image's own contents as :func:`overlays.image.build_image` read
    them back (and found equal to the staged tree), so the manifest describes exactly the
    image, whatever happened to the tree since. For an :class:`ImageInfo` without entries
    the image is read back here. Paths of the stack files, lock and invariants report are
    recorded relative to the folder they have in common (typically the project root). Not
    validated here: :func:`write_manifest` does it. ``install`` (the stage record) gives
    the manifest's ``install``: paths redirected into the base and executables dropped.

    ``content`` is the identity the image was made from: the image's UUID must be the one
    derived from its digest (:class:`ImageError` otherwise). ``base_tree_sha256`` is the
    index digest of a base given as a directory (:mod:`overlays.baseindex`).
    """
    if image.uuid != image_uuid(content.digest):
        raise ImageError(
            f"{image.path}: its UUID {image.uuid} is not derived from the content record "
            f"{content.digest}",
            "build the image with uuid_seed set to the identity's digest",
        )
    recorded = [*stack_files, *(p for p in (lock_path, invariants_report) if p is not None)]
    anchor = _anchor(recorded)
    entries = image.entries or list_image(image.path)

    lock_doc: dict[str, Any] | None = None
    packages: list[dict[str, Any]] = []
    if lock is not None:
        lock_digest = (
            _digest(lock_path, "lock file")
            if lock_path is not None
            else sha256_bytes(lockfile.to_toml(lock))
        )
        lock_doc = {
            "path": _rel(lock_path, anchor) if lock_path is not None else None,
            "sha256": lock_digest,
            "stack": lock.stack,
            "release": lock.release,
            "arch": lock.arch,
            "inputs": lock.inputs,
            "base": lock.base,
        }
        for pkg in sorted(lock.packages, key=lambda p: (p.name, p.arch, p.nevra)):
            packages.append(
                {
                    "name": pkg.name,
                    "epoch": pkg.epoch,
                    "version": pkg.version,
                    "release": pkg.release,
                    "arch": pkg.arch,
                    "nevra": pkg.nevra,
                    "repo": pkg.repo,
                    "sha256": pkg.sha256,
                    "size": pkg.size,
                    "reasons": sorted({str(r) for r in pkg.reasons}),
                }
            )

    owner_of = {_owner_key(k): v for k, v in owners.items()}
    files: list[dict[str, Any]] = []
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "other": 0, "file_bytes": 0, "unowned": 0}
    for path, entry in entries.items():
        doc = entry.to_json()
        doc["package"] = owner_of.get(path)
        files.append(doc)
        if entry.kind == "file":
            counts["files"] += 1
            counts["file_bytes"] += entry.size
        elif entry.kind == "dir":
            counts["dirs"] += 1
        elif entry.kind == "symlink":
            counts["symlinks"] += 1
        else:
            counts["other"] += 1
        if doc["package"] is None and entry.kind != "dir":
            counts["unowned"] += 1

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "stack": {
            "name": stack_name,
            "class": stack_class,
            "files": sorted(
                ({"path": _rel(p, anchor)} for p in stack_files),
                key=lambda d: d["path"],
            ),
        },
        "lock": lock_doc,
        "content": content.to_json(),
        "base": {
            "image_sha256": base_image_sha256,
            **({"tree_sha256": base_tree_sha256} if base_tree_sha256 is not None else {}),
        },
        "packages": packages,
        "files": files,
        "counts": counts,
        "image": {
            "file": image.path.name,
            "sha256": image.sha256,
            "size": image.size,
            "block_size": image.block_size,
            "compression": image.compression,
            "uuid": image.uuid,
            "erofs_utils_version": image.erofs_utils_version,
            "mkfs_flags": list(image.mkfs_flags),
            "mkfs_env": dict(sorted(image.mkfs_env.items())),
        },
        "invariants": (
            {
                "path": _rel(invariants_report, anchor),
                "sha256": _digest(invariants_report, "invariants report"),
            }
            if invariants_report is not None
            else None
        ),
        "tools": {
            "fexstack": fexstack.__version__,
            MKFS: command.tool_version([MKFS, "--version"]),
            FSCK: command.tool_version([FSCK, "--version"]),
        },
    }
    if install is not None:
        manifest["install"] = {
            "redirected": list(install.get("redirected", [])),
            "dropped": list(install.get("dropped", [])),
        }
        if install.get("caches"):  # install-time caches generated (overlays/caches)
            manifest["install"]["caches"] = list(install["caches"])
    return manifest


def sections(kind: str) -> tuple[str, ...]:
    """The top-level keys that are ``content`` (the same wherever the image is built) or
    ``provenance`` (where it came from), as the schema lists them (x-content, x-provenance)."""
    if kind not in ("content", "provenance"):
        raise ValueError(f"no manifest section kind {kind!r}")
    return tuple(jsonio.schema(SCHEMA)[f"x-{kind}"])


def _validate(manifest: Any, where: str) -> None:
    try:
        jsonio.validate(manifest, SCHEMA)
    except jsonschema.ValidationError as exc:
        location = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ImageError(
            f"{where}: does not match the manifest schema at {location}: {exc.message}",
            "rebuild the overlay with this version of fexstack (doit overlay:<name>)",
        ) from exc


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Validate ``manifest`` (its whole file list too) and write it atomically as sorted JSON."""
    _validate(manifest, str(path))
    jsonio.write(path, dict(manifest))


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and validate a manifest; :class:`ImageError` if it is missing or malformed."""
    try:
        doc = jsonio.read(path)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no manifest", "build the overlay: doit overlay:<name>") from exc
    except ValueError as exc:
        raise ImageError(f"{path}: not valid JSON: {exc}", "rebuild: doit overlay:<name>") from exc
    _validate(doc, str(path))
    if not isinstance(doc, dict):  # the schema already says so; this is for the type checker
        raise ImageError(f"{path}: not a JSON object")
    return doc


def validate_against_manifest(image_path: Path, manifest_path: Path) -> validator.ValidatedImage:
    """:func:`overlays.validator.validate_image` with the sha256, size and block size
    that ``manifest_path`` records."""
    doc = read_manifest(manifest_path)
    recorded = doc["image"]
    checked = validator.validate_image(image_path, expected_sha256=recorded["sha256"])
    if checked.size != recorded["size"] or checked.block_size != recorded["block_size"]:
        raise ImageError(
            f"{image_path}: size {checked.size} / block size {checked.block_size} differ from "
            f"{manifest_path} ({recorded['size']} / {recorded['block_size']})",
            "rebuild with doit overlay:<name>",
        )
    return checked
