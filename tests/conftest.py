"""Shared test setup.

Tests that need privileges (mounts, chroot) use the ``privileged`` fixture: without
root they skip on a developer's machine and FAIL when CI=true, so CI cannot pass by
skipping them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def privileged() -> None:
    """Require root (for mount namespaces, overlayfs, chroot)."""
    if os.geteuid() != 0:
        message = "needs root for mounts and chroot (run the tests through ./devroot as root)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point fexstack's cache at a per-session temp folder, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "fexstack-cache"
    monkeypatch.setenv("FEXSTACK_CACHE", str(cache))


# The fixture factory's pytest fixtures (factory, base trees, signing keys).
pytest_plugins = ["tests.fixtures", "tests.realworld.fixture"]
