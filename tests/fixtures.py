"""pytest fixtures of the fixture factory (wired in by tests/conftest.py).

``factory`` builds under $FEXSTACK_FACTORY_CACHE when set (so repeated runs reuse every
built RPM), else in a session temp folder. ``glibc`` is the real-glibc base package;
``gpg_key`` and ``other_gpg_key`` are two throwaway signing keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.factory.base import glibc_package
from testkit.factory.factory import Factory
from testkit.factory.spec import GpgKey, Package


@pytest.fixture(scope="session")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    cache = os.environ.get("FEXSTACK_FACTORY_CACHE")
    workdir = Path(cache).expanduser() if cache else tmp_path_factory.mktemp("factory")
    made = Factory(workdir).make_default()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def glibc() -> Package:
    return glibc_package()


@pytest.fixture(scope="session")
def gpg_key(factory: Factory) -> GpgKey:
    return factory.gpg_key("fexstack-test")


@pytest.fixture(scope="session")
def other_gpg_key(factory: Factory) -> GpgKey:
    return factory.gpg_key("fexstack-other")
