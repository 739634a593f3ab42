"""The pipeline's steps for one stack of a project: lock, fetch, stage, compat, check and
image. Each loads the stack once and calls the step's module; the task layer (tasks/)
declares them as doit tasks and turns their errors into failed tasks.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fexstack import atomic, jsonio
from fexstack.errors import StageError
from overlays import lockfile
from overlays.owners import Owners
from overlays.project import Project
from overlays.stack import Stack, load_stack
from overlays.stagerecord import StageRecord

if TYPE_CHECKING:
    from overlays.extract import ExtractedMeta


def starting(*outputs: Path, replaced: tuple[Path, ...] = ()) -> None:
    """Remove a step's previous outputs before it does anything.

    doit takes a task as up to date when its targets exist and its inputs match the last
    successful run. A step that fails or is killed half way must not leave targets from
    an earlier run beside half-written ones: with them gone, the next run repeats it.
    The temp files a killed run of the step left beside them (and beside ``replaced``,
    outputs that are swapped in atomically) go too: the build lock ensures no other
    process is writing them.
    """
    for path in outputs:
        atomic.remove(path)
    for path in (*outputs, *replaced):
        if path.parent.is_dir():
            for leftover in path.parent.glob(f"{atomic.TMP_PREFIX}{path.name}.*"):
                atomic.remove(leftover)


def base_digest(image: Path) -> str | None:
    """The sha256 of a base image (None for a directory base).

    The check step's view remembers it by file identity across runs; the compat and image
    steps ask the same memo instead of hashing a base of a gigabyte again each time.
    """
    from invariants.view import sha256_file

    return sha256_file(image) if image.is_file() else None


def base_tree_digest(image: Path) -> str | None:
    """The index digest of a base given as a directory (None for an image base)."""
    from overlays import baseindex

    return baseindex.digest(image) if image.is_dir() else None


def stack_of(project: Project, name: str) -> Stack:
    return load_stack(project.stacks_dir, name)


# --- lock, fetch, stage ------------------------------------------------------------------


def lock(project: Project, name: str) -> None:
    from overlays.locking import lock_stack

    stack = stack_of(project, name)
    lock_stack(stack, lock_path=project.lock_path(name), build_dir=project.step_dir(name))


def read_lock(project: Project, name: str) -> lockfile.Lock:
    return lockfile.read(project.lock_path(name))


def fetch(project: Project, name: str) -> None:
    from overlays.fetch import fetch_lock

    stack = stack_of(project, name)
    starting(project.record(name, "fetch"))
    fetch_lock(
        read_lock(project, name),
        repos={repo.id: repo for repo in stack.repos},
        record=project.record(name, "fetch"),
    )


def stage(project: Project, name: str) -> None:
    from invariants.view import View
    from overlays.caches.step import stage_caches
    from overlays.staging import stage_lock

    stack = stack_of(project, name)
    lower = View(view_layers(project, stack))
    starting(
        project.record(name, "stage"), project.owners(name), replaced=(project.staging(name),)
    )
    result = stage_lock(
        read_lock(project, name),
        staging=project.staging(name),
        record=project.record(name, "stage"),
        owners=project.owners(name),
        lower=lower,  # rpm -i into the base writes through it
        drop_executables=stack.klass == "deps",
        keep=[k.path for k in stack.keep_executables],
    )
    # install-time caches (scriptlets' and file triggers' work) for the merged view
    stage_caches(project.staging(name), project.step_dir(name), lower,
                 stack.base.host_provides, name)  # fmt: skip
    installed = result.installed
    print(
        f"stage:{name}: {result.packages} packages, {len(result.extracted)} extracted, "
        f"{len(result.reused)} reused, {len(installed.redirected)} paths installed through "
        f"the base's symlinks, {len(installed.dropped)} tool executables dropped",
        file=sys.stderr,
    )


# --- the compat overlay (one per base) --------------------------------------------------


def compat_record(project: Project, base_id: str) -> Path:
    return project.build_dir / "compat" / f"{base_id}.json"


def compat_image(project: Project, base_id: str) -> Path:
    return project.overlays_dir / f"compat-{base_id}.erofs"


def compat(project: Project, base_id: str) -> None:
    """Make the compat image for a base when it lacks an interpreter path, and record it."""
    from invariants.compat import ensure
    from overlays.identity import identity
    from overlays.image import build_image
    from overlays.manifest import make_manifest, write_manifest
    from overlays.stack import load_base

    base = load_base(project.stacks_dir / "bases", base_id)
    image = compat_image(project, base_id)
    manifest = image.with_suffix(".manifest.json")
    starting(compat_record(project, base_id), manifest)
    tree = ensure(base.image)
    record = CompatRecord(base_id)
    if tree is None:
        atomic.remove(image)
        atomic.remove(manifest)
    else:
        base_sha = base_digest(base.image)
        base_tree = base_tree_digest(base.image)
        content = identity((), "lz4hc", base=base_sha or base_tree or base_id)
        info = build_image(tree, image, uuid_seed=content.digest)
        write_manifest(
            manifest,
            make_manifest(
                stack_name=f"compat-{base_id}",
                stack_class="compat",
                stack_files=[base.path],
                lock=None,
                lock_path=None,
                base_image_sha256=base_sha,
                owners={},
                image=info,
                invariants_report=None,
                content=content,
                base_tree_sha256=base_tree,
            ),
        )
        record = CompatRecord(base_id, image.name, manifest.name, info.sha256)
    record.write(compat_record(project, base_id))


@dataclass(frozen=True)
class CompatRecord:
    """``build/compat/<base>.json``: the compat overlay of a base (schema ``compat``)."""

    base: str
    image: str | None = None  # in build/overlays; None when the base needs no compat overlay
    manifest: str | None = None
    sha256: str | None = None

    def write(self, path: Path) -> None:
        doc = {k: v for k, v in dataclasses.asdict(self).items() if v is not None or
               k in ("image", "manifest")}
        jsonio.write(path, doc, "compat")

    @classmethod
    def read(cls, path: Path) -> CompatRecord:
        doc = jsonio.read_record(
            path,
            "compat",
            error=StageError,
            what="compat record",
            hint=f"make the base's compat overlay again: doit compat:{path.stem}",
        )
        return cls(**doc)


def compat_layer_path(project: Project, base_id: str) -> Path | None:
    """The compat image of a base, or None when the base needs none."""
    record = CompatRecord.read(compat_record(project, base_id))
    return project.overlays_dir / record.image if record.image else None


# --- check and image ---------------------------------------------------------------------


def view_layers(project: Project, stack: Stack) -> list[Any]:
    """The layers under a deps overlay, in muvm order: base, gpu overlays, compat."""
    from invariants.view import layer

    layers = [layer(stack.base.image, "base", stack.base.id)]
    # a gpu overlay that is not installed is skipped, as muvm skips it (FACTS.md, 2026)
    layers += [layer(path, "gpu") for path in stack.base.overlays if os.path.lexists(path)]
    compat_path = compat_layer_path(project, stack.base.id)
    if compat_path is not None:
        layers.append(layer(compat_path, "compat", compat_path.stem))
    return layers


def check(project: Project, name: str) -> None:
    from invariants import elf
    from invariants.check import check_tree
    from invariants.report import raise_on_failure, write_report

    stack = stack_of(project, name)
    starting(project.invariants(name))
    owners = Owners.read(project.owners(name)).paths
    record = stage_record(project, name)
    content = staged(read_lock(project, name), record, owners)
    # The extraction saw every content's first bytes: the rest is not ELF, and no file
    # that still has its staged digest is opened to look.
    elf.not_elf(sha256 for sha256, _ in content.digests.values() if sha256 not in content.elf)
    report = check_tree(
        project.staging(name),
        stack.check_policy(),
        owners=owners,
        view_layers=view_layers(project, stack),
        dropped=dropped_executables(record),
        name=name,
        digests=content.digests,
    )
    write_report(report, project.invariants(name))
    print(report.summary(), file=sys.stderr)
    raise_on_failure(report)


def stage_record(project: Project, name: str) -> StageRecord:
    """The stage step's record (:class:`overlays.stagerecord.StageRecord`), validated."""
    return StageRecord.read(project.record(name, "stage"))


