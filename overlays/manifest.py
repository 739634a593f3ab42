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

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fexstack
from fexstack import command, jsonio
from fexstack.digest import sha256_bytes, sha256_file
from fexstack.errors import ImageError
from overlays import lockfile, validator
from overlays.identity import Identity
from overlays.image import MKFS, ImageInfo, image_uuid
from overlays.lockfile import Lock
from overlays.readback import FSCK, list_image
from overlays.treescan import Entry

FORMAT = 1
SCHEMA = "manifest"


@dataclass(frozen=True)
class StackSection:
    """``stack``: the stack's name, class and files (relative to the project, no digests)."""

    name: str
    klass: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class LockSection:
    """``lock``: the lock file the image was built from (provenance)."""

    path: str | None
    sha256: str
    stack: str
    release: str
    arch: str
    inputs: str
    base: str


@dataclass(frozen=True)
class BaseSection:
    """``base``: the base image's sha256, or the index digest of a base directory."""

    image_sha256: str | None
    tree_sha256: str | None = None


@dataclass(frozen=True)
class Package:
    """One of ``packages``: a locked package and why it is there."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    nevra: str
    repo: str
    sha256: str
    size: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class FileRow:
    """One of ``files``: a path of the image and the package that brought it (None:
    generated or made by no package)."""

    entry: Entry
    package: str | None


@dataclass(frozen=True)
class Counts:
    files: int
    dirs: int
    symlinks: int
    other: int
    file_bytes: int
    unowned: int


@dataclass(frozen=True)
class ImageSection:
    """``image``: the image's bytes and how mkfs.erofs made them."""

    file: str
    sha256: str
    size: int
    block_size: int
    compression: str
    uuid: str
    erofs_utils_version: str
    mkfs_flags: tuple[str, ...]
    mkfs_env: Mapping[str, str]


@dataclass(frozen=True)
class DigestedFile:
    path: str
    sha256: str


@dataclass(frozen=True)
class InstallSection:
    """``install``: the stage record's redirected paths and dropped executables, and the
    install-time caches (rows as their schemas describe them; ``caches`` empty: absent)."""

    redirected: tuple[Mapping[str, str], ...]
    dropped: tuple[Mapping[str, str], ...]
    caches: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Manifest:
    """The manifest of one image; :func:`write_manifest` and :func:`read_manifest` are its
    one writer and reader, :meth:`to_json` its document."""

    stack: StackSection
    lock: LockSection | None
    content: Identity
    base: BaseSection
    packages: tuple[Package, ...]
    files: tuple[FileRow, ...]
    counts: Counts
    image: ImageSection
    invariants: DigestedFile | None
    tools: Mapping[str, str]
    install: InstallSection | None = None

    def to_json(self) -> dict[str, Any]:
        base: dict[str, Any] = {"image_sha256": self.base.image_sha256}
        if self.base.tree_sha256 is not None:
            base["tree_sha256"] = self.base.tree_sha256
        doc: dict[str, Any] = {
            "format": FORMAT,
            "stack": {
                "name": self.stack.name,
                "class": self.stack.klass,
                "files": [{"path": path} for path in self.stack.files],
            },
            "lock": dataclasses.asdict(self.lock) if self.lock is not None else None,
            "content": self.content.to_json(),
            "base": base,
            "packages": [
                {**dataclasses.asdict(p), "reasons": list(p.reasons)} for p in self.packages
            ],
            "files": [{**row.entry.to_json(), "package": row.package} for row in self.files],
            "counts": dataclasses.asdict(self.counts),
            "image": {
                **dataclasses.asdict(self.image),
                "mkfs_flags": list(self.image.mkfs_flags),
                "mkfs_env": dict(self.image.mkfs_env),
            },
            "invariants": (
                dataclasses.asdict(self.invariants) if self.invariants is not None else None
            ),
            "tools": dict(self.tools),
        }
        if self.install is not None:
            doc["install"] = {
                "redirected": [dict(r) for r in self.install.redirected],
                "dropped": [dict(r) for r in self.install.dropped],
            }
            if self.install.caches:
                doc["install"]["caches"] = [dict(c) for c in self.install.caches]
        return doc


