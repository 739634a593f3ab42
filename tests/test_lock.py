"""The lock step against real fixture repositories with the real libdnf5 (no mocks).

One module-scoped repository holds every fixture package; tests that change a repository
work on their own copy. Stacks are written as TOML and loaded with the stack loader, so
the Stack-level entry point (:func:`overlays.locking.lock_stack`) is what runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from fexstack import jsonio
from fexstack.errors import FetchError, FexstackError, LockError
from overlays import location, lockfile, locking, why
from overlays.lockfile import Reason
from overlays.stack import Repo, Stack, load_stack
from testkit.factory.base import glibc_package, write_kiwi_packages
from testkit.factory.factory import Factory
from testkit.factory.spec import File, Library, Package

GLIBC = glibc_package("2.99")
GLIBC3 = glibc_package("3.0")
BAZ_LIB = Library("libbaz.so.1")
BAR_LIB = Library("libbar.so.1", needs=("libbaz.so.1",))
FOO_LIB = Library("libfoo.so.1", needs=("libbar.so.1",))
QUX_LIB = Library("libqux.so.1")
EXTRA_LIB = Library("libextra.so.1")
BAZ = Package("libbaz", contents=(BAZ_LIB,))
BAR = Package("libbar", contents=(BAR_LIB,))
FOO = Package("libfoo", contents=(FOO_LIB,))
QUX = Package("libqux", "1.0", contents=(QUX_LIB,))
QUX_NEWER = Package("libqux", "1.1", contents=(QUX_LIB,))
EXTRA = Package("libextra", contents=(EXTRA_LIB,))
NEEDS_NEW_GLIBC = Package(
    "needs-new-glibc",
    contents=(File("/usr/share/needs-new-glibc/README", b"x\n"),),
    requires=("glibc >= 3.0",),
)
WEAK_USER = Package(
    "weak-user",
    contents=(File("/usr/share/weak-user/README", b"x\n"),),
    recommends=("weak-extra",),
)
WEAK_EXTRA = Package("weak-extra", contents=(File("/usr/share/weak-extra/README", b"x\n"),))
WEAK_PLUGIN = Package(
    "weak-plugin",
    contents=(File("/usr/share/weak-plugin/README", b"x\n"),),
    supplements=("weak-user",),
)
BROKEN = Package(
    "broken",
    contents=(File("/usr/share/broken/README", b"x\n"),),
    requires=("libnothing.so.1()(64bit)",),
)
ALL = (
    GLIBC,
    GLIBC3,
    BAZ,
    BAR,
    FOO,
    QUX,
    EXTRA,
    NEEDS_NEW_GLIBC,
    WEAK_USER,
    WEAK_EXTRA,
    WEAK_PLUGIN,
    BROKEN,
)

SEEDS = {"libfoo": "the app links libfoo"}


@pytest.fixture(scope="module")
def repo(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    factory.register(BAZ_LIB, BAR_LIB, FOO_LIB, QUX_LIB, EXTRA_LIB)
    return factory.repo(tmp_path_factory.mktemp("lockrepo") / "repo", ALL)


@pytest.fixture(scope="module")
def base_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kiwi_packages(tmp_path_factory.mktemp("base") / "base.packages", [GLIBC])


def _toml_list(items: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


class Project:
    """A stacks folder in a temp dir: repos.toml, one base, and stacks written on demand."""

    def __init__(self, root: Path, repos: dict[str, str], base_list: Path | None) -> None:
        self.root = root
        self.stacks = root / "stacks"
        (self.stacks / "bases").mkdir(parents=True)
        self.build = root / "build"
        text = "".join(f'[repos.{rid}]\nbaseurl = ["{url}"]\n\n' for rid, url in repos.items())
        (self.stacks / "repos.toml").write_text(text)
        packages = f'packages = "{base_list}"\n' if base_list is not None else ""
        (self.stacks / "bases" / "test.toml").write_text(
            f'[base]\nimage = "image.erofs"\n{packages}'
        )

    def write(
        self,
        seeds: dict[str, str] | None = None,
        *,
        name: str = "demo",
        repos: tuple[str, ...] = ("fix",),
        exclude: tuple[str, ...] = (),
        weak_deps: bool | None = None,
        description: str = "a demo stack",
        comment: str = "",
    ) -> Stack:
        lines = [
            f"# {comment}" if comment else "",
            "[stack]",
            f'description = "{description}"',
            'base = "test"',
            "",
            "[source]",
            'release = "44"',
            f"repos = {_toml_list(repos)}",
        ]
        if weak_deps is not None:
            lines.append(f"weak_deps = {'true' if weak_deps else 'false'}")
        lines += ["", "[seeds]"]
        lines += [f'{k} = "{v}"' for k, v in (seeds if seeds is not None else SEEDS).items()]
        if exclude:
            lines += ["", "[exclude]", f"packages = {_toml_list(exclude)}"]
        (self.stacks / f"{name}.toml").write_text("\n".join(lines) + "\n")
        return load_stack(self.stacks, name)

    def lock_path(self, name: str = "demo") -> Path:
        return self.stacks / f"{name}.lock.toml"

    def lock(self, stack: Stack, **kwargs: object) -> locking.LockResult:
        return locking.lock_stack(
            stack,
            lock_path=self.lock_path(stack.name),
            build_dir=self.build / stack.name,
            **kwargs,  # type: ignore[arg-type]
        )

    def diff_json(self, name: str = "demo") -> dict[str, object]:
        doc: dict[str, object] = jsonio.read(self.build / name / locking.DIFF_FILE)
        jsonio.validate(doc, "lockdiff")
        return doc


@pytest.fixture
def make_project(tmp_path: Path, repo: Path, base_list: Path) -> Callable[..., Project]:
    count = iter(range(1000))

    def make(repos: dict[str, str] | None = None, base: Path | None = base_list) -> Project:
        return Project(tmp_path / f"p{next(count)}", repos or {"fix": repo.as_uri()}, base)

    return make


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    return make_project()


def _names(lock: lockfile.Lock) -> list[str]:
    return [p.name for p in lock.packages]


def _copy_repo(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest)
    return dest


# --- resolution -------------------------------------------------------------------------


def test_soname_chain_has_reasons_and_leaves_base_packages_out(project: Project) -> None:
    result = project.lock(project.write())
    lock = lockfile.read(project.lock_path())
    assert result.changed and lock == result.lock
    # glibc provides libc.so.6()(64bit), which every library needs, but the base has it.
    assert _names(lock) == ["libbar", "libbaz", "libfoo"]
    pkgs = {p.name: p for p in lock.packages}
    assert pkgs["libfoo"].reasons == (Reason(seed="the app links libfoo"),)
    assert pkgs["libbar"].reasons == (
        Reason(required_by="libfoo", capability="libbar.so.1()(64bit)"),
    )
    assert pkgs["libbaz"].reasons == (
        Reason(required_by="libbar", capability="libbaz.so.1()(64bit)"),
    )
    assert lock.release == "44" and lock.arch == "x86_64" and lock.stack == "demo"
    assert lock.inputs.startswith("sha256:") and lock.base.startswith("sha256:")
    assert why.why(lock, "libbaz") == [
        "libbaz-1.0-1.x86_64 <- required by libbar for libbaz.so.1()(64bit) "
        '<- required by libfoo for libbar.so.1()(64bit) <- seed libfoo: "the app links libfoo"'
    ]
    assert why.why(lock, "libfoo") == ['libfoo-1.0-1.x86_64 <- seed libfoo: "the app links libfoo"']
    with pytest.raises(LockError, match="glibc is not in the lock"):
        why.why(lock, "glibc")


def test_without_a_base_list_glibc_is_locked(make_project: Callable[..., Project]) -> None:
    project = make_project(base=None)
    lock = project.lock(project.write()).lock
    assert "glibc" in _names(lock)
    assert lock.package("glibc").reasons  # type: ignore[union-attr]


def test_why_command_prints_the_path(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.lock(project.write())
    capsys.readouterr()
    assert why.main(["--stacks-dir", str(project.stacks), "demo", "libbar"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "libbar-1.0-1.x86_64 <- required by libfoo for libbar.so.1()(64bit) "
        '<- seed libfoo: "the app links libfoo"\n'
    )
    assert why.main(["--stacks-dir", str(project.stacks), "demo", "libba"]) == 1
    assert "did you mean" in capsys.readouterr().err


def test_sha256_and_size_match_the_file_at_the_url(project: Project) -> None:
    stack = project.write({"libfoo": "x", "libqux": "y"})
    lock = project.lock(stack).lock
    assert len(lock.packages) == 4
    repos = {r.id: r for r in stack.repos}
    for locked in lock.packages:
        # A local repository's package is locked by its location inside the repository
        # (no path of this clone); fetching resolves it against repos.toml's baseurl.
        assert location.is_relative(locked.url) and str(project.root) not in locked.url
        pkg = dataclasses.replace(
            locked, url=location.resolve(locked.url, repos[locked.repo], locked.name)
        )
        assert pkg.url.startswith("file:///") and pkg.url.endswith(".rpm")
        with urllib.request.urlopen(pkg.url) as fh:
            data = fh.read()
        assert hashlib.sha256(data).hexdigest() == pkg.sha256, pkg.name
        assert len(data) == pkg.size
        assert Path(urllib.parse.urlparse(pkg.url).path).name == (
            f"{pkg.name}-{pkg.version}-{pkg.release}.{pkg.arch}.rpm"
        )


def test_seed_needing_newer_glibc_is_refused(project: Project) -> None:
    stack = project.write({"libfoo": "x", "needs-new-glibc": "wants the new libc"})
    with pytest.raises(LockError) as info:
        project.lock(stack)
    message = str(info.value)
    assert "needs-new-glibc" in message
    assert "glibc 3.0-1" in message and "2.99-1" in message
    assert "glibc >= 3.0" in message
    assert "seed 'needs-new-glibc' wants glibc 3.0-1" in message
    assert "libc.so.6" not in message  # the base's glibc meets those requirements
    assert info.value.hint
    assert not project.lock_path().exists()


def test_weak_deps_off_by_default_and_switchable(project: Project) -> None:
    off = project.lock(project.write({"weak-user": "x"})).lock
    assert _names(off) == ["weak-user"]
    on = project.lock(project.write({"weak-user": "x"}, weak_deps=True)).lock
    assert _names(on) == ["weak-extra", "weak-plugin", "weak-user"]
    assert on.package("weak-extra").reasons == (  # type: ignore[union-attr]
        Reason(required_by="weak-user", capability="weak-extra"),
    )
    assert on.package("weak-plugin").reasons == (  # type: ignore[union-attr]
        Reason(required_by="weak-user", capability="supplements weak-user"),
    )
    assert why.why(on, "weak-plugin") == [
        "weak-plugin-1.0-1.x86_64 <- required by weak-user for supplements weak-user "
        '<- seed weak-user: "x"'
    ]


# --- same inputs, same bytes; no churn ---------------------------------------------------


def test_relock_with_unchanged_inputs_writes_nothing_and_loads_no_repo(
    make_project: Callable[..., Project],
    repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    own = _copy_repo(repo, tmp_path / "own-repo")
    project = make_project({"fix": own.as_uri()})
    project.lock(project.write())
    path = project.lock_path()
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    capsys.readouterr()
    shutil.rmtree(own)  # any repository load would now fail
    again = project.lock(project.write(comment="a new comment", description="edited"))
    assert again.up_to_date and not again.changed and again.diff.empty
    assert "lock up to date" in capsys.readouterr().err
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    doc = project.diff_json()
    assert doc["up_to_date"] is True and doc["added"] == [] and doc["unchanged"] == 3


def test_a_changed_input_relocks_to_the_same_packages(project: Project) -> None:
    first = project.lock(project.write()).lock
    second = project.lock(project.write({"libfoo": "a better reason"}))
    assert not second.up_to_date and second.changed
    assert second.lock.inputs != first.inputs
    assert second.diff.empty and second.diff.unchanged == 3
    assert second.lock.package("libfoo").reasons == (  # type: ignore[union-attr]
        Reason(seed="a better reason"),
    )
    # Locking the same inputs from scratch gives the same bytes.
    data = project.lock_path().read_bytes()
    project.lock_path().unlink()
    project.lock(project.write({"libfoo": "a better reason"}))
    assert project.lock_path().read_bytes() == data


def test_relock_after_seed_edit_keeps_pins_and_reports_the_diff(
    make_project: Callable[..., Project],
    repo: Path,
    factory: Factory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    own = _copy_repo(repo, tmp_path / "own-repo")
    project = make_project({"fix": own.as_uri()})
    first = project.lock(project.write({"libfoo": "x", "libqux": "y"})).lock
    assert first.package("libqux").version == "1.0"  # type: ignore[union-attr]
    factory.repo(own, [QUX_NEWER])  # a newer libqux appears in the repository
    capsys.readouterr()
    stack = project.write({"libfoo": "x", "libqux": "y", "libextra": "z"})
    result = project.lock(stack)
    assert result.lock.package("libqux").version == "1.0"  # type: ignore[union-attr]
    assert [p.name for p in result.diff.added] == ["libextra"]
    assert result.diff.removed == () and result.diff.changed == ()
    err = capsys.readouterr().err
    assert "1 added, 0 removed, 0 changed, 4 unchanged" in err
    assert "+ libextra-1.0-1.x86_64" in err
    doc = project.diff_json()
    assert doc["added"] == [
        {"name": "libextra", "arch": "x86_64", "evr": "1.0-1", "nevra": "libextra-1.0-1.x86_64"}
    ]
    assert doc["removed"] == [] and doc["changed"] == [] and doc["unchanged"] == 4
    assert doc["previous_inputs"] == first.inputs and doc["up_to_date"] is False

    # Removing a seed drops what only it needed, still without touching libqux.
    fewer = project.lock(project.write({"libqux": "y", "libextra": "z"}))
    assert sorted(p.name for p in fewer.diff.removed) == ["libbar", "libbaz", "libfoo"]
    assert fewer.lock.package("libqux").version == "1.0"  # type: ignore[union-attr]

    # A fresh lock (no previous lock to keep pins from) takes the newest libqux.
    fresh = make_project({"fix": own.as_uri()})
    latest = fresh.lock(fresh.write({"libfoo": "x", "libqux": "y", "libextra": "z"}))
    assert latest.lock.package("libqux").version == "1.1"  # type: ignore[union-attr]
    assert fresh.diff_json()["previous_inputs"] is None


def test_a_pin_that_no_longer_satisfies_is_changed(
    make_project: Callable[..., Project],
    repo: Path,
    factory: Factory,
    tmp_path: Path,
) -> None:
    own = _copy_repo(repo, tmp_path / "own-repo")
    project = make_project({"fix": own.as_uri()})
    project.lock(project.write({"libqux": "y"}))
    factory.repo(own, [QUX_NEWER])
    (own / QUX.filename).unlink()  # the pinned version is gone from the repository
    factory.repo(own, [])
    result = project.lock(project.write({"libqux": "another reason"}))
    assert result.lock.package("libqux").version == "1.1"  # type: ignore[union-attr]
    assert [(c.old, c.new) for c in result.diff.changed] == [
        ("libqux-1.0-1.x86_64", "libqux-1.1-1.x86_64")
    ]
    assert project.diff_json()["changed"] == [
        {
            "name": "libqux",
            "arch": "x86_64",
            "old": "1.0-1.x86_64",
            "new": "1.1-1.x86_64",
            "same_version_new_file": False,
        }
    ]


# --- errors ---------------------------------------------------------------------------


def test_unknown_seed(project: Project) -> None:
    with pytest.raises(LockError) as info:
        project.lock(project.write({"libfooo": "typo"}))
    message = str(info.value)
    assert "libfooo" in message and "fix (file://" in message and "did you mean libfoo" in message
    assert not project.lock_path().exists()


def test_unresolvable_dependency(project: Project) -> None:
    with pytest.raises(LockError) as info:
        project.lock(project.write({"broken": "x"}))
    message = str(info.value)
    assert "broken" in message and "libnothing.so.1()(64bit)" in message
    assert "unresolvable dependency" in message
    assert not project.lock_path().exists()


def test_dependency_only_an_excluded_package_provides(project: Project) -> None:
    with pytest.raises(LockError) as info:
        project.lock(project.write(exclude=("libba[z]",)))
    message = str(info.value)
    assert "excluded" in message and "libbaz" in message and "libbaz.so.1()(64bit)" in message
    assert not project.lock_path().exists()


def test_unreachable_repository(
    make_project: Callable[..., Project], repo: Path, tmp_path: Path
) -> None:
    gone = (tmp_path / "no-such-repo").as_uri()
    project = make_project({"fix": repo.as_uri(), "gone": gone})
    with pytest.raises(LockError) as info:
        project.lock(project.write(repos=("fix", "gone")))
    message = str(info.value)
    assert "gone" in message and gone in message
    assert f"fix ({repo.as_uri()})" not in message
    assert not project.lock_path().exists()


def test_malformed_base_list(make_project: Callable[..., Project], tmp_path: Path) -> None:
    bad = tmp_path / "bad.packages"
    bad.write_text("glibc|(none)|2.99|1|x86_64|(none)|LGPL\nbash|(none)|5.2\n")
    project = make_project(base=bad)
    with pytest.raises(FexstackError) as info:
        project.lock(project.write())
    assert str(bad) in str(info.value) and "line 2" in str(info.value)
    assert not project.lock_path().exists()


NEEDS_NEW_QUX = Package(
    "needs-new-qux",
    contents=(File("/usr/share/needs-new-qux/README", b"x\n"),),
    requires=("libqux >= 1.1",),
)


def test_a_pin_that_a_new_seed_cannot_use_is_dropped(
    make_project: Callable[..., Project],
    repo: Path,
    factory: Factory,
    tmp_path: Path,
) -> None:
    own = _copy_repo(repo, tmp_path / "own-repo")
    project = make_project({"fix": own.as_uri()})
    project.lock(project.write({"libfoo": "x", "libqux": "y"}))
    factory.repo(own, [QUX_NEWER, NEEDS_NEW_QUX])
    result = project.lock(project.write({"libfoo": "x", "libqux": "y", "needs-new-qux": "z"}))
    assert result.lock.package("libqux").version == "1.1"  # type: ignore[union-attr]
    assert result.pins_dropped == ("libqux",)
    assert [p.name for p in result.diff.added] == ["needs-new-qux"]
    assert [c.name for c in result.diff.changed] == ["libqux"]
    assert result.diff.unchanged == 3  # libfoo, libbar, libbaz kept their pins
    assert project.diff_json()["pins_dropped"] == ["libqux"]


def test_base_package_at_a_version_the_repo_lacks_still_counts(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    older = write_kiwi_packages(tmp_path / "older.packages", [glibc_package("2.98")])
    project = make_project(base=older)
    lock = project.lock(project.write()).lock
    assert _names(lock) == ["libbar", "libbaz", "libfoo"]


def test_a_seed_the_base_already_has_is_left_out(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = project.lock(project.write({"glibc": "the C library", "libfoo": "x"})).lock
    assert _names(lock) == ["libbar", "libbaz", "libfoo"]
    assert "seeds already in the base: glibc" in capsys.readouterr().err


def test_why_says_in_the_base_for_a_seed_the_base_carries(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like gtk3 in stacks/bambu.toml: a seed Fedora's FEX RootFS already carries stays in
    the stack as documentation, and ``doit why:<stack> --package P`` says so."""
    from overlays.project import Project as Checkout
    from tasks import commands as tasks

    stack = project.write({"glibc": "the C library", "libfoo": "x"})
    lock = project.lock(stack).lock
    assert lock.package("glibc") is None
    base = locking.base_packages_of(stack)
    assert why.why(lock, "glibc", base, stack.seeds) == [
        'glibc-2.99-1.x86_64: in the base <- seed glibc: "the C library" '
        "(documentation: nothing to lock)"
    ]
    capsys.readouterr()
    tasks.why(Checkout(project.root), "demo", "glibc")
    assert capsys.readouterr().out.startswith("glibc-2.99-1.x86_64: in the base <- seed glibc")
    tasks.why(Checkout(project.root), "demo", "libbaz")  # a locked package: its path
    assert "<- seed libfoo" in capsys.readouterr().out
    with pytest.raises(LockError, match="libnope is not in the lock"):
        tasks.why(Checkout(project.root), "demo", "libnope")
    capsys.readouterr()
    assert why.main(["--stacks-dir", str(project.stacks), "demo", "glibc"]) == 0
    assert capsys.readouterr().out.startswith("glibc-2.99-1.x86_64: in the base <- seed glibc")


