"""Resolving a stack's seeds with libdnf5, on top of a base whose packages are installed.

libdnf5 runs with no host configuration at all (no dnf.conf, no reposdir, no vars, no
plugins), for arch x86_64 whatever the host's arch, in a fresh installroot under
``cache_dir()/dnf/`` that is removed afterwards; repository metadata is cached beside it
(``cache_dir()/dnf/metadata``).

Base awareness: the base's packages are recorded as installed in the installroot's rpmdb
(see :mod:`overlays.rpmdb`), so the solver adds only what the base lacks. Any package the
solver would bring in under a base package's name (an upgrade, downgrade, reinstall or
another arch of glibc, libgcc, libstdc++ ...) is refused here, naming the seed that wants
it, the base's version and the version wanted: the ABI boundary is protected before
anything is downloaded.

Reasons: libdnf5 says only "Dependency" for a package the solver added, so the reasons
are computed here from the transaction's own requires and provides: package B is
``required by A for C`` when A requires capability C and B provides it.

No churn: packages pinned by a previous lock are preferred. For every pinned name whose
pinned NEVRA is still available, the other versions of that name are excluded; if that
makes the request unsolvable, the pins named in the solver's problems are dropped and it
tries again, and at last it resolves with no pins at all.
"""

from __future__ import annotations

import collections
import difflib
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libdnf5

from fexstack import paths
from fexstack.errors import LockError
from overlays import rpmdb
from overlays.lockfile import LockedPackage, Reason
from overlays.stack import Repo

Progress = Callable[[str], None]

INBOUND = frozenset(
    {
        libdnf5.transaction.TransactionItemAction_INSTALL,
        libdnf5.transaction.TransactionItemAction_UPGRADE,
        libdnf5.transaction.TransactionItemAction_DOWNGRADE,
        libdnf5.transaction.TransactionItemAction_REINSTALL,
    }
)
# Notes, not failures: a seed the base already holds is simply not in the lock.
BENIGN = frozenset(
    {
        libdnf5.base.GoalProblem_NO_PROBLEM,
        libdnf5.base.GoalProblem_ALREADY_INSTALLED,
        libdnf5.base.GoalProblem_INSTALLED_IN_DIFFERENT_VERSION,
        libdnf5.base.GoalProblem_INSTALLED_LOWEST_VERSION,
        libdnf5.base.GoalProblem_HINT_ALTERNATIVES,
        libdnf5.base.GoalProblem_HINT_ICASE,
    }
)
MAX_PIN_ROUNDS = 3
_NOTHING_PROVIDES = re.compile(r"nothing provides (.+?) needed by (\S+)")
_EXCLUDED = re.compile(r"package (\S+) from (\S+) is filtered out by exclude filtering")
_REQUIRES = re.compile(r"package (\S+) from \S+ requires (.+?), but none of the providers")
_NEVRA_NAME = re.compile(r"^(.+)-[^-]+-[^-]+$")


