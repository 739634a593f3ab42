"""The lock step: resolve a stack unless its lock is up to date, keep pins, report the diff.

- Same inputs, same bytes: the lock records ``inputs``, the digest of everything that
  influences resolution (:func:`overlays.stack.resolution_inputs`: release, arch, repos
  with their expanded URLs and gpg settings, seeds and their reasons, excludes, weak_deps,
  the base package list's digest). When the existing lock carries the same digest, the
  step prints "lock up to date" and loads no repository at all. Repository metadata is
  deliberately not an input: a lock changes only when its stack does.
- No churn: a re-lock hands the previous lock's packages to the resolver as pins.
  Packages that come out with the same NEVRA and sha256 keep their recorded URL. Pins hold
  per repository: each package records its repo and that repo's release (a stack may take
  packages from another release's repo, ``release`` in ``stacks/repos.toml``), and a pin
  is kept only while its repo is still used at the same release. A package that moves to
  another repo or release is a change in the diff, even at the same NEVRA.
- Packages of a local (file://) repository are locked with their location inside it,
  not an absolute path (:mod:`overlays.location`), so the lock travels with the clone.
- The difference to the previous lock (added, removed, changed, with versions) is
  printed and written as JSON (schema ``lockdiff``) to ``<build_dir>/lock.diff.json``.
- The lock file is written only when its bytes change (:func:`overlays.lockfile.write`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fexstack import jsonio
from fexstack.errors import LockError
from overlays import basepkgs, location, lockfile, resolver
from overlays.lockfile import Lock, LockedPackage
from overlays.resolver import BasePackageLike, Progress, Request, stderr_progress
from overlays.stack import Repo, Stack, inputs_digest, resolution_inputs

DIFF_FORMAT = 1
DIFF_FILE = "lock.diff.json"


@dataclass(frozen=True)
class Change:
    """One package whose pinned version or file changed."""

    name: str
    arch: str
    old: str  # NEVRA before
    new: str  # NEVRA after
    same_version_new_file: bool = False  # same NEVRA, different sha256
    old_repo: str = ""  # repo@release before, when it changed
    new_repo: str = ""  # repo@release after, when it changed


@dataclass(frozen=True)
class LockDiff:
    """What a re-lock changed, by (name, arch)."""

    added: tuple[LockedPackage, ...] = ()
    removed: tuple[LockedPackage, ...] = ()
    changed: tuple[Change, ...] = ()
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """Human-readable lines: a summary, then ``+``, ``-`` and ``~`` per package."""
        out = [
            f"{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed, {self.unchanged} unchanged"
        ]
        out += [f"  + {p.nevra}" for p in self.added]
        out += [f"  - {p.nevra}" for p in self.removed]
        for c in self.changed:
            note = " (same version, different file)" if c.same_version_new_file else ""
            if c.old_repo != c.new_repo:
                note += f" (repo {c.old_repo} -> {c.new_repo})"
            out.append(
                f"  ~ {c.name}.{c.arch}: {_evra(c.old, c.name)} -> {_evra(c.new, c.name)}{note}"
            )
        return out


def _evra(nevra: str, name: str) -> str:
    return nevra.removeprefix(name + "-")


@dataclass(frozen=True)
class LockResult:
    """The outcome of the lock step."""

    lock: Lock
    changed: bool  # the lock file was (re)written
    diff: LockDiff
    up_to_date: bool = False  # short-circuited: inputs unchanged, nothing resolved
    pins_dropped: tuple[str, ...] = ()


def diff(old: Sequence[LockedPackage], new: Sequence[LockedPackage]) -> LockDiff:
    """The difference between two package sets, keyed by (name, arch)."""
    before = {(p.name, p.arch): p for p in old}
    after = {(p.name, p.arch): p for p in new}
    added = tuple(after[k] for k in sorted(after.keys() - before.keys()))
    removed = tuple(before[k] for k in sorted(before.keys() - after.keys()))
    changed = []
    unchanged = 0
    for k in sorted(before.keys() & after.keys()):
        a, b = before[k], after[k]
        moved = _where(a) != _where(b)
        if a.nevra != b.nevra or a.sha256 != b.sha256 or moved:
            same_file = a.nevra == b.nevra and a.sha256 != b.sha256
            changed.append(
                Change(k[0], k[1], a.nevra, b.nevra, same_file,
                       _where(a) if moved else "", _where(b) if moved else "")
            )
        else:
            unchanged += 1
    return LockDiff(added, removed, tuple(changed), unchanged)


def _where(p: LockedPackage) -> str:
    """``repo@release`` of a locked package (the unit the no-churn rule holds for)."""
    return f"{p.repo}@{p.repo_release}"


def _pins(previous: Lock, repos: Sequence[Repo], arch: str) -> tuple[LockedPackage, ...]:
    """The previous lock's packages whose repo is still used at the same release."""
    if previous.arch != arch:
        return ()
    releases = {r.id: r.release or previous.release for r in repos}
    return tuple(
        p for p in previous.packages
        if releases.get(p.repo) == (p.repo_release or previous.release)
    )


