"""The stage step: assemble a lock's staging tree from the extracted-RPM cache.

Every package is extracted once into the cache (:mod:`overlays.extract`); the tree
``build/<name>/staging`` is then put together from those extractions: files are
hardlinked from the cache where the filesystem allows (else copied), symlinks, FIFOs and
directories are made anew. The tree is built in a temp folder beside ``staging`` and
renamed into place, so a killed stage never leaves a tree that looks complete. A tree an
earlier stage left is moved to that temp name and brought up to date there: entries the
new tree no longer has are removed, files that are still the very cache inode they were
linked from, symlinks with the same target and folders stay, the rest is replaced, so
adding one package links that package's files instead of the whole tree.

Staged files may share their inode with the cache: later steps must treat the staging
tree as read-only (replace a file, never write into it).

Each payload path is first mapped to where ``rpm -i`` into the base would write it
(:mod:`overlays.install`: through the lower layers' directory symlinks, so ``/lib64/x``
lands at ``/usr/lib64/x`` on a merged-/usr base), and a deps overlay leaves out what lands
under bin, sbin, usr/bin or usr/sbin unless the stack keeps it; ``stage.json`` lists both
(``redirected``, ``dropped``). Everything below works on installed paths.

Before anything is written, the packages' file lists are checked together, in an order
that does not depend on the lock's:
- a path below a symlink of another package (A: /usr/lib64/foo -> /tmp, B:
  /usr/lib64/foo/evil.so) is an error naming both packages: nothing is ever written
  through a symlink;
- the same path from two packages with a different type, content, mode or link target is
  a conflict naming both; identical files and directories are shared.

Outputs beside the step record (``build/<name>/``):
- ``stage.json`` (schema ``stage``): counts (``extracted``, ``reused``), setuid/setgid
  files, dropped file capabilities, FIFOs, shared paths, seconds;
- ``owners.json`` (schema ``owners``): ``{"/abs/path": "package", ...}`` for every path in
  the tree. A path brought by several packages (directories; identical files) names the
  first of them by package name, preferring packages that list a directory in their
  header over those that only have files below it; ``stage.json`` lists every package
  of shared files under ``shared``.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import multiprocessing
import os
import shutil
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fexstack
from fexstack import atomic, cores, paths
from fexstack.errors import StageError
from invariants.view import View
from overlays import extract, payload, safetree
from overlays.fetch import rpm_path
from overlays.install import InstallRoot, executable_dir
from overlays.lockfile import Lock, LockedPackage
from overlays.owners import Owners
from overlays.stagerecord import StageRecord
from overlays.treescan import KINDS

log = logging.getLogger("fexstack.stage")

WORKERS = 4  # at most this many extraction processes (and no more than the usable cores)
IMPLICIT_DIR = {"type": "dir", "mode": 0o755}


@dataclass(frozen=True)
class Installed:
    """Where the packages' payload paths went: redirected through the lower layers'
    directory symlinks (rows: original, installed, package) and tool executables left
    out of the tree (rows: path, original, package, type)."""

    redirected: tuple[dict[str, str], ...] = ()
    dropped: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class StageResult:
    """What :func:`stage_lock` made."""

    staging: Path
    packages: int
    extracted: tuple[str, ...]  # package names extracted by this run, sorted
    reused: tuple[str, ...]  # package names taken from the extracted cache, sorted
    owners: Mapping[str, str]  # every path in the tree -> the package that brought it
    setuid: tuple[str, ...]  # paths with the setuid or setgid bit
    caps_dropped: Mapping[str, str]  # path -> capabilities the header asked for
    seconds: float
    installed: Installed = Installed()  # paths redirected into the base, executables dropped


@dataclass(frozen=True)
class _Claim:
    """One package's entry for one path (``explicit`` False: a parent it implies)."""

    package: str
    entry: Mapping[str, Any]
    explicit: bool
    source: str = ""  # the payload path (in the extracted cache) when it differs


