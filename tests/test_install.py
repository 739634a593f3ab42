"""Install semantics of the stage step: payload paths go through the base's directory
symlinks as ``rpm -i`` into the base would write them; tool executables are left out of
deps overlays as the FEX RootFS leaves them out; the host is asked about them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from fexstack import command, jsonio
from fexstack.errors import StageError
from invariants.check import check_tree
from invariants.policy import CheckPolicy
from invariants.view import Layer, View
from overlays import fetch, hostpkgs, staging
from overlays.install import InstallRoot
from overlays.lockfile import Lock
from testkit.factory import Executable, Factory, File, Library, Package, Symlink
from tests.craft_rpm import lock_of, locked
from tests.invariants_support import base_layer, fedora_base
from tests.test_stage import REPOS

OLD64 = Library("libold64.so.1", path="/lib64/libold64.so.1")
OLDGNU = Library("liboldgnu.so.1", path="/lib/x86_64-linux-gnu/liboldgnu.so.1")
# An old third-party package: libraries in /lib64 and /lib, a program that finds the
# /lib64 one through its RPATH, and a tool in /bin.
OLD_THIRD_PARTY = Package(
    "old-third-party",
    summary="a vendor RPM from before the /usr merge",
    contents=(
        OLD64,
        OLDGNU,
        Symlink("/lib64/libold64.so", "libold64.so.1"),
        Executable("/opt/old/bin/oldapp", rpath="/lib64:/lib/x86_64-linux-gnu",
                   needs=("libold64.so.1",
                          "liboldgnu.so.1")),
        File("/bin/oldtool", b"#!/bin/sh\necho old\n", 0o755),
        File("/usr/sbin/oldd", b"#!/bin/sh\necho daemon\n", 0o755),
    ),
    autoreq=False,
)


def tree_with_links(root: Path) -> Path:
    """A merged-/usr tree: /lib, /lib64, /bin point into /usr; odd links beside them."""
    for folder in ("usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/bin", "opt"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").symlink_to("/usr/lib64")  # absolute: rpm's chroot re-roots it
    (root / "bin").symlink_to("usr/bin")
    (root / "opt" / "out").symlink_to("../../../../tmp")  # leaves the root
    (root / "opt" / "file").write_text("x")
    (root / "opt" / "tofile").symlink_to("file")
    (root / "opt" / "loop").symlink_to("loop")
    return root


def test_install_paths_follow_the_lower_layers_directory_symlinks(tmp_path: Path) -> None:
    view = View([Layer("base", tree_with_links(tmp_path / "base"), "base")])
    root = InstallRoot(view)
    assert root.place("/lib/x86_64-linux-gnu/libfoo.so", "file") == (
        "/usr/lib/x86_64-linux-gnu/libfoo.so")
    assert root.place("/lib64/libbar.so.1", "file") == "/usr/lib64/libbar.so.1"
    assert root.place("/lib64/libbar.so", "symlink") == "/usr/lib64/libbar.so"
    assert root.place("/lib64", "dir") == "/usr/lib64"  # a directory entry over the link
    assert root.place("/lib64/new/deeper", "dir") == "/usr/lib64/new/deeper"
    assert root.place("/bin/tool", "file") == "/usr/bin/tool"
    # a non-directory entry replaces the link itself (precedence reports it), not its target
    assert root.place("/lib64", "file") == "/lib64"
    # never followed: a link leaving the root, a link to a file, a loop
    assert root.place("/opt/out/evil.so", "file") == "/opt/out/evil.so"
    assert root.place("/opt/tofile/x", "file") == "/opt/tofile/x"
    assert root.place("/opt/loop/x", "file") == "/opt/loop/x"
    assert root.place("/usr/lib64/plain.so", "file") == "/usr/lib64/plain.so"
    assert InstallRoot(None).place("/lib64/libbar.so.1", "file") == "/lib64/libbar.so.1"


class Staged:
    def __init__(self, factory: Factory, root: Path) -> None:
        self.factory, self.root, self.cache = factory, root, root / "cache"

    def lock(self, *pkgs: Package) -> Lock:
        return lock_of(locked(p.name, self.factory.rpm(p), version=p.version) for p in pkgs)

    def stage(self, lock: Lock, base: Path | None, **kwargs: object) -> staging.StageResult:
        fetch.fetch_lock(lock, repos=REPOS, cache=self.cache, record=None, progress=io.StringIO())
        out = self.root / "build"
        lower = View([base_layer(base)]) if base is not None else None
        return staging.stage_lock(lock, cache=self.cache, staging=out / "staging",
                                  record=out / "stage.json", lower=lower, **kwargs)  # type: ignore[arg-type]


@pytest.mark.privileged
def test_old_package_installs_under_usr_on_a_merged_usr_base(
    privileged: None, factory: Factory, tmp_path: Path
) -> None:
    base = fedora_base(factory, tmp_path / "bases", lib64_symlink=True)
    st = Staged(factory, tmp_path)
    result = st.stage(st.lock(OLD_THIRD_PARTY), base, drop_executables=True)
    tree = result.staging
    assert (tree / "usr/lib64/libold64.so.1").is_file()
    assert os.readlink(tree / "usr/lib64/libold64.so") == "libold64.so.1"
    assert (tree / "usr/lib/x86_64-linux-gnu/liboldgnu.so.1").is_file()
    for hidden in ("lib64", "lib", "bin"):  # nothing shadows the base's symlinks
        assert not os.path.lexists(tree / hidden), hidden
    assert not (tree / "usr/bin/oldtool").exists() and not (tree / "usr/sbin/oldd").exists()
    record = jsonio.read(tmp_path / "build" / "stage.json")
    moved = {r["original"]: r["installed"] for r in record["redirected"]}
    assert moved["/lib64/libold64.so.1"] == "/usr/lib64/libold64.so.1"
    assert moved["/lib/x86_64-linux-gnu/liboldgnu.so.1"] == (
        "/usr/lib/x86_64-linux-gnu/liboldgnu.so.1")
    assert {r["package"] for r in record["redirected"]} == {"old-third-party"}
    assert [(d["path"], d["original"], d["package"]) for d in record["dropped"]] == [
        ("/usr/bin/oldtool", "/bin/oldtool", "old-third-party"),
        ("/usr/sbin/oldd", "/usr/sbin/oldd", "old-third-party"),
    ]
    owners = dict(result.owners)
    assert owners["/usr/lib64/libold64.so.1"] == "old-third-party"
    assert "/lib64/libold64.so.1" not in owners and "/usr/bin/oldtool" not in owners
    report = check_tree(tree, CheckPolicy("deps"), owners=owners,
                        view_layers=[base_layer(base)], dropped=record["dropped"])
    assert report.invariants["precedence"]["status"] == "pass", report.summary()
    assert report.invariants["library-focus"]["status"] == "pass", report.summary()
    assert report.invariants["linkability"]["status"] == "pass", report.summary()
    assert [d["path"] for d in report.as_json()["dropped"]] == ["/usr/bin/oldtool",
                                                                "/usr/sbin/oldd"]


@pytest.mark.privileged
def test_without_a_base_paths_stay_and_kept_executables_stay(
    privileged: None, factory: Factory, tmp_path: Path
) -> None:
    base = fedora_base(factory, tmp_path / "bases")  # no /lib64 link: /lib64 stays a folder
    st = Staged(factory, tmp_path)
    result = st.stage(st.lock(OLD_THIRD_PARTY), base, drop_executables=True,
                      keep=["/usr/bin/oldtool"])
    tree = result.staging
    assert (tree / "lib64/libold64.so.1").is_file()
    assert (tree / "usr/lib/x86_64-linux-gnu/liboldgnu.so.1").is_file()  # /lib -> usr/lib
    assert (tree / "usr/bin/oldtool").is_file()  # kept
    assert [d["path"] for d in result.installed.dropped] == ["/usr/sbin/oldd"]
    # base-refresh (no dropping) keeps every executable
    again = st.stage(st.lock(OLD_THIRD_PARTY), base)
    assert again.installed.dropped == ()
    assert (again.staging / "usr/sbin/oldd").is_file()


def test_a_symlink_of_the_stack_is_still_never_written_through(
    factory: Factory, tmp_path: Path
) -> None:
    """After mapping, a path below another package's symlink is still refused."""
    base = tree_with_links(tmp_path / "base")
    link = Package("plants-link", contents=(Symlink("/usr/lib64/plugins", "/tmp"),),
                   autoreq=False)
    below = Package("writes-below", contents=(File("/lib64/plugins/evil.so", b"x"),),
                    autoreq=False)
    st = Staged(factory, tmp_path)
    with pytest.raises(StageError, match="write through the symlink") as err:
        st.stage(st.lock(link, below), base)
    assert "plants-link" in str(err.value) and "writes-below" in str(err.value)