def _pkg_json(p: LockedPackage) -> dict[str, Any]:
    return {"name": p.name, "arch": p.arch, "evr": p.evr, "nevra": p.nevra}


def diff_document(
    stack: str,
    result_diff: LockDiff,
    *,
    up_to_date: bool,
    inputs: str,
    previous_inputs: str | None,
    pins_dropped: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON document of ``lock.diff.json`` (schema ``lockdiff``)."""
    return {
        "format": DIFF_FORMAT,
        "stack": stack,
        "up_to_date": up_to_date,
        "inputs": inputs,
        "previous_inputs": previous_inputs,
        "added": [_pkg_json(p) for p in result_diff.added],
        "removed": [_pkg_json(p) for p in result_diff.removed],
        "changed": [
            {
                "name": c.name,
                "arch": c.arch,
                "old": _evra(c.old, c.name),
                "new": _evra(c.new, c.name),
                "same_version_new_file": c.same_version_new_file,
                **({"old_repo": c.old_repo, "new_repo": c.new_repo} if c.old_repo else {}),
            }
            for c in result_diff.changed
        ],
        "unchanged": result_diff.unchanged,
        "pins_dropped": sorted(pins_dropped),
    }


def _previous(lock_path: Path, progress: Progress) -> Lock | None:
    if not lock_path.exists():
        return None
    try:
        return lockfile.read(lock_path)
    except LockError as exc:
        progress(f"ignoring the existing lock ({exc.message}); locking afresh")
        return None


def _keep_urls(
    new: Sequence[LockedPackage],
    old: Sequence[LockedPackage],
    repos: Mapping[str, Repo] | None = None,
) -> tuple[LockedPackage, ...]:
    """Packages identical to a previous pin (NEVRA, sha256, repo) keep its URL.

    Packages of a local repository get their location inside it instead (whatever an
    older lock recorded: it may be an absolute path of another clone).
    """
    repos = repos or {}
    before = {(p.nevra, p.sha256, p.repo): p for p in old}
    kept = []
    for p in new:
        repo = repos.get(p.repo)
        if location.is_local(repo):
            kept.append(replace(p, url=location.portable(p.url, repo)))
            continue
        prior = before.get((p.nevra, p.sha256, p.repo))
        kept.append(replace(p, url=prior.url) if prior is not None else p)
    return tuple(kept)


def lock(
    *,
    stack: str,
    release: str,
    arch: str,
    repos: Sequence[Repo],
    seeds: Mapping[str, str],
    exclude: Sequence[str] = (),
    weak_deps: bool = False,
    base_packages: Sequence[BasePackageLike] = (),
    base_digest: str,
    inputs: str,
    lock_path: Path,
    diff_path: Path | None,
    progress: Progress = stderr_progress,
) -> LockResult:
    """Lock from plain values; see :func:`lock_stack` for the stack-level entry."""
    previous = _previous(lock_path, progress)
    if (
        previous is not None
        and previous.inputs == inputs
        and (previous.stack, previous.release, previous.arch) == (stack, release, arch)
    ):
        progress(f"{stack}: lock up to date")
        portable = _keep_urls(previous.packages, (), {r.id: r for r in repos})
        if portable != previous.packages:
            # A lock written before local repositories were locked by location: the same
            # packages, with the absolute paths of the clone that made it taken out.
            previous = replace(previous, packages=portable)
            lockfile.write(lock_path, previous)
            progress(f"{stack}: local repositories' packages now locked by location")
        empty = LockDiff(unchanged=len(previous.packages))
        if diff_path is not None:
            jsonio.write(
                diff_path,
                diff_document(
                    stack, empty, up_to_date=True, inputs=inputs, previous_inputs=previous.inputs
                ),
                "lockdiff",
            )
        return LockResult(previous, changed=False, diff=empty, up_to_date=True)
    pins: tuple[LockedPackage, ...] = ()
    if previous is not None:
        pins = _pins(previous, repos, arch)
    request = Request(
        stack=stack,
        release=release,
        arch=arch,
        repos=tuple(repos),
        seeds=dict(seeds),
        exclude=tuple(exclude),
        weak_deps=weak_deps,
        base_packages=tuple(base_packages),
        pins=pins,
    )
    resolution = resolver.resolve(request, progress)
    packages = _keep_urls(
        resolution.packages, previous.packages if previous else (), {r.id: r for r in repos}
    )
    new = Lock(
        stack=stack,
        release=release,
        arch=arch,
        inputs=inputs,
        base=base_digest,
        packages=packages,
    )
    changes = diff(previous.packages if previous else (), new.packages)
    written = lockfile.write(lock_path, new)
    for line in changes.lines():
        progress(f"{stack}: {line}" if not line.startswith(" ") else line)
    progress(f"{stack}: {'wrote' if written else 'unchanged'} {lock_path}")
    if diff_path is not None:
        jsonio.write(
            diff_path,
            diff_document(
                stack,
                changes,
                up_to_date=False,
                inputs=inputs,
                previous_inputs=previous.inputs if previous else None,
                pins_dropped=resolution.pins_dropped,
            ),
            "lockdiff",
        )
    return LockResult(new, changed=written, diff=changes, pins_dropped=resolution.pins_dropped)


def base_packages_of(
    stack: Stack, base_packages_path: Path | None = None
) -> tuple[basepkgs.BasePackage, ...]:
    """The base's installed packages (its kiwi list or base lock); none when it has no list."""
    path = base_packages_path if base_packages_path is not None else stack.base.packages
    if path is None:
        return ()
    return basepkgs.load_base_packages(path)


def stack_inputs(stack: Stack, base_digest: str) -> str:
    """The ``inputs`` digest recorded in the lock of ``stack``."""
    return inputs_digest(resolution_inputs(stack, base_digest))


def lock_stack(
    stack: Stack,
    *,
    lock_path: Path,
    build_dir: Path,
    base_packages_path: Path | None = None,
    progress: Progress = stderr_progress,
) -> LockResult:
    """Lock ``stack`` into ``lock_path``; the diff goes to ``build_dir/lock.diff.json``.

    ``base_packages_path`` overrides the base's package list (``stack.base.packages``).
    """
    packages = base_packages_of(stack, base_packages_path)
    if not packages:
        progress(f"{stack.name}: the base lists no packages; nothing counts as installed")
    base_digest = basepkgs.digest(packages)
    return lock(
        stack=stack.name,
        release=stack.release,
        arch=stack.arch,
        repos=stack.repos,
        seeds=stack.seeds,
        exclude=stack.exclude,
        weak_deps=stack.weak_deps,
        base_packages=packages,
        base_digest=base_digest,
        inputs=stack_inputs(stack, base_digest),
        lock_path=lock_path,
        diff_path=build_dir / DIFF_FILE,
        progress=progress,
    )