def stage_lock(
    lock: Lock,
    *,
    cache: Path | None = None,
    staging: Path,
    record: Path,
    owners: Path | None = None,
    workers: int = WORKERS,
    lower: View | None = None,
    drop_executables: bool = False,
    keep: Sequence[str] = (),
) -> StageResult:
    """Build ``staging`` from the payloads of every package in ``lock``.

    ``record`` is ``build/<name>/stage.json``; ``owners`` defaults to ``owners.json``
    beside it. The packages must be in ``<cache>/rpms/`` (the fetch step).

    ``lower`` is the merged view of the layers below the overlay (base, gpu, compat):
    each payload path is installed through its directory symlinks as rpm would
    (:mod:`overlays.install`). With ``drop_executables`` (deps overlays), files,
    symlinks and directories under bin, sbin, usr/bin and usr/sbin are left out unless
    their installed path matches a glob of ``keep``.
    """
    started = time.monotonic()
    cache = cache if cache is not None else paths.cache_dir()
    atomic.sweep(cache / extract.EXTRACTED)  # leftovers of killed extractions
    owners = owners if owners is not None else record.parent / "owners.json"
    packages = sorted(lock.packages, key=lambda p: (p.name, p.arch, p.sha256))
    names = [p.name for p in packages]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise StageError(
            f"lock {lock.stack} names package(s) {', '.join(twice)} more than once",
            "a deps overlay holds one arch of each package; re-lock",
        )
    extractions = _extract_all(packages, cache, workers)

    payloads, installed = _install(
        extractions, InstallRoot(lower), drop_executables=drop_executables, keep=keep
    )
    claims = _claims(payloads)
    _check_symlinks(claims)
    winners, shared, mode_differences = _resolve(claims)

    link_modes = _write_tree(staging, winners, extractions)

    owner_map = {path: claim.package for path, claim in winners.items()}
    Owners(owner_map).write(owners)
    setuid = sorted(p for p, c in winners.items() if c.entry.get("setuid") or c.entry.get("setgid"))
    caps = {
        p: str(c.entry["caps_dropped"]) for p, c in winners.items() if "caps_dropped" in c.entry
    }
    extracted = tuple(sorted(p.name for p in packages if extractions[p.name].fresh))
    reused = tuple(sorted(p.name for p in packages if not extractions[p.name].fresh))
    result = StageResult(
        staging=staging,
        packages=len(packages),
        extracted=extracted,
        reused=reused,
        owners=owner_map,
        setuid=tuple(setuid),
        caps_dropped=caps,
        seconds=round(time.monotonic() - started, 3),
        installed=installed,
    )
    _record(lock, packages, result, winners, shared, mode_differences, link_modes).write(record)
    log.info(
        "stage %s: %d packages (%d extracted, %d reused), %d paths, %.1f s",
        lock.stack,
        len(packages),
        len(extracted),
        len(reused),
        len(winners),
        result.seconds,
    )
    return result


def _extract_one(pkg: LockedPackage, cache: Path) -> extract.Extracted:
    """Extract (or reuse) one package; runs in a worker process or in this one.

    A :class:`FexstackError` raised in a worker crosses back whole (it pickles with its
    hint) and is raised again by the future.
    """
    done = extract.extract(rpm_path(cache, pkg.sha256), pkg.sha256, cache=cache, package=pkg.name)
    if done.name != pkg.name:
        raise StageError(
            f"the lock's package {pkg.name} (sha256 {pkg.sha256}) is an RPM of package {done.name}",
            "the lock is inconsistent with its URLs: re-lock",
        )
    return done


def _processes(workers: int, jobs: int) -> int:
    """How many extraction processes: 1 means extracting here, without a pool."""
    return cores.processes(workers, jobs)


def _extract_all(
    packages: list[LockedPackage], cache: Path, workers: int
) -> dict[str, extract.Extracted]:
    """Every package's extraction, by name; the first failure (in name order) is raised.

    The cpio parsing is Python, so the packages are extracted in forked processes (one
    package per task) to use every core; each returns its :class:`extract.Extracted`.
    """
    done: dict[str, extract.Extracted] = {}
    processes = _processes(workers, len(packages))
    if processes == 1:
        for pkg in packages:
            done[pkg.name] = _extract_one(pkg, cache)
        return done
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures: dict[str, Future[extract.Extracted]] = {
            pkg.name: pool.submit(_extract_one, pkg, cache) for pkg in packages
        }
        try:
            for pkg in packages:
                done[pkg.name] = futures[pkg.name].result()
                extract.remember(done[pkg.name])  # the check and image steps read them
        except BrokenProcessPool as exc:
            pool.shutdown(cancel_futures=True)
            raise StageError(
                f"an extraction process died while staging ({exc})",
                "it was killed from outside (out of memory?); stage again",
            ) from exc
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return done


def _parents(path: str) -> list[str]:
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


Payloads = dict[str, dict[str, tuple[str, Mapping[str, Any]]]]