def test_two_payload_paths_to_one_installed_path_must_agree(
    factory: Factory, tmp_path: Path
) -> None:
    base = tree_with_links(tmp_path / "base")
    same = Package("both-same", contents=(File("/lib64/libs.so", b"a"),
                                          File("/usr/lib64/libs.so", b"a")), autoreq=False)
    differ = Package("both-differ", contents=(File("/lib64/libd.so", b"a"),
                                              File("/usr/lib64/libd.so", b"b")), autoreq=False)
    st = Staged(factory, tmp_path)
    result = st.stage(st.lock(same), base)
    assert (result.staging / "usr/lib64/libs.so").read_bytes() == b"a"
    with pytest.raises(StageError, match=r"both install to /usr/lib64/libd\.so"):
        st.stage(st.lock(differ), base)


def test_host_providers_from_a_real_rpm_database(factory: Factory, tmp_path: Path) -> None:
    """rpm -q --whatprovides on a database holding a package that owns /usr/bin/thing."""
    db = tmp_path / "db"
    owner = Package("thing", contents=(File("/usr/bin/thing", b"#!/bin/sh\n", 0o755),),
                    autoreq=False)
    command.run(["rpm", "--initdb", "--dbpath", db])
    asked = ["/usr/bin/thing", "/usr/bin/other"]
    # an empty database (a Debian build machine's rpm): the host is unknown
    assert hostpkgs.providers(asked, dbpath=str(db)) == dict.fromkeys(asked, hostpkgs.UNKNOWN)
    command.run(["rpm", "-i", "--justdb", "--nodeps", "--dbpath", db,
                 "--ignorearch", "--ignoreos", factory.rpm(owner)])
    assert hostpkgs.providers(asked, dbpath=str(db)) == {
        "/usr/bin/thing": "thing-1.0-1.x86_64", "/usr/bin/other": hostpkgs.ABSENT}
    assert hostpkgs.providers([]) == {}