def dropped_executables(record: StageRecord) -> list[dict[str, str]]:
    """The stage step's dropped tool executables, each with what the host has there."""
    from overlays.hostpkgs import providers

    rows = [dict(r) for r in record.dropped]
    programs = sorted({r["path"] for r in rows if r["type"] != "dir"})
    host = providers(programs)
    for row in rows:
        if row["type"] != "dir":
            row["host"] = host[row["path"]]
    return rows


def _staged_metas(lock: lockfile.Lock) -> dict[str, ExtractedMeta]:
    """The extraction records of the locked packages, by package name (one that is gone
    or damaged is left out: the check then reads and hashes that package's files)."""
    from fexstack import paths
    from overlays.extract import META, ExtractedMeta, extracted_dir

    metas: dict[str, ExtractedMeta] = {}
    for pkg in lock.packages:
        meta_path = extracted_dir(paths.cache_dir(), pkg.sha256) / META
        if not meta_path.exists():
            continue
        try:
            meta = ExtractedMeta.read(meta_path)
        except StageError as exc:
            print(f"fexstack: ignoring the damaged cache record: {exc.message}; "
                  f"the check hashes {pkg.name}'s files", file=sys.stderr)
            continue
        if meta.rpm_sha256 == pkg.sha256:
            metas[pkg.name] = meta
    return metas


