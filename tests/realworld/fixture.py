"""The session fixture ``realworld_corpus``: the real-world corpus, built on first use.

It lives in the user's fexstack cache (``<cache>/realworld/<key>``, see
:mod:`tests.realworld.corpus`), not in the per-session temp cache the other tests use,
so a machine builds it once (about 1.5 minutes on 2 cores) and later sessions verify
and reuse it (about a second). It needs root (``ldconfig -r``, the loader's chroot) and
Debian's archive: without root it skips on a developer's machine and fails when CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fexstack import paths
from tests.realworld import corpus

# Taken when pytest loads this plugin, before tests point FEXSTACK_CACHE at a temp folder.
USER_CACHE: Path = paths.cache_dir() / "realworld"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _ensure(suite: str) -> corpus.Corpus:
    if os.geteuid() != 0:
        message = "the real-world corpus needs root (run the tests through ./devroot)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return corpus.ensure(USER_CACHE, suite)


@pytest.fixture(scope="session")
def realworld_corpus() -> corpus.Corpus:
    """The verified trixie corpus: ``.repo``, ``.base_toml``, ``.packages`` and more."""
    return _ensure("trixie")


@pytest.fixture(scope="session")
def realworld_bookworm() -> corpus.Corpus:
    """The same seeds from bookworm, whose packages still ship /lib, /bin and /sbin paths."""
    return _ensure("bookworm")