class BasePackageLike(Protocol):
    """What the resolver needs of a base package (``overlays.basepkgs.BasePackage``)."""

    @property
    def name(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def version(self) -> str: ...
    @property
    def release(self) -> str: ...
    @property
    def arch(self) -> str: ...


def stderr_progress(line: str) -> None:
    """The default progress reporter: one short line on stderr."""
    print(f"lock: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Request:
    """Everything a resolution depends on, as plain values."""

    stack: str
    release: str
    arch: str
    repos: tuple[Repo, ...]  # expanded for release and arch
    seeds: Mapping[str, str]  # name -> reason text
    exclude: tuple[str, ...] = ()  # package name globs
    weak_deps: bool = False
    base_packages: tuple[BasePackageLike, ...] = ()
    pins: tuple[LockedPackage, ...] = ()  # the previous lock's packages


@dataclass(frozen=True)
class Resolution:
    """The packages to lock, with where to fetch them and why they are there."""

    packages: tuple[LockedPackage, ...]
    pins_dropped: tuple[str, ...] = ()  # pinned names that could not be kept
    notes: tuple[str, ...] = field(default=())  # e.g. seeds the base already holds


def _nevra(name: str, epoch: int | str, version: str, release: str, arch: str) -> str:
    prefix = f"{epoch}:" if str(epoch) not in ("", "0") else ""
    return f"{name}-{prefix}{version}-{release}.{arch}"


def _pkg_nevra(p: Any) -> str:
    return _nevra(p.get_name(), p.get_epoch(), p.get_version(), p.get_release(), p.get_arch())


def _evr(p: Any) -> str:
    epoch = p.get_epoch()
    prefix = f"{epoch}:" if str(epoch) not in ("", "0") else ""
    return f"{prefix}{p.get_version()}-{p.get_release()}"


def _repo_where(repos: Sequence[Repo]) -> str:
    return ", ".join(f"{r.id} ({', '.join(r.baseurl) or r.metalink})" for r in repos)


class _Session:
    """One libdnf5 Base with the request's repositories, in its own installroot."""

    def __init__(
        self, request: Request, installroot: Path, progress: Progress, *, filelists: bool = False
    ) -> None:
        self.request = request
        self.progress = progress
        base = libdnf5.base.Base()
        config = base.get_config()
        config.installroot = str(installroot)
        metadata = paths.cache_dir() / "dnf" / "metadata"
        metadata.mkdir(parents=True, exist_ok=True)
        config.cachedir = str(metadata)
        config.system_cachedir = str(metadata)
        config.reposdir = []
        config.varsdir = []
        config.plugins = False
        config.use_host_config = False
        config.pkg_gpgcheck = False  # signatures are checked when fetching
        config.install_weak_deps = request.weak_deps
        config.ignorearch = True
        config.skip_unavailable = False
        config.skip_broken = False
        config.best = False
        # Re-validate cached metadata on every lock: a lock reflects the repositories now.
        config.metadata_expire = 0
        if filelists:  # every payload path, for queries by file (overlays/provides.py)
            config.optional_metadata_types = ["filelists"]
        variables = base.get_vars().get()
        variables.set("arch", request.arch)
        variables.set("basearch", request.arch)
        variables.set("releasever", request.release)
        base.setup()
        self.base = base
        sack = base.get_repo_sack()
        for repo in request.repos:
            created = sack.create_repo(repo.id)
            rc = created.get_config()
            if repo.baseurl:
                rc.baseurl = list(repo.baseurl)
            if repo.metalink:
                rc.metalink = repo.metalink
            rc.pkg_gpgcheck = False
            rc.repo_gpgcheck = False
            rc.skip_if_unavailable = False

    def load(self, system: bool) -> None:
        """Load the repositories (and the installroot's rpmdb when ``system``)."""
        sack = self.base.get_repo_sack()
        try:
            if system:
                sack.load_repos()
            else:
                sack.load_repos(libdnf5.repo.Repo.Type_AVAILABLE)
        except libdnf5.exception.Error as exc:
            raise _repo_error(self.request.repos, str(exc)) from exc

    def available(self) -> Any:
        query = libdnf5.rpm.PackageQuery(self.base)
        query.filter_available()
        return query


def _repo_error(repos: Sequence[Repo], text: str) -> LockError:
    named = [r for r in repos if f'"{r.id}"' in text or f"'{r.id}'" in text]
    culprits = named or list(repos)
    where = _repo_where(culprits)
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return LockError(
        f"cannot load repository {where}: {first}",
        "check the URL in stacks/repos.toml and that it is reachable from this machine "
        "(a file:// URL must name an existing repository with repodata/)",
    )


def _base_headers(request: Request, session: _Session) -> list[rpmdb.Header]:
    """Synthetic headers for the base packages, Provides taken from the repo metadata."""
    wanted = {p.name for p in request.base_packages}
    query = session.available()
    query.filter_name(sorted(wanted))
    by_name: dict[str, list[Any]] = collections.defaultdict(list)
    for pkg in query:
        by_name[pkg.get_name()].append(pkg)
    headers = []
    for bp in request.base_packages:
        candidates = by_name.get(bp.name, [])
        exact = [
            c
            for c in candidates
            if _pkg_nevra(c) == _nevra(bp.name, bp.epoch, bp.version, bp.release, bp.arch)
        ]
        provides: set[str] = set()
        files: set[str] = set()
        if exact:
            provides = {str(d) for d in exact[0].get_provides()}
            files = set(exact[0].get_files())
        else:
            # Another version of the same name: its unversioned provides (sonames,
            # symbol versions) stand in; versioned ones would claim the wrong version.
            same_arch = [c for c in candidates if c.get_arch() == bp.arch] or candidates
            for c in same_arch:
                provides |= {str(d) for d in c.get_provides() if " " not in str(d)}
                files |= set(c.get_files())
        headers.append(
            rpmdb.Header(
                name=bp.name,
                epoch=int(bp.epoch),
                version=bp.version,
                release=bp.release,
                arch=bp.arch,
                provides=tuple(sorted(provides)),
                files=tuple(sorted(files)),
            )
        )
    return headers


def _apply_excludes(session: _Session, patterns: Sequence[str]) -> None:
    if not patterns:
        return
    query = session.available()
    query.filter_name(list(patterns), libdnf5.common.QueryCmp_GLOB)
    session.base.get_rpm_package_sack().add_user_excludes(query)


def _pin_excludes(session: _Session, pins: Sequence[LockedPackage]) -> tuple[Any, list[str]]:
    """The other versions of every pinned name whose pinned NEVRA is still available."""
    pinned = {p.name: p for p in pins}
    query = session.available()
    query.filter_name(sorted(pinned))
    by_name: dict[str, list[Any]] = collections.defaultdict(list)
    for pkg in query:
        by_name[pkg.get_name()].append(pkg)
    excluded = libdnf5.rpm.PackageSet(session.base)
    kept = []
    for name, pin in sorted(pinned.items()):
        pkgs = by_name.get(name, [])
        if not any(_pkg_nevra(p) == pin.nevra for p in pkgs):
            continue
        kept.append(name)
        for p in pkgs:
            if _pkg_nevra(p) != pin.nevra:
                excluded.add(p)
    return excluded, kept


def _goal(session: _Session) -> Any:
    goal = libdnf5.base.Goal(session.base)
    for seed in sorted(session.request.seeds):
        settings = libdnf5.base.GoalJobSettings()
        settings.set_report_hint(False)
        goal.add_rpm_install(seed, settings)
    return goal.resolve()


def _problems(transaction: Any) -> list[str]:
    """The resolve log lines that make the resolution fail (not mere notes)."""
    return [
        str(event.to_string())
        for event in transaction.get_resolve_logs()
        if event.get_problem() not in BENIGN
    ]


def _not_found(transaction: Any) -> list[str]:
    specs = []
    for event in transaction.get_resolve_logs():
        if event.get_problem() == libdnf5.base.GoalProblem_NOT_FOUND:
            specs.append(str(event.get_spec()))
    return specs


def _solver_error(session: _Session, transaction: Any) -> LockError:
    request = session.request
    missing = _not_found(transaction)
    text = "\n".join(_problems(transaction))
    if missing:
        names = sorted({p.get_name() for p in session.available()})
        parts = []
        for seed in missing:
            close = difflib.get_close_matches(seed, names, n=3)
            guess = f" (did you mean {', '.join(close)}?)" if close else ""
            parts.append(f"{seed!r}{guess}")
        return LockError(
            f"stack {request.stack}: no package matches seed {', '.join(parts)} in the "
            f"repositories searched: {_repo_where(request.repos)}",
            "fix the seed's name under [seeds], or add the repository that ships it to "
            "[source] repos",
        )
    excluded = _EXCLUDED.findall(text)
    if excluded:
        requirers = _REQUIRES.findall(text)
        wants = "; ".join(f"{_name_of(n)} requires {cap}" for n, cap in requirers)
        return LockError(
            f"stack {request.stack}: a dependency is provided only by excluded packages "
            f"({', '.join(sorted({n for n, _ in excluded}))}, excluded by [exclude] "
            f"{', '.join(request.exclude)}): {wants}.\nThe solver said:\n{text}",
            "remove the pattern from [exclude], or drop the seed that needs it",
        )
    nothing = _NOTHING_PROVIDES.findall(text)
    if nothing:
        items = "; ".join(f"{_name_of(pkg)} ({pkg}) requires {cap}" for cap, pkg in nothing)
        return LockError(
            f"stack {request.stack}: unresolvable dependency: {items}, and nothing in "
            f"{_repo_where(request.repos)} or in the base provides it.\n"
            f"The solver said:\n{text}",
            "add the repository that provides it to [source] repos, or drop the seed that needs it",
        )
    return LockError(
        f"stack {request.stack}: the seeds cannot be resolved together.\nThe solver said:\n{text}",
        "read the solver's problems above; a conflict with a base package means the "
        "seed needs a different base",
    )


def _name_of(nevra: str) -> str:
    match = _NEVRA_NAME.match(nevra.rsplit(".", 1)[0])
    return match.group(1) if match else nevra


def _file_providers(pset: Any, dep: str) -> Any:
    query = libdnf5.rpm.PackageQuery(pset)
    query.filter_file([dep])
    return query


def _reasons(session: _Session, packages: Sequence[Any]) -> dict[str, set[Reason]]:
    """For every transaction package (by NEVRA), why it is there."""
    base = session.base
    pset = libdnf5.rpm.PackageSet(base)
    for p in packages:
        pset.add(p)
    reasons: dict[str, set[Reason]] = {_pkg_nevra(p): set() for p in packages}
    for seed, text in session.request.seeds.items():
        matching = [p for p in packages if p.get_name() == seed]
        if not matching:
            query = libdnf5.rpm.PackageQuery(pset)
            query.filter_provides([seed])
            matching = list(query)
        for p in matching:
            reasons[_pkg_nevra(p)].add(Reason(seed=text))
    for p in packages:
        deps = {str(d): d for d in p.get_requires()}
        if session.request.weak_deps:
            deps.update((str(d), d) for d in p.get_recommends())
        for dep, reldep in sorted(deps.items()):
            if dep.startswith("rpmlib("):
                continue
            if dep.startswith("/"):
                providers = _file_providers(pset, dep)
            else:
                providers = libdnf5.rpm.PackageQuery(pset)
                providers.filter_provides(reldep)
            if providers.empty() and dep.startswith("/"):
                continue
            for q in providers:
                if _pkg_nevra(q) != _pkg_nevra(p):
                    reasons[_pkg_nevra(q)].add(Reason(required_by=p.get_name(), capability=dep))
        if session.request.weak_deps:
            # A package pulled in by its Supplements names the package it supplements.
            for reldep in p.get_supplements():
                supplemented = libdnf5.rpm.PackageQuery(pset)
                supplemented.filter_provides(reldep)
                for q in supplemented:
                    if _pkg_nevra(q) != _pkg_nevra(p):
                        reasons[_pkg_nevra(p)].add(
                            Reason(required_by=q.get_name(), capability=f"supplements {reldep}")
                        )
    return reasons


def path_to_seed(
    name: str, reasons: Mapping[str, set[Reason] | tuple[Reason, ...]]
) -> list[tuple[str, Reason]] | None:
    """The shortest chain of reasons from package ``name`` to a seed, or None.

    ``reasons`` maps package names to their reasons. Each step is (package, reason).
    """
    start = reasons.get(name)
    if start is None:
        return None
    queue: collections.deque[tuple[str, list[tuple[str, Reason]]]] = collections.deque([(name, [])])
    seen = {name}
    while queue:
        current, chain = queue.popleft()
        ordered = sorted(reasons.get(current, ()), key=lambda r: (r.seed is None, str(r)))
        for reason in ordered:
            if reason.seed is not None:
                return [*chain, (current, reason)]
        for reason in ordered:
            parent = reason.required_by or ""
            if parent and parent not in seen and parent in reasons:
                seen.add(parent)
                queue.append((parent, [*chain, (current, reason)]))
    return None


def _unmet_by_base(session: _Session, name: str, reasons: set[Reason]) -> list[Reason]:
    """The reasons whose capability the installed package ``name`` does not provide."""
    installed = libdnf5.rpm.PackageQuery(session.base)
    installed.filter_installed()
    installed.filter_name([name])
    unmet = []
    for reason in sorted(reasons, key=str):
        if reason.seed is not None:
            unmet.append(reason)
            continue
        providers = libdnf5.rpm.PackageQuery(installed)
        providers.filter_provides([reason.capability or ""])
        if providers.empty():
            unmet.append(reason)
    return unmet


def _base_violations(
    session: _Session, packages: Sequence[Any], reasons: Mapping[str, set[Reason]]
) -> LockError | None:
    """An error for every package the solver would bring in under a base package's name."""
    installed: dict[str, list[str]] = {}
    for bp in session.request.base_packages:
        prefix = f"{bp.epoch}:" if bp.epoch else ""
        installed.setdefault(bp.name, []).append(f"{prefix}{bp.version}-{bp.release}.{bp.arch}")
    by_name = {p.get_name(): reasons[_pkg_nevra(p)] for p in packages}
    paragraphs = []
    for p in packages:
        name = p.get_name()
        if name not in installed:
            continue
        mine = reasons[_pkg_nevra(p)]
        wanted = _unmet_by_base(session, name, mine) or sorted(mine, key=str)
        # The path to a seed through a requirement the base's version does not meet.
        narrowed = {**by_name, name: set(wanted)}
        chain = path_to_seed(name, narrowed) or []
        seed = chain[-1][0] if chain else "?"
        via = " <- ".join(
            f"{step} {reason}" if reason.seed is None else f"seed {step}" for step, reason in chain
        )
        paragraphs.append(
            f"seed {seed!r} wants {name} {_evr(p)} "
            f"({'; '.join(str(r) for r in wanted)}), but the base has "
            f"{name} {' and '.join(installed[name])} installed; the path is: {via}."
        )
    if not paragraphs:
        return None
    return LockError(
        f"stack {session.request.stack}: a seed needs a newer or different version of a "
        "base package, which a deps overlay must never replace (the base is the ABI "
        "boundary):\n" + "\n".join(paragraphs),
        "lock against a release whose packages match the base, choose an older seed "
        "that works with the base's versions, or refresh the base itself "
        '(class = "base-refresh")',
    )


def _url(p: Any, repos: Mapping[str, Repo]) -> str:
    remote = [str(u) for u in p.get_remote_locations()]
    if remote:
        return remote[0]
    repo = repos.get(p.get_repo_id())
    location = str(p.get_location())
    if repo is not None and repo.baseurl:
        return repo.baseurl[0].rstrip("/") + "/" + location
    raise LockError(
        f"package {_pkg_nevra(p)} from repository {p.get_repo_id()}: no download URL known",
        "give the repository a baseurl in stacks/repos.toml",
    )


def _locked(p: Any, reasons: set[Reason], repos: Mapping[str, Repo]) -> LockedPackage:
    checksum = p.get_checksum()
    kind = str(checksum.get_type_str()).lower()
    if kind != "sha256":
        raise LockError(
            f"package {_pkg_nevra(p)} from repository {p.get_repo_id()}: the repository "
            f"records a {kind} checksum, not sha256",
            "re-create the repository metadata with sha256 checksums "
            "(createrepo_c --checksum sha256)",
        )
    return LockedPackage(
        name=p.get_name(),
        epoch=int(p.get_epoch() or 0),
        version=p.get_version(),
        release=p.get_release(),
        arch=p.get_arch(),
        repo=p.get_repo_id(),
        url=_url(p, repos),
        sha256=str(checksum.get_checksum()),
        size=int(p.get_download_size()),
        reasons=tuple(sorted(reasons, key=str)),
        repo_release=_repo_release(p.get_repo_id(), repos),
    )


def _repo_release(repo_id: str, repos: Mapping[str, Repo]) -> str:
    repo = repos.get(repo_id)
    return repo.release or "" if repo is not None else ""


def _attempt(session: _Session, pins: Sequence[LockedPackage]) -> tuple[Any, list[str]]:
    sack = session.base.get_rpm_package_sack()
    excluded, kept = _pin_excludes(session, pins)
    sack.add_user_excludes(excluded)
    transaction = _goal(session)
    sack.remove_user_excludes(excluded)
    return transaction, kept


def resolve(request: Request, progress: Progress = stderr_progress) -> Resolution:
    """Resolve ``request``; raise :class:`LockError` with a clear message when impossible."""
    if not request.seeds:
        raise LockError(f"stack {request.stack}: no seeds to resolve", "add seeds under [seeds]")
    if not request.repos:
        raise LockError(f"stack {request.stack}: no repositories", "name repos under [source]")
    scratch = paths.cache_dir() / "dnf"
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run.", dir=scratch))
    try:
        installroot = work / "root"
        installroot.mkdir()
        ids = ", ".join(r.id for r in request.repos)
        if request.base_packages:
            progress(
                f"loading repositories ({ids}) for the base's {len(request.base_packages)} packages"
            )
            (work / "probe").mkdir()
            first = _Session(request, work / "probe", progress)
            first.load(system=False)
            headers = _base_headers(request, first)
            del first
            rpmdb.install(headers, installroot, request.arch, progress)
        progress(f"loading repositories ({ids})")
        session = _Session(request, installroot, progress)
        session.load(system=True)
        _apply_excludes(session, request.exclude)
        return _solve(session, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _solve(session: _Session, progress: Progress) -> Resolution:
    request = session.request
    pins = list(request.pins)
    dropped: list[str] = []
    progress(
        f"resolving {len(request.seeds)} seeds"
        + (f" keeping {len(pins)} pinned packages where possible" if pins else "")
    )
    transaction = None
    for _ in range(MAX_PIN_ROUNDS):
        if not pins:
            break
        candidate, kept = _attempt(session, pins)
        if not _problems(candidate):
            transaction = candidate
            break
        text = "\n".join(_problems(candidate))
        blamed = [
            p
            for p in pins
            if p.name in kept and re.search(rf"(^|[\s(]){re.escape(p.name)}-[^\s]*", text)
        ]
        if not blamed:
            break
        dropped += [p.name for p in blamed]
        pins = [p for p in pins if p not in blamed]
    if transaction is None:
        if pins:
            dropped += [p.name for p in pins]
        transaction = _goal(session)
        if _problems(transaction):
            raise _solver_error(session, transaction)
    if dropped:
        progress(f"pins not kept: {', '.join(sorted(set(dropped)))}")
    packages = [
        tp.get_package()
        for tp in transaction.get_transaction_packages()
        if tp.get_action() in INBOUND
    ]
    reasons = _reasons(session, packages)
    violation = _base_violations(session, packages, reasons)
    if violation is not None:
        raise violation
    by_name = {p.get_name(): reasons[_pkg_nevra(p)] for p in packages}
    for p in packages:
        if path_to_seed(p.get_name(), by_name) is None:
            raise LockError(
                f"stack {request.stack}: {_pkg_nevra(p)} is in the resolution but no chain of "
                "requirements leads from it to a seed",
                "this is a fexstack bug; please report it with the stack file",
            )
    repos = {r.id: r for r in request.repos}
    locked = tuple(
        sorted(
            (_locked(p, reasons[_pkg_nevra(p)], repos) for p in packages),
            key=lambda lp: (lp.name, lp.arch),
        )
    )
    notes = []
    base_names = {bp.name for bp in request.base_packages}
    in_base = sorted(s for s in request.seeds if s in base_names)
    if in_base:
        notes.append(f"seeds already in the base: {', '.join(in_base)}")
    for note in notes:
        progress(note)
    progress(f"{len(locked)} packages")
    return Resolution(packages=locked, pins_dropped=tuple(sorted(set(dropped))), notes=tuple(notes))
