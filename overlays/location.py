"""Where a locked package is downloaded from: the ``url`` of a lock entry.

A package of a remote repository is locked with its absolute http(s) URL. A package of a
local repository (every baseurl a file:// URL) is locked with its location inside the
repository (``Packages/p/pipe-a-1-1.x86_64.rpm``, a URL relative to the repository's
baseurl), never with the absolute path of the clone or machine that locked it; when
fetching, it is resolved against the baseurl that ``stacks/repos.toml`` gives the package's
``repo`` here. So a lock committed in one clone fetches in another, wherever the
repository was moved with it.
"""

from __future__ import annotations

import posixpath
import urllib.parse
import urllib.request
from pathlib import Path

from fexstack.errors import FetchError
from overlays.stack import Repo


def is_local(repo: Repo | None) -> bool:
    """Whether every baseurl of ``repo`` is a file:// URL (a repository on this disk)."""
    return (
        repo is not None
        and bool(repo.baseurl)
        and all(urllib.parse.urlsplit(u).scheme == "file" for u in repo.baseurl)
    )


def is_relative(url: str) -> bool:
    """Whether a lock's ``url`` is a location inside its repository (no scheme)."""
    return not urllib.parse.urlsplit(url).scheme


def _local_file(url: str) -> Path:
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def portable(url: str, repo: Repo | None) -> str:
    """The lock form of ``url``: for a local repo, the file's path relative to the baseurl
    it lies under, as plain text (``Packages/l/libstdc++-14.2.1-1.fc44.x86_64.rpm``)."""
    if not is_local(repo) or is_relative(url) or urllib.parse.urlsplit(url).scheme != "file":
        return url
    assert repo is not None  # is_local says so
    path = _local_file(url).as_posix()
    for base in repo.baseurl:
        prefix = _local_file(base).as_posix().rstrip("/") + "/"
        if path.startswith(prefix):
            return path[len(prefix):]
    return url


def resolve(url: str, repo: Repo | None, package: str) -> str:
    """The absolute URL to download a lock entry from (see the module docstring).

    A relative location (plain text, quoted here) is joined to the first baseurl of
    ``repo`` under which the file exists (the first baseurl when none has it: the download
    then reports the error).
    """
    if not is_relative(url):
        return url
    parts = url.split("/")
    if url.startswith("/") or ".." in parts or posixpath.isabs(url):
        raise FetchError(
            f"package {package}: the lock's location {url!r} leaves its repository",
            "re-create the lock with doit lock:<name>",
        )
    if repo is None or not repo.baseurl:
        raise FetchError(
            f"package {package}: the lock gives the location {url!r} inside repo "
            f"{repo.id if repo else '(none)'!r}, which has no baseurl here",
            "give the repository a baseurl (a path or file:// URL) in stacks/repos.toml",
        )
    candidates = [base.rstrip("/") + "/" + urllib.parse.quote(url) for base in repo.baseurl]
    for candidate in candidates:
        if urllib.parse.urlsplit(candidate).scheme != "file" or _local_file(candidate).is_file():
            return candidate
    return candidates[0]
