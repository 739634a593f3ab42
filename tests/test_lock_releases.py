"""A stack taking packages from another release's repository (Bambu's WebKitGTK 4.0 flavour
on a Fedora 44 base: webkit2gtk4.0, javascriptcoregtk4.0 and libsoup 2 exist only up to
Fedora 42, FACTS.md "2026 facts"), locked with the real libdnf5 against a two-release repo
pair built by the fixture factory: ``<root>/44`` (and later ``45``) for the stack's own
release, ``<root>/41`` for the ``fedora-41`` repo, which carries its own ``release``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fexstack import jsonio
from overlays import location, lockfile, locking
from overlays.stack import Stack, load_stack
from testkit.factory.base import glibc_package, write_kiwi_packages
from testkit.factory.factory import Factory
from testkit.factory.spec import Library, Package

GLIB = Library("libglib-2.0.so.0")
SOUP2 = Library("libsoup-2.4.so.1", needs=(GLIB.soname,))
SOUP3 = Library("libsoup-3.0.so.0", needs=(GLIB.soname,))
JSC40 = Library("libjavascriptcoregtk-4.0.so.18", needs=(GLIB.soname,))
WEBKIT40 = Library(
    "libwebkit2gtk-4.0.so.37", needs=(JSC40.soname, SOUP2.soname, GLIB.soname)
)


def _pkg(name: str, lib: Library, version: str, dist: str) -> Package:
    return Package(name, version, f"1.{dist}", contents=(lib,))


F41 = (
    _pkg("glib2", GLIB, "2.82", "fc41"),
    _pkg("libsoup", SOUP2, "2.74.3", "fc41"),
    _pkg("javascriptcoregtk4.0", JSC40, "2.46.1", "fc41"),
    _pkg("webkit2gtk4.0", WEBKIT40, "2.46.1", "fc41"),
)
F44 = (
    glibc_package("2.99"),
    _pkg("glib2", GLIB, "2.86", "fc44"),
    _pkg("libsoup3", SOUP3, "3.6.5", "fc44"),
)
F45 = (glibc_package("2.99"), _pkg("glib2", GLIB, "2.88", "fc45"))
NEWER_SOUP2 = _pkg("libsoup", SOUP2, "2.74.4", "fc41")


@pytest.fixture
def root(factory: Factory, tmp_path: Path) -> Path:
    factory.register(GLIB, SOUP2, SOUP3, JSC40, WEBKIT40)
    repos = tmp_path / "repos"
    factory.repo(repos / "41", F41)
    factory.repo(repos / "44", F44)
    factory.repo(repos / "45", F45)
    return repos


def _project(tmp_path: Path, root: Path, release: str = "44", keys: Path | None = None) -> Stack:
    stacks = tmp_path / "stacks"
    (stacks / "bases").mkdir(parents=True, exist_ok=True)
    base_list = write_kiwi_packages(tmp_path / "base.packages", [glibc_package("2.99")])
    (stacks / "bases" / "f44.toml").write_text(
        f'[base]\nimage = "base.erofs"\npackages = "{base_list}"\n'
    )
    url = root.as_uri() + "/$releasever"
    sign = "" if keys is None else (
        f'gpgcheck = true\ngpgkey = ["{keys}/RPM-GPG-KEY-fedora-$releasever-primary"]\n'
    )
    (stacks / "repos.toml").write_text(
        f'[repos.fedora]\nbaseurl = ["{url}"]\n{sign}\n'
        f'[repos.fedora-41]\nbaseurl = ["{url}"]\nrelease = "41"\n{sign}'
    )
    (stacks / "bambu.toml").write_text(
        '[stack]\nbase = "f44"\n\n'
        f'[source]\nrelease = "{release}"\nrepos = ["fedora", "fedora-41"]\n\n'
        '[seeds]\n"webkit2gtk4.0" = "libwebkit2gtk-4.0.so.37, linked by the fedora AppImage"\n'
    )
    return load_stack(stacks, "bambu")


def _lock(tmp_path: Path, stack: Stack) -> locking.LockResult:
    return locking.lock_stack(
        stack, lock_path=tmp_path / "stacks" / "bambu.lock.toml", build_dir=tmp_path / "build"
    )


def _where(lock: lockfile.Lock) -> dict[str, tuple[str, str, str]]:
    return {p.name: (p.repo, p.repo_release, p.version) for p in lock.packages}


def test_a_repo_of_another_release_expands_with_its_own_release(
    tmp_path: Path, root: Path
) -> None:
    stack = _project(tmp_path, root)
    repos = {r.id: r for r in stack.repos}
    assert repos["fedora"].release == "44" and repos["fedora"].baseurl[0].endswith("/44")
    assert repos["fedora-41"].release == "41" and repos["fedora-41"].baseurl[0].endswith("/41")


def test_lock_records_repo_and_release_per_package(
    tmp_path: Path, root: Path, factory: Factory
) -> None:
    stack = _project(tmp_path, root)
    lock = _lock(tmp_path, stack).lock
    assert _where(lock) == {
        "glib2": ("fedora", "44", "2.86"),  # the newer release's glib, not 41's
        "javascriptcoregtk4.0": ("fedora-41", "41", "2.46.1"),
        "libsoup": ("fedora-41", "41", "2.74.3"),
        "webkit2gtk4.0": ("fedora-41", "41", "2.46.1"),
    }
    assert "libsoup3" not in _where(lock)  # the 4.0 flavour never pulls libsoup 3
    soup = lock.package("libsoup")
    assert soup is not None
    # Locked by its location inside the file:// repository, resolved in the 41 repo's tree.
    repos = {r.id: r for r in stack.repos}
    url = location.resolve(soup.url, repos[soup.repo], soup.name)
    assert url.startswith((root / "41").as_uri())
    text = (tmp_path / "stacks" / "bambu.lock.toml").read_text()
    assert text.count('repo_release = "41"') == 3 and text.count('repo_release = "44"') == 1
    assert lockfile.read(tmp_path / "stacks" / "bambu.lock.toml") == lock

    # No churn per repo: newer libsoup (41) and glib2 (44) appear; a re-lock keeps both pins.
    factory.repo(root / "41", [NEWER_SOUP2])
    factory.repo(root / "44", [_pkg("glib2", GLIB, "2.87", "fc44")])
    text_before = (tmp_path / "stacks" / "bambu.toml").read_text()
    (tmp_path / "stacks" / "bambu.toml").write_text(text_before.replace("linked by", "needed by"))
    again = _lock(tmp_path, load_stack(tmp_path / "stacks", "bambu"))
    assert not again.up_to_date and again.diff.empty and _where(again.lock) == _where(lock)

    # The stack moves to release 45: pins of fedora (44) go, those of fedora-41 stay.
    moved = _lock(tmp_path, _project(tmp_path, root, release="45"))
    assert _where(moved.lock) == {**_where(lock), "glib2": ("fedora", "45", "2.88")}
    assert [(c.name, c.old_repo, c.new_repo) for c in moved.diff.changed] == [
        ("glib2", "fedora@44", "fedora@45")
    ]
    doc = jsonio.read(tmp_path / "build" / locking.DIFF_FILE)
    jsonio.validate(doc, "lockdiff")
    assert doc["changed"][0]["new_repo"] == "fedora@45" and doc["unchanged"] == 3
    assert doc["pins_dropped"] == []


def test_an_old_lock_without_repo_release_reads_as_the_lock_release(tmp_path: Path) -> None:
    path = tmp_path / "old.lock.toml"
    path.write_text(
        '[lock]\nformat = 1\nstack = "s"\nrelease = "44"\narch = "x86_64"\n'
        'inputs = "sha256:0"\nbase = "sha256:0"\n\n[[package]]\nname = "a"\nepoch = 0\n'
        'version = "1"\nrelease = "1.fc44"\narch = "x86_64"\nrepo = "fedora"\n'
        'url = "file:///a.rpm"\nsha256 = "00"\nsize = 1\nreasons = [{ seed = "x" }]\n'
    )
    assert lockfile.read(path).packages[0].repo_release == "44"


def test_each_release_is_verified_with_its_own_key(factory: Factory, tmp_path: Path) -> None:
    """Like Fedora: fedora-41 is signed with RPM-GPG-KEY-fedora-41-primary, fedora (44) with
    the 44 key; the repo's own release picks the key, and fetch verifies each package."""
    import io
    import shutil

    from fexstack.errors import FetchError
    from overlays import fetch

    factory.register(GLIB, SOUP2, SOUP3, JSC40, WEBKIT40)
    key41, key44 = factory.gpg_key("fedora-41"), factory.gpg_key("fedora-44")
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(key41.public_key, keys / "RPM-GPG-KEY-fedora-41-primary")
    shutil.copy(key44.public_key, keys / "RPM-GPG-KEY-fedora-44-primary")
    root = tmp_path / "signed"
    factory.repo(root / "41", F41, sign_with=key41)
    factory.repo(root / "44", F44, sign_with=key44)
    stack = _project(tmp_path, root, keys=keys)
    repos = {r.id: r for r in stack.repos}
    assert repos["fedora-41"].gpgkey == (str(keys / "RPM-GPG-KEY-fedora-41-primary"),)
    assert repos["fedora"].gpgkey == (str(keys / "RPM-GPG-KEY-fedora-44-primary"),)
    lock = _lock(tmp_path, stack).lock
    result = fetch.fetch_lock(lock, repos=repos, cache=tmp_path / "cache", progress=io.StringIO())
    assert sorted(result.rpms) == sorted(p.name for p in lock.packages)
    assert result.signatures_checked == 4
    # the 44 key alone cannot verify Fedora 41's packages
    wrong = {**repos, "fedora-41": replace(repos["fedora-41"], gpgkey=repos["fedora"].gpgkey)}
    with pytest.raises(FetchError, match=r"webkit2gtk4\.0|libsoup|javascriptcoregtk4\.0"):
        fetch.fetch_lock(lock, repos=wrong, cache=tmp_path / "cache2", progress=io.StringIO())