def _parse(doc: dict[str, Any]) -> Manifest:
    """The record of a document that matches the schema (:func:`read_manifest` only)."""
    content = dict(doc["content"])
    digest = content.pop("digest")
    install = doc.get("install")
    return Manifest(
        stack=StackSection(
            doc["stack"]["name"],
            doc["stack"]["class"],
            tuple(f["path"] for f in doc["stack"]["files"]),
        ),
        lock=LockSection(**doc["lock"]) if doc["lock"] is not None else None,
        content=Identity(content, digest),
        base=BaseSection(doc["base"]["image_sha256"], doc["base"].get("tree_sha256")),
        packages=tuple(
            Package(**{**p, "reasons": tuple(p["reasons"])}) for p in doc["packages"]
        ),
        files=tuple(
            FileRow(
                Entry(
                    path=f["path"],
                    kind=f["type"],
                    mode=int(f["mode"], 8),
                    size=f["size"],
                    sha256=f.get("sha256"),
                    target=f.get("target"),
                ),
                f["package"],
            )
            for f in doc["files"]
        ),
        counts=Counts(**doc["counts"]),
        image=ImageSection(
            **{**doc["image"], "mkfs_flags": tuple(doc["image"]["mkfs_flags"])}
        ),
        invariants=DigestedFile(**doc["invariants"]) if doc["invariants"] is not None else None,
        tools=doc["tools"],
        install=(
            InstallSection(
                redirected=tuple(install["redirected"]),
                dropped=tuple(install["dropped"]),
                caches=tuple(install.get("caches", ())),
            )
            if install is not None
            else None
        ),
    )


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
) -> Manifest:
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

    lock_section: LockSection | None = None
    packages: list[Package] = []
    if lock is not None:
        lock_digest = (
            _digest(lock_path, "lock file")
            if lock_path is not None
            else sha256_bytes(lockfile.to_toml(lock))
        )
        lock_section = LockSection(
            path=_rel(lock_path, anchor) if lock_path is not None else None,
            sha256=lock_digest,
            stack=lock.stack,
            release=lock.release,
            arch=lock.arch,
            inputs=lock.inputs,
            base=lock.base,
        )
        for pkg in sorted(lock.packages, key=lambda p: (p.name, p.arch, p.nevra)):
            packages.append(
                Package(
                    name=pkg.name,
                    epoch=pkg.epoch,
                    version=pkg.version,
                    release=pkg.release,
                    arch=pkg.arch,
                    nevra=pkg.nevra,
                    repo=pkg.repo,
                    sha256=pkg.sha256,
                    size=pkg.size,
                    reasons=tuple(sorted({str(r) for r in pkg.reasons})),
                )
            )

    owner_of = {_owner_key(k): v for k, v in owners.items()}
    files: list[FileRow] = []
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "other": 0, "file_bytes": 0, "unowned": 0}
    for path, entry in entries.items():
        row = FileRow(entry, owner_of.get(path))
        files.append(row)
        if entry.kind == "file":
            counts["files"] += 1
            counts["file_bytes"] += entry.size
        elif entry.kind == "dir":
            counts["dirs"] += 1
        elif entry.kind == "symlink":
            counts["symlinks"] += 1
        else:
            counts["other"] += 1
        if row.package is None and entry.kind != "dir":
            counts["unowned"] += 1

    install_section: InstallSection | None = None
    if install is not None:
        install_section = InstallSection(
            redirected=tuple(install.get("redirected", [])),
            dropped=tuple(install.get("dropped", [])),
            # install-time caches generated (overlays/caches); none: the key is left out
            caches=tuple(install.get("caches") or ()),
        )
    return Manifest(
        stack=StackSection(
            name=stack_name,
            klass=stack_class,
            files=tuple(sorted(_rel(p, anchor) for p in stack_files)),
        ),
        lock=lock_section,
        content=content,
        base=BaseSection(base_image_sha256, base_tree_sha256),
        packages=tuple(packages),
        files=tuple(files),
        counts=Counts(**counts),
        image=ImageSection(
            file=image.path.name,
            sha256=image.sha256,
            size=image.size,
            block_size=image.block_size,
            compression=image.compression,
            uuid=image.uuid,
            erofs_utils_version=image.erofs_utils_version,
            mkfs_flags=tuple(image.mkfs_flags),
            mkfs_env=dict(sorted(image.mkfs_env.items())),
        ),
        invariants=(
            DigestedFile(
                _rel(invariants_report, anchor),
                _digest(invariants_report, "invariants report"),
            )
            if invariants_report is not None
            else None
        ),
        tools={
            "fexstack": fexstack.__version__,
            MKFS: command.tool_version([MKFS, "--version"]),
            FSCK: command.tool_version([FSCK, "--version"]),
        },
        install=install_section,
    )


def sections(kind: str) -> tuple[str, ...]:
    """The top-level keys that are ``content`` (the same wherever the image is built) or
    ``provenance`` (where it came from), as the schema lists them (x-content, x-provenance)."""
    if kind not in ("content", "provenance"):
        raise ValueError(f"no manifest section kind {kind!r}")
    return tuple(jsonio.schema(SCHEMA)[f"x-{kind}"])


REBUILD = "rebuild the overlay with this version of fexstack (doit overlay:<name>)"


def write_manifest(path: Path, manifest: Manifest) -> None:
    """The one writer: validate ``manifest``'s document (its whole file list too) and write
    it atomically as sorted JSON; :class:`ImageError` if it does not match the schema."""
    doc = manifest.to_json()
    problem = jsonio.schema_error(doc, SCHEMA)
    if problem is not None:
        raise ImageError(f"{path}: {jsonio.mismatch(problem, SCHEMA)}", REBUILD) from problem
    jsonio.write(path, doc)


def read_manifest(path: Path) -> Manifest:
    """The one reader: :class:`ImageError` naming the file if it is missing or malformed."""
    return _parse(
        jsonio.read_record(path, SCHEMA, error=ImageError, what="manifest", hint=REBUILD)
    )


def validate_against_manifest(image_path: Path, manifest_path: Path) -> validator.ValidatedImage:
    """:func:`overlays.validator.validate_image` with the sha256, size and block size
    that ``manifest_path`` records."""
    recorded = read_manifest(manifest_path).image
    checked = validator.validate_image(image_path, expected_sha256=recorded.sha256)
    if checked.size != recorded.size or checked.block_size != recorded.block_size:
        raise ImageError(
            f"{image_path}: size {checked.size} / block size {checked.block_size} differ from "
            f"{manifest_path} ({recorded.size} / {recorded.block_size})",
            "rebuild with doit overlay:<name>",
        )
    return checked