@dataclass(frozen=True)
class StagedContent:
    """What the extraction records say of the staged files (see :func:`staged`)."""

    digests: dict[str, tuple[str, int]]  # staged file -> (sha256, size)
    elf: frozenset[str]  # sha256 of every content that starts with the ELF magic


def staged(lock: lockfile.Lock, record: StageRecord, owners: Mapping[str, str]) -> StagedContent:
    """(sha256, size) of each staged file, from the extraction record of the RPM its owner
    was staged from, and which contents are ELF. The check and the image step rely on a
    digest only for a file of that size whose mtime is still the stage step's 0; the
    image step's read-back then compares the image's bytes with it."""
    metas = _staged_metas(lock)
    files = {package: meta.files for package, meta in metas.items()}
    origin = {  # installed path -> payload path (the extraction's meta.json has those)
        r["installed"]: r["original"] for r in record.redirected
    }
    out: dict[str, tuple[str, int]] = {}
    for path, package in owners.items():
        entry = files.get(package, {}).get(origin.get(path, path))
        if isinstance(entry, dict) and entry.get("type") == "file":
            sha256, size = entry.get("sha256"), entry.get("size")
            if isinstance(sha256, str) and isinstance(size, int):
                out[path] = (sha256, size)
    return StagedContent(out, frozenset().union(*(meta.elf for meta in metas.values())))


def image(project: Project, name: str) -> None:
    from overlays.caches import step as caches_step
    from overlays.identity import identity
    from overlays.image import build_image
    from overlays.manifest import make_manifest, write_manifest

    stack = stack_of(project, name)
    lock_data = read_lock(project, name)
    staging = project.staging(name)
    # An image without its manifest is never taken as built (nor one with a stale one).
    starting(project.manifest(name), project.image(name))
    # The image's identity (and so its UUID) comes from its content, never from where the
    # clone, the cache or the repositories live.
    staged_record = stage_record(project, name)
    install = {
        "redirected": [dict(r) for r in staged_record.redirected],
        "dropped": [dict(r) for r in staged_record.dropped],
        "caches": caches_step.read(project.step_dir(name)),
    }
    content = identity(lock_data.packages, stack.compression, install=install)
    owners = Owners.read(project.owners(name)).paths
    info = build_image(
        staging,
        project.image(name),
        compression=stack.compression,
        uuid_seed=content.digest,
        known=staged(lock_data, staged_record, owners).digests,  # the tree is not hashed again
    )
    base = stack.base.image
    write_manifest(
        project.manifest(name),
        make_manifest(
            stack_name=name,
            stack_class=stack.klass,
            stack_files=stack.files,
            lock=lock_data,
            lock_path=project.lock_path(name),
            base_image_sha256=base_digest(base),
            owners=owners,
            image=info,
            invariants_report=project.invariants(name),
            install=install,
            content=content,
            base_tree_sha256=base_tree_digest(base),
        ),
    )
    print(f"image:{name}: image    {project.image(name)}")
    print(f"image:{name}: manifest {project.manifest(name)}")