# --- locks of local repositories travel (issue 17) ----------------------------------------


def test_local_repo_lock_names_locations_and_resolves_in_any_clone(
    make_project: Callable[..., Project], repo: Path, tmp_path: Path
) -> None:
    one = make_project()
    shutil.copytree(repo, one.root / "repo")
    (one.stacks / "repos.toml").write_text('[repos.fix]\nbaseurl = ["../repo"]\n')
    result = one.lock(one.write())
    text = one.lock_path().read_text()
    assert str(one.root) not in text and "file:" not in text
    pkg = result.lock.package("libfoo")
    assert pkg is not None and pkg.url == "libfoo-1.0-1.x86_64.rpm"
    # The same files at another path: the lock is up to date there, byte for byte, and
    # its locations resolve into that clone's repository.
    two = tmp_path / "elsewhere" / "clone"
    shutil.copytree(one.root, two)
    shutil.rmtree(one.root)
    stack = load_stack(two / "stacks", "demo")
    again = locking.lock_stack(stack, lock_path=two / "stacks/demo.lock.toml", build_dir=two / "b")
    assert again.up_to_date and not again.changed
    assert (two / "stacks/demo.lock.toml").read_text() == text
    url = location.resolve(pkg.url, stack.repos[0], pkg.name)
    assert url == (two / "repo" / "libfoo-1.0-1.x86_64.rpm").as_uri()
    with urllib.request.urlopen(url) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == pkg.sha256


