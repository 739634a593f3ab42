"""The fetch step: download exactly the RPMs a lock names into a content-addressed cache.

Layout under the cache (``fexstack.paths.cache_dir()`` unless told otherwise)::

    rpms/<sha256>.rpm        a verified package, named by its sha256
    rpms/<sha256>.keysets    digests of the key sets whose signature check it passed
    keyrings/<digest>/       private rpm roots holding one repo key set (overlays.signature)

A download goes to a temp name beside its target; size, sha256 and (for a repo with
gpgcheck on) the signature are verified before it is renamed into place, so a partial,
corrupt or untrusted file is never taken as done. A cache hit is re-hashed every time it
is handed back (sha256 runs at about 1.3 GB/s: 0.15 s for 200 MB, spread over the worker
threads), so a file damaged on disk is noticed and downloaded again. A file fetched while
gpgcheck was off is verified again the first time a run has gpgcheck on for its repo.

Transient failures (connection errors, timeouts, HTTP 5xx, a body that ends early) are
retried with a growing delay; anything else fails at once. Every error names the package,
the URL and what was expected against what arrived.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import fexstack
from fexstack import atomic, jsonio, paths
from fexstack.errors import FetchError
from overlays import location, signature
from overlays.lockfile import Lock, LockedPackage
from overlays.stack import Repo

log = logging.getLogger("fexstack.fetch")

RPMS = "rpms"
WORKERS = 4
TRIES = 3
BACKOFF = 0.5  # seconds before the second try; doubled for each further one
TIMEOUT = 60.0  # seconds without progress on one connection
CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.2


def rpm_path(cache: Path, sha256: str) -> Path:
    """Where the verified package with this sha256 lives in ``cache``."""
    return cache / RPMS / f"{sha256}.rpm"


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_lock` did: every package's cached file and where it came from."""

    rpms: Mapping[str, Path]  # package name -> verified file in the cache
    downloaded: tuple[str, ...]  # package names, sorted
    cached: tuple[str, ...]  # package names, sorted
    bytes_downloaded: int
    bytes_total: int
    signatures_checked: int
    seconds: float


class _Transient(Exception):
    """A failure worth another try (network trouble, 5xx, a body that ended early)."""