def _install(
    extractions: Mapping[str, extract.Extracted],
    root: InstallRoot,
    *,
    drop_executables: bool,
    keep: Sequence[str],
) -> tuple[Payloads, Installed]:
    """Per package: installed path -> (payload path, entry), and what moved or was left out.

    Two payload paths of one package that install to the same path (``/lib/x`` and
    ``/usr/lib/x`` on a merged-/usr base) must be the same entry, as rpm would find them.
    """
    out: Payloads = {}
    redirected: list[dict[str, str]] = []
    dropped: list[dict[str, str]] = []
    for name in sorted(extractions):
        mine: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for path in sorted(extractions[name].files):
            entry = extractions[name].files[path]
            installed = root.place(path, entry["type"])
            if (
                drop_executables
                and executable_dir(installed) is not None
                and not any(fnmatch.fnmatchcase(installed, glob) for glob in keep)
            ):
                dropped.append(
                    {"path": installed, "original": path, "package": name, "type": entry["type"]}
                )
                continue
            if installed in mine:
                first, known = mine[installed]
                if not _same(known, entry):
                    raise StageError(
                        f"package {name} has {first} and {path}, which both install to "
                        f"{installed} through the base's symlinks, and differ",
                        f"{name} cannot be installed into this base as it is; exclude it "
                        "(or the package that requires it) in the stack, then re-lock",
                    )
                continue
            mine[installed] = (path, entry)
            if installed != path:
                redirected.append({"original": path, "installed": installed, "package": name})
        out[name] = mine
    redirected.sort(key=lambda r: (r["original"], r["package"]))
    dropped.sort(key=lambda r: (r["path"], r["package"]))
    return out, Installed(tuple(redirected), tuple(dropped))


def _claims(payloads: Payloads) -> dict[str, list[_Claim]]:
    """Every installed path of every package, explicit entries and the parents they imply."""
    claims: dict[str, list[_Claim]] = {}
    for name in sorted(payloads):
        files = payloads[name]
        implied: set[str] = set()
        for path in files:
            parent = path.rpartition("/")[0]
            while parent and parent not in implied:
                implied.add(parent)
                parent = parent.rpartition("/")[0]
        for path, (source, entry) in files.items():
            claims.setdefault(path, []).append(
                _Claim(name, entry, True, source if source != path else "")
            )
        for path in sorted(implied - set(files)):
            claims.setdefault(path, []).append(_Claim(name, IMPLICIT_DIR, False))
    return claims


def _check_symlinks(claims: Mapping[str, list[_Claim]]) -> None:
    """Refuse any path below a symlink: it would be written through the link."""
    links = {
        path: group
        for path, group in claims.items()
        if any(c.entry["type"] == "symlink" for c in group)
    }
    if not links:
        return
    if not any(_below(path, links) for path in claims):
        return
    for path in sorted(claims):  # the first offence in path order, as the error
        for parent in _parents(path):
            if parent not in links:
                continue
            link = next(c for c in links[parent] if c.entry["type"] == "symlink")
            below = next((c for c in claims[path] if c.package != link.package), claims[path][0])
            raise StageError(
                f"package {below.package} has {path} below {parent}, which package "
                f"{link.package} makes a symlink (-> {link.entry['target']}): "
                "staging it would write through the symlink",
                f"{link.package} and {below.package} cannot share an overlay; exclude one "
                "of them (or its dependent) in the stack, then re-lock",
            )


def _below(path: str, links: Mapping[str, object]) -> bool:
    """Whether a parent of ``path`` is in ``links``."""
    parent = path.rpartition("/")[0]
    while parent:
        if parent in links:
            return True
        parent = parent.rpartition("/")[0]
    return False


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a["type"] != b["type"]:
        return False
    if a["type"] == "dir":
        return True
    keys = ("mode", "sha256", "size", "target", "caps_dropped")
    return all(a.get(k) == b.get(k) for k in keys)


def _describe(claim: _Claim) -> str:
    entry = claim.entry
    kind = entry["type"]
    if not claim.explicit:
        return "a directory (holding its files)"
    mode = f"mode {entry['mode']:04o}"
    if kind == "file":
        return f"a file ({mode}, sha256 {entry['sha256']})"
    if kind == "symlink":
        return f"a symlink to {entry['target']}"
    return f"a {'directory' if kind == 'dir' else kind} ({mode})"