def test_host_query_argv_and_a_host_without_rpm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact commands asked of the host's rpm; no rpm at all: the host is unknown."""
    import subprocess

    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        calls.append([str(a) for a in argv])
        if "-qa" in argv:
            return subprocess.CompletedProcess(argv, 0, b"....", b"")
        if argv[-1] == "/usr/bin/bwrap":
            return subprocess.CompletedProcess(argv, 0, b"bubblewrap-0.11.0-2.fc44.aarch64\n",
                                               b"")
        return subprocess.CompletedProcess(argv, 1, b"no package provides /usr/bin/x\n", b"")

    monkeypatch.setattr(hostpkgs.command, "run", fake_run)
    monkeypatch.setattr(hostpkgs.command, "which", lambda name: Path("/usr/bin/rpm"))
    assert hostpkgs.providers(["/usr/bin/bwrap", "/usr/bin/x"]) == {
        "/usr/bin/bwrap": "bubblewrap-0.11.0-2.fc44.aarch64", "/usr/bin/x": hostpkgs.ABSENT}
    assert calls == [
        ["rpm", "-qa", "--qf", "."],
        ["rpm", "-q", "--whatprovides", "--qf", "%{NEVRA}\\n", "/usr/bin/bwrap"],
        ["rpm", "-q", "--whatprovides", "--qf", "%{NEVRA}\\n", "/usr/bin/x"],
    ]
    monkeypatch.setattr(hostpkgs.command, "which", lambda name: None)
    assert hostpkgs.providers(["/usr/bin/bwrap"]) == {"/usr/bin/bwrap": hostpkgs.UNKNOWN}


def test_a_kept_executable_still_may_not_override_the_base(tmp_path: Path) -> None:
    """keep_executable accounts for library-focus only: precedence still fails a kept
    path the base owns, and a kept new path passes."""
    from overlays.stack import KeptExecutable

    base = tree_with_links(tmp_path / "base")
    (base / "usr/bin/bash").write_text("the base's shell")
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/bash").write_text("an x86 shell")
    (tree / "usr/bin/newtool").write_text("a tool the base lacks")
    kept = (KeptExecutable("/usr/bin/*", "the app runs it"),)
    policy = CheckPolicy("deps", keep_executables=kept)
    report = check_tree(tree, policy, owners={}, view_layers=[Layer("base", base, "base")])
    assert [f.path for f in report.failures()] == ["/usr/bin/bash"]
    assert report.failures()[0].invariant == "precedence"
    assert report.invariants["library-focus"]["status"] == "accounted"


def test_keep_executable_loads_and_merges_through_includes(tmp_path: Path) -> None:
    from overlays.stack import KeptExecutable, load_stack
    from tests import pipeline_support as ps

    stacks = tmp_path / "stacks"
    (stacks / "bases").mkdir(parents=True)
    (stacks / "repos.toml").write_text('[repos.fixture]\nbaseurl = ["file:///nowhere"]\n'
                                       "gpgcheck = false\n")
    (stacks / "bases" / "fixture.toml").write_text(ps.base_toml(tmp_path, tmp_path / "none"))
    (stacks / "webview.toml").write_text(
        '[seeds]\nwebkit2gtk4_1 = "web views"\n\n[[policy.keep_executable]]\n'
        'path = "/usr/bin/bwrap"\nreason = "the web process sandbox runs it"\n')
    (stacks / "app.toml").write_text(
        ps.stack_toml(seeds={"pipe-c": "the app"}).replace(
            'class = "deps"', 'class = "deps"\ninclude = ["webview"]')
        + '\n[[policy.keep_executable]]\npath = "/usr/sbin/tool*"\nreason = "the app"\n')
    stack = load_stack(stacks, "app")
    assert stack.keep_executables == (
        KeptExecutable("/usr/sbin/tool*", "the app"),
        KeptExecutable("/usr/bin/bwrap", "the web process sandbox runs it"))
    (stacks / "app.toml").write_text(ps.stack_toml(seeds={"pipe-c": "the app"})
                                     + '\n[[policy.keep_executable]]\npath = "/usr/bin/x"\n')
    with pytest.raises(Exception, match="reason"):
        load_stack(stacks, "app")