def test_an_older_lock_with_absolute_local_urls_is_made_portable(project: Project) -> None:
    stack = project.write()
    first = project.lock(stack).lock
    repo = stack.repos[0]
    absolute = tuple(
        dataclasses.replace(p, url=location.resolve(p.url, repo, p.name)) for p in first.packages
    )
    assert all(p.url.startswith("file:///") for p in absolute)
    lockfile.write(project.lock_path(), dataclasses.replace(first, packages=absolute))
    result = project.lock(stack)
    assert result.up_to_date and result.diff.empty
    assert lockfile.read(project.lock_path()) == first
    # Remote repositories keep their absolute URLs.
    remote = Repo(id="fix", baseurl=("https://example.invalid/repo/",))
    assert location.portable("https://example.invalid/repo/a.rpm", remote) == (
        "https://example.invalid/repo/a.rpm"
    )


def test_location_resolution_and_its_errors(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    (full / "Packages").mkdir(parents=True)
    (full / "Packages" / "a.rpm").write_bytes(b"x")
    mirrored = Repo(id="m", baseurl=(empty.as_uri(), full.as_uri()))
    # The first baseurl holding the file; the first one when none does.
    assert location.resolve("Packages/a.rpm", mirrored, "a") == full.as_uri() + "/Packages/a.rpm"
    assert location.resolve("Packages/b.rpm", mirrored, "b") == empty.as_uri() + "/Packages/b.rpm"
    assert location.portable(full.as_uri() + "/Packages/a.rpm", mirrored) == "Packages/a.rpm"
    # Names are kept readable in the lock and quoted only in the URL they resolve to.
    odd = "Packages/libstdc++-1.0^git1-1 x.rpm"
    (full / odd).write_bytes(b"x")
    assert location.portable((full / odd).as_uri(), mirrored) == odd
    resolved = location.resolve(odd, mirrored, "odd")
    assert resolved == (full / odd).as_uri()
    with urllib.request.urlopen(resolved) as fh:
        assert fh.read() == b"x"
    for bad in ("../outside.rpm", "Packages/../../x.rpm", "/etc/passwd"):
        with pytest.raises(FetchError, match="leaves its repository") as info:
            location.resolve(bad, mirrored, "evil")
        assert "package evil" in info.value.message
    with pytest.raises(FetchError, match="no baseurl here") as info:
        location.resolve("Packages/a.rpm", Repo(id="meta", metalink="https://m"), "a")
    assert info.value.hint and "stacks/repos.toml" in info.value.hint
    with pytest.raises(FetchError, match="no baseurl here"):
        location.resolve("Packages/a.rpm", None, "a")