def _resolve(
    claims: Mapping[str, list[_Claim]],
) -> tuple[dict[str, _Claim], dict[str, list[str]], dict[str, dict[str, int]]]:
    """The entry staged at each path; shared non-directory paths; directory mode quarrels."""
    winners: dict[str, _Claim] = {}
    shared: dict[str, list[str]] = {}
    differences: dict[str, dict[str, int]] = {}
    for path in sorted(claims):
        group = sorted(claims[path], key=lambda c: (not c.explicit, c.package))
        first = group[0]
        for other in group[1:]:
            if not _same(first.entry, other.entry):
                raise StageError(
                    f"packages {first.package} and {other.package} conflict at {path}: "
                    f"{_describe(first)} in {first.package}, "
                    f"{_describe(other)} in {other.package}",
                    f"{first.package} and {other.package} cannot share an overlay; exclude "
                    "one of them in the stack (or split the stack), then re-lock",
                )
        winners[path] = first
        if first.entry["type"] == "dir":
            modes = {c.package: int(c.entry["mode"]) for c in group if c.explicit}
            if len(set(modes.values())) > 1:
                differences[path] = modes
        elif len(group) > 1:
            shared[path] = sorted(c.package for c in group)
    return winners, shared, differences


def _write_tree(
    staging: Path, winners: Mapping[str, _Claim], extractions: Mapping[str, extract.Extracted]
) -> dict[str, int]:
    """Bring the previous stage's tree up to date (or make it) under a temp name, then
    rename it into place; a tree that cannot be brought up to date is made anew."""
    with atomic.renewed_dir(staging) as (tmp, renewed):
        if not renewed:
            return _assemble(tmp, winners, extractions, {})
        try:
            return _assemble(tmp, winners, extractions, _previous(tmp))
        except OSError as exc:
            log.warning("stage: cannot bring %s up to date (%s); making it anew", staging, exc)
            shutil.rmtree(tmp)
            tmp.mkdir(mode=0o700)
            return _assemble(tmp, winners, extractions, {})


@dataclass(frozen=True)
class _Old:
    """One entry of the tree the previous stage left: its type, inode and link target."""

    kind: str  # a type name of overlays.treescan.KINDS (dir, file, symlink, fifo...)
    inode: tuple[int, int]  # (st_dev, st_ino)
    target: str | None = None


def _previous(root: Path) -> dict[str, _Old]:
    """Every entry below ``root`` (a tree an earlier stage made), symlinks not followed;
    folders the owner cannot write are made writable (their modes are set at the end)."""
    found: dict[str, _Old] = {}
    pending = [(os.fspath(root), "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = f"{prefix}/{entry.name}"
                st = entry.stat(follow_symlinks=False)
                kind = KINDS.get(stat.S_IFMT(st.st_mode), "other")
                target = os.readlink(entry.path) if kind == "symlink" else None
                found[path] = _Old(kind, (st.st_dev, st.st_ino), target)
                if kind == "dir":
                    pending.append((entry.path, path))
                    if st.st_mode & 0o700 != 0o700:  # e.g. 0555: writable again until the
                        os.chmod(entry.path, 0o700, follow_symlinks=False)  # modes are set
    return found


def _depth_first(paths: Iterable[str]) -> list[str]:
    return sorted(paths, key=lambda p: (-p.count("/"), p))


def _assemble(
    root: Path,
    winners: Mapping[str, _Claim],
    extractions: Mapping[str, extract.Extracted],
    previous: Mapping[str, _Old],
) -> dict[str, int]:
    """Write the tree under ``root``; counts of files hardlinked, copied and kept.

    ``previous`` lists what ``root`` already holds (the last stage's tree, else nothing):
    an entry it has that this stage does not is removed, one of another type, inode (a
    file is kept only when it is the very inode of the cache file it is linked from) or
    link target is replaced, and the rest is left as it is. Adding one package to a big
    overlay thus links that package's files, not the whole tree again.
    """
    counts = {"hardlinked": 0, "copied": 0, "kept": 0, "removed": 0}
    root_fd = os.open(root, safetree.OPEN_DIR)
    dirs = safetree.DirFds(root_fd)
    trees = {name: str(done.tree) for name, done in extractions.items()}
    try:
        # What this tree no longer has, deepest first: a folder is empty when it is reached.
        for path in _depth_first(p for p in previous if p not in winners):
            dirs.trim()
            parent, name = dirs.parent(path)
            if previous[path].kind == "dir":
                os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
            counts["removed"] += 1
        for path in sorted(winners, key=lambda p: p.split("/")):
            dirs.trim()
            claim = winners[path]
            entry = claim.entry
            parent, name = dirs.parent(path)
            kind = entry["type"]
            old = previous.get(path)
            if old is not None:
                source = trees.get(claim.package, "") + (claim.source or path)
                if _still_right(old, kind, entry, source):
                    counts["kept"] += kind != "dir"
                    continue
                if old.kind == "dir":
                    dirs.close()  # no fd may stay open below a folder that goes
                    parent, name = dirs.parent(path)
                    shutil.rmtree(name, dir_fd=parent)
                else:
                    os.unlink(name, dir_fd=parent)
            if kind == "dir":
                os.mkdir(name, 0o700, dir_fd=parent)
            elif kind == "symlink":
                os.symlink(entry["target"], name, dir_fd=parent)
                os.utime(name, ns=(0, 0), dir_fd=parent, follow_symlinks=False)
            elif kind == "fifo":
                os.mkfifo(name, int(entry["mode"]), dir_fd=parent)
                os.utime(name, ns=(0, 0), dir_fd=parent, follow_symlinks=False)
            else:
                tree = trees[claim.package]
                counts[_place(tree, claim.source or path, parent, name, entry)] += 1
        for path in _depth_first(p for p, c in winners.items() if c.entry["type"] == "dir"):
            dirs.trim()
            parent, name = dirs.parent(path)
            os.chmod(name, int(winners[path].entry["mode"]), dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=(0, 0), dir_fd=parent, follow_symlinks=False)
        os.chmod(root_fd, 0o755)
        os.utime(root_fd, ns=(0, 0))
    finally:
        dirs.close()
        os.close(root_fd)
    return counts


def _still_right(old: _Old, kind: str, entry: Mapping[str, Any], source: str) -> bool:
    """Whether the previous tree's entry is already what this stage would write
    (``source``: the file in the extraction cache a file would be linked from)."""
    if old.kind != kind:
        return False
    if kind == "dir":
        return True  # its mode and time are set again below
    if kind == "symlink":
        return old.target == str(entry["target"])
    if kind == "file":
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == old.inode
    return False  # FIFOs are made anew


def _place(tree: str, path: str, parent: int, name: str, entry: Mapping[str, Any]) -> str:
    """Hardlink ``path`` of the cached ``tree`` as ``name`` in ``parent``, or copy it."""
    source = tree + path
    try:
        os.link(source, name, dst_dir_fd=parent, follow_symlinks=False)
        return "hardlinked"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
            raise
    digest = hashlib.sha256()
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(name, safetree.CREATE_FILE, 0o600, dir_fd=parent)
        try:
            while chunk := os.read(src, payload.CHUNK):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view) :]
            os.fchmod(dst, int(entry["mode"]))
            os.utime(dst, ns=(0, 0))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    if digest.hexdigest() != entry["sha256"]:
        raise StageError(
            f"extracted cache file {source} no longer has sha256 {entry['sha256']}",
            f"remove {os.path.dirname(tree)} (the damaged extraction) and stage again",
        )
    return "copied"