class _Progress:
    """Bytes and packages so far, redrawn on one terminal line; silent when not a TTY."""

    def __init__(self, stream: TextIO, stack: str, packages: int, total: int) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.stack = stack
        self.packages = packages
        self.total = total
        self.done = 0
        self.received = 0
        self._lock = threading.Lock()
        self._last = 0.0

    def add(self, nbytes: int = 0, packages: int = 0) -> None:
        with self._lock:
            self.received += nbytes
            self.done += packages
            now = time.monotonic()
            if self.live and (packages or now - self._last >= PROGRESS_INTERVAL):
                self._last = now
                self.stream.write(
                    f"\rfetch {self.stack}: {self.done}/{self.packages} packages, "
                    f"{_mib(self.received)} downloaded of up to {_mib(self.total)}\x1b[K"
                )
                self.stream.flush()

    def finish(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self.stream.flush()


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def fetch_lock(
    lock: Lock,
    *,
    repos: Mapping[str, Repo],
    cache: Path | None = None,
    record: Path | None = None,
    tries: int = TRIES,
    backoff: float = BACKOFF,
    timeout: float = TIMEOUT,
    workers: int = WORKERS,
    progress: TextIO | None = None,
) -> FetchResult:
    """Make every package of ``lock`` available, verified, in ``<cache>/rpms/``.

    ``repos`` maps the lock's repo ids to their configuration (for gpgcheck and keys).
    ``record`` (``build/<name>/fetch.json``) receives the step record. ``progress`` is
    where the progress line and the summary go (stderr by default).
    """
    started = time.monotonic()
    cache = cache if cache is not None else paths.cache_dir()
    atomic.sweep(cache / RPMS)  # partial downloads of killed fetches
    stream = progress if progress is not None else sys.stderr
    packages = sorted(lock.packages, key=lambda p: (p.name, p.arch))
    keyrings = _keyrings(packages, repos, cache)
    # A local repository's packages are locked by their location inside it: resolve it
    # against this clone's repos.toml (overlays.location).
    packages = [
        dataclasses.replace(p, url=location.resolve(p.url, repos.get(p.repo), p.name))
        for p in packages
    ]
    (cache / RPMS).mkdir(parents=True, exist_ok=True)
    meter = _Progress(stream, lock.stack, len(packages), sum(p.size for p in packages))
    fetcher = _Fetcher(cache, keyrings, meter, tries=tries, backoff=backoff, timeout=timeout)

    outcomes: dict[str, tuple[bool, bool]] = {}
    errors: list[tuple[str, FetchError]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch") as pool:
        futures = {pkg.name: pool.submit(fetcher.obtain, pkg) for pkg in packages}
        for name, future in futures.items():
            try:
                outcomes[name] = future.result()
            except FetchError as exc:
                errors.append((name, exc))
    if errors:
        meter.finish(f"fetch {lock.stack}: {len(errors)} of {len(packages)} packages failed")
        if len(errors) == 1:
            raise errors[0][1]
        raise FetchError(
            f"{len(errors)} packages could not be fetched:\n"
            + "\n".join(f"- {exc.message}" for _, exc in errors),
            errors[0][1].hint,
        )

    downloaded = tuple(sorted(n for n, (fresh, _) in outcomes.items() if fresh))
    cached = tuple(sorted(n for n, (fresh, _) in outcomes.items() if not fresh))
    by_name = {p.name: p for p in packages}
    result = FetchResult(
        rpms={p.name: rpm_path(cache, p.sha256) for p in packages},
        downloaded=downloaded,
        cached=cached,
        bytes_downloaded=sum(by_name[n].size for n in downloaded),
        bytes_total=sum(p.size for p in packages),
        signatures_checked=sum(1 for _, checked in outcomes.values() if checked),
        seconds=round(time.monotonic() - started, 3),
    )
    meter.finish(
        f"fetch {lock.stack}: {len(packages)} packages, {len(downloaded)} downloaded "
        f"({_mib(result.bytes_downloaded)}), {len(cached)} cached, {result.seconds:.1f} s"
    )
    if record is not None:
        jsonio.write(record, _record(lock, packages, repos, result), "fetch")
    return result


@dataclass(frozen=True)
class FetchedRpm:
    """One RPM the fetch step handed on, as its record lists it."""

    name: str
    sha256: str
    size: int


def fetched(record: Path) -> tuple[FetchedRpm, ...]:
    """The RPMs in the fetch step's record (``build/<name>/fetch.json``), read validated:
    the record's one reader (:func:`fetch_lock` its one writer)."""
    doc = jsonio.read_record(
        record, "fetch", error=FetchError, what="fetch record",
        hint=f"run the fetch step again: doit fetch:{record.parent.name}",
    )  # fmt: skip
    return tuple(FetchedRpm(r["name"], r["sha256"], r["size"]) for r in doc["rpms"])


def _keyrings(
    packages: list[LockedPackage], repos: Mapping[str, Repo], cache: Path
) -> dict[str, tuple[Path, signature.KeySet]]:
    """One private keyring per repo with gpgcheck on; unknown repo ids are errors."""
    keyrings: dict[str, tuple[Path, signature.KeySet]] = {}
    for pkg in packages:
        repo = repos.get(pkg.repo)
        if repo is None:
            raise FetchError(
                f"package {pkg.name} comes from repo {pkg.repo!r}, which is not configured "
                f"(known: {', '.join(sorted(repos)) or 'none'})",
                "add the repo to stacks/repos.toml and to the stack's [source] repos, or re-lock",
            )
        if repo.gpgcheck and repo.id not in keyrings:
            keyrings[repo.id] = signature.keyring(repo.id, repo.gpgkey, cache)
    return keyrings


def _record(
    lock: Lock, packages: list[LockedPackage], repos: Mapping[str, Repo], result: FetchResult
) -> dict[str, object]:
    fresh = set(result.downloaded)
    return {
        "step": "fetch",
        "stack": lock.stack,
        "fexstack": fexstack.__version__,
        "packages": len(packages),
        "downloaded": len(result.downloaded),
        "cached": len(result.cached),
        "bytes_downloaded": result.bytes_downloaded,
        "bytes_total": result.bytes_total,
        "signatures_checked": result.signatures_checked,
        "seconds": result.seconds,
        "rpms": [
            {
                "name": p.name,
                "nevra": p.nevra,
                "repo": p.repo,
                "sha256": p.sha256,
                "size": p.size,
                "source": "downloaded" if p.name in fresh else "cached",
                "gpgcheck": repos[p.repo].gpgcheck,
            }
            for p in packages
        ],
    }


class _Fetcher:
    def __init__(
        self,
        cache: Path,
        keyrings: Mapping[str, tuple[Path, signature.KeySet]],
        meter: _Progress,
        *,
        tries: int,
        backoff: float,
        timeout: float,
    ) -> None:
        self.cache = cache
        self.keyrings = keyrings
        self.meter = meter
        self.tries = max(1, tries)
        self.backoff = backoff
        self.timeout = timeout

    def obtain(self, pkg: LockedPackage) -> tuple[bool, bool]:
        """Make ``pkg`` available; (downloaded?, signature checked now?)."""
        dest = rpm_path(self.cache, pkg.sha256)
        keys = self.keyrings.get(pkg.repo)
        if dest.exists() and self._intact(pkg, dest):
            checked = False
            if keys is not None and keys[1].digest not in _keysets(dest):
                signature.verify(dest, package=pkg.name, url=pkg.url, root=keys[0], keys=keys[1])
                _add_keyset(dest, keys[1].digest)
                checked = True
            self.meter.add(packages=1)
            return False, checked
        _clear(dest)
        with atomic.temp_path(dest) as tmp:
            self._download(pkg, tmp)
            if keys is not None:
                signature.verify(tmp, package=pkg.name, url=pkg.url, root=keys[0], keys=keys[1])
        if keys is not None:
            _add_keyset(dest, keys[1].digest)
        self.meter.add(packages=1)
        return True, keys is not None

    def _intact(self, pkg: LockedPackage, path: Path) -> bool:
        """Whether the cached file still has the lock's size and sha256."""
        if path.stat().st_size != pkg.size:
            log.warning("cached %s has the wrong size; downloading it again", path)
            return False
        with open(path, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
        if actual != pkg.sha256:
            log.warning("cached %s has sha256 %s; downloading it again", path, actual)
            return False
        return True

    def _download(self, pkg: LockedPackage, tmp: Path) -> None:
        last = ""
        for attempt in range(1, self.tries + 1):
            try:
                self._download_once(pkg, tmp)
                return
            except _Transient as exc:
                last = str(exc)
                if attempt < self.tries:
                    delay = self.backoff * (2 ** (attempt - 1))
                    log.info(
                        "%s: %s; try %d of %d in %.1f s",
                        pkg.name,
                        last,
                        attempt + 1,
                        self.tries,
                        delay,
                    )
                    time.sleep(delay)
        raise FetchError(
            f"package {pkg.name}: download of {pkg.url} failed after {self.tries} tries: {last}",
            "check the network and the mirror; rerun the fetch step (verified packages are kept)",
        )

    def _download_once(self, pkg: LockedPackage, tmp: Path) -> None:
        scheme = urllib.parse.urlsplit(pkg.url).scheme
        if scheme == "file":
            source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(pkg.url).path))
            try:
                with open(source, "rb") as fh:
                    self._receive(pkg, fh, tmp)
            except OSError as exc:
                raise FetchError(
                    f"package {pkg.name}: cannot read {pkg.url}: {exc.strerror}",
                    "the lock names a local file that is gone: re-lock, or restore the repo",
                ) from exc
            return
        if scheme not in ("http", "https"):
            raise FetchError(
                f"package {pkg.name}: URL {pkg.url} is not http(s):// or file://",
                "re-lock against a repo with an http(s) or file baseurl",
            )
        request = urllib.request.Request(
            pkg.url, headers={"User-Agent": f"fexstack/{fexstack.__version__}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                self._receive(pkg, resp, tmp)
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code} {exc.reason}"
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Transient(message) from exc
            raise FetchError(
                f"package {pkg.name}: {pkg.url}: {message}",
                "the mirror no longer has this exact package: re-lock to pick up the "
                "current build, or point the repo at a mirror that keeps it",
            ) from exc
        except urllib.error.URLError as exc:
            raise _Transient(f"cannot connect: {exc.reason}") from exc
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def _receive(self, pkg: LockedPackage, source: BinaryIO, tmp: Path) -> None:
        """Copy ``source`` to ``tmp``, hashing it; refuse a wrong size or sha256."""
        digest = hashlib.sha256()
        received = 0
        with open(tmp, "wb") as out:
            while chunk := source.read(min(CHUNK, pkg.size + 1 - received)):
                received += len(chunk)
                digest.update(chunk)
                out.write(chunk)
                self.meter.add(len(chunk))
                if received > pkg.size:
                    break
            # No fsync: every use of a cached RPM checks its size and sha256 first
            # (_intact), so a file a crash cut short is fetched again; an fsync per RPM
            # cost a cold fetch of 1,000 local RPMs up to a minute on a throttled disk.
        actual = digest.hexdigest()
        if received < pkg.size:
            raise _Transient(
                f"body ended after {received} of {pkg.size} bytes "
                f"(expected sha256 {pkg.sha256}, got sha256 {actual} of the partial body)"
            )
        if received > pkg.size or actual != pkg.sha256:
            size = f"more than {pkg.size}" if received > pkg.size else str(received)
            raise FetchError(
                f"package {pkg.name}: {pkg.url} does not match the lock: expected "
                f"{pkg.size} bytes with sha256 {pkg.sha256}, got {size} bytes with "
                f"sha256 {actual}",
                "the mirror serves different bytes than were locked: if the repo was "
                "rebuilt, re-lock; otherwise the mirror or the connection is corrupt",
            )


def _keysets(rpm: Path) -> set[str]:
    marker = rpm.with_suffix(".keysets")
    try:
        return set(marker.read_text().split())
    except FileNotFoundError:
        return set()


def _add_keyset(rpm: Path, digest: str) -> None:
    marker = rpm.with_suffix(".keysets")
    known = _keysets(rpm) | {digest}
    atomic.write_text(marker, "".join(d + "\n" for d in sorted(known)))


def _clear(dest: Path) -> None:
    """Forget a cached file that failed verification, with its markers."""
    for path in (dest, dest.with_suffix(".keysets")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