def _record(
    lock: Lock,
    packages: list[LockedPackage],
    result: StageResult,
    winners: Mapping[str, _Claim],
    shared: Mapping[str, list[str]],
    mode_differences: Mapping[str, Mapping[str, int]],
    link_modes: Mapping[str, int],
) -> StageRecord:
    kinds = [c.entry["type"] for c in winners.values()]
    inputs = hashlib.sha256("".join(f"{p.sha256}\n" for p in packages).encode()).hexdigest()
    return StageRecord(
        stack=lock.stack,
        fexstack=fexstack.__version__,
        inputs=f"sha256:{inputs}",
        packages=len(packages),
        extracted=len(result.extracted),
        reused=len(result.reused),
        extracted_packages=result.extracted,
        paths=len(winners),
        files=kinds.count("file"),
        dirs=kinds.count("dir"),
        symlinks=kinds.count("symlink"),
        bytes=sum(int(c.entry.get("size", 0)) for c in winners.values()),
        hardlinked=link_modes["hardlinked"],
        copied=link_modes["copied"],
        kept=link_modes["kept"],
        removed=link_modes["removed"],
        setuid=tuple(
            {"path": p, "package": winners[p].package, "mode": f"{winners[p].entry['mode']:04o}"}
            for p in result.setuid
        ),
        caps_dropped=tuple(
            {"path": p, "package": winners[p].package, "caps": caps}
            for p, caps in sorted(result.caps_dropped.items())
        ),
        fifos=tuple(
            {"path": p, "package": c.package}
            for p, c in sorted(winners.items())
            if c.entry["type"] == "fifo"
        ),
        shared={p: tuple(pkgs) for p, pkgs in shared.items()},
        dir_mode_differences={
            p: {pkg: f"{m:04o}" for pkg, m in modes.items()}
            for p, modes in mode_differences.items()
        },
        seconds=result.seconds,
        redirected=result.installed.redirected,
        dropped=result.installed.dropped,
    )
