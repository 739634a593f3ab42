"""The stage step: safe extraction into the per-RPM cache and assembly of staging trees."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import pytest

from fexstack import command, jsonio
from fexstack.errors import StageError
from overlays import extract, fetch, safetree, staging
from overlays.lockfile import Lock, LockedPackage
from overlays.owners import Owners
from overlays.stack import Repo
from overlays.stagerecord import StageRecord
from testkit.factory import Dir, Factory, File, Library, Package, Symlink
from tests.craft_rpm import Entry, craft, lock_of, locked

REPOS = {"test": Repo(id="test")}


class Build:
    """One test's cache and build folder."""

    def __init__(self, factory: Factory, root: Path) -> None:
        self.factory = factory
        self.root = root
        self.cache = root / "cache"

    def entry(self, pkg: Package) -> LockedPackage:
        return locked(pkg.name, self.factory.rpm(pkg), version=pkg.version)

    def lock(self, *pkgs: Package | LockedPackage) -> Lock:
        return lock_of(p if isinstance(p, LockedPackage) else self.entry(p) for p in pkgs)

    def stage(self, lock: Lock, name: str = "demo") -> staging.StageResult:
        fetch.fetch_lock(lock, repos=REPOS, cache=self.cache, record=None, progress=io.StringIO())
        out = self.root / "build" / name
        return staging.stage_lock(
            lock, cache=self.cache, staging=out / "staging", record=out / "stage.json"
        )

    def staging(self, name: str = "demo") -> Path:
        return self.root / "build" / name / "staging"

    def record(self, name: str = "demo") -> dict:
        return jsonio.read(self.root / "build" / name / "stage.json")

    def owners(self, name: str = "demo") -> Mapping[str, str]:
        return Owners.read(self.root / "build" / name / "owners.json").paths


@pytest.fixture
def build(factory: Factory, tmp_path: Path) -> Build:
    return Build(factory, tmp_path)


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything that matters about a tree: type, mode, mtime, content or link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = "/" + str(path.relative_to(root)) if path != root else "/"
            if name == "." and path != root:
                continue
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            else:
                body = ""
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns, body)
    return out


LIBFOO = Package(
    name="libfoo",
    contents=(
        File("/usr/lib64/libfoo.so.1.0", b"\x7fELF pretend\n" * 10, 0o755),
        Symlink("/usr/lib64/libfoo.so.1", "libfoo.so.1.0"),
        Dir("/usr/share/foo", 0o750),
        File("/usr/share/foo/notes.txt", b"notes\n"),
    ),
    autoreq=False,
)
FOOTOOL = Package(
    name="foo-tools",
    contents=(
        File("/usr/libexec/foo/helper", b"#!/bin/sh\nexit 0\n", 0o4755),
        File("/usr/share/doc/foo/README", b"read me\n"),
    ),
    autoreq=False,
)


def extra(name: str) -> Package:
    return Package(
        name=name,
        contents=(File(f"/usr/share/{name}/data", f"{name}\n".encode()),),
        autoreq=False,
    )


def test_stage_builds_the_tree_owners_and_record(build: Build) -> None:
    result = build.stage(build.lock(LIBFOO, FOOTOOL))
    tree = build.staging()
    assert (tree / "usr/lib64/libfoo.so.1.0").read_bytes() == b"\x7fELF pretend\n" * 10
    assert os.readlink(tree / "usr/lib64/libfoo.so.1") == "libfoo.so.1.0"
    assert stat.S_IMODE((tree / "usr/share/foo").stat().st_mode) == 0o750
    assert stat.S_IMODE((tree / "usr/lib64/libfoo.so.1.0").stat().st_mode) == 0o755
    helper = tree / "usr/libexec/foo/helper"
    assert stat.S_IMODE(helper.stat().st_mode) == 0o4755
    # Every mtime is 0: the tree does not depend on when it was staged.
    assert {v[2] for v in snapshot(tree).values()} == {0}
    assert not list(tree.parent.glob(".tmp-*"))

    owners = build.owners()
    assert owners["/usr/lib64/libfoo.so.1"] == "libfoo"
    assert owners["/usr/libexec/foo/helper"] == "foo-tools"
    assert owners["/usr/share"] == "foo-tools"  # both have files below; first by name
    assert set(owners) == set(snapshot(tree)) - {"/"}
    assert result.setuid == ("/usr/libexec/foo/helper",)

    record = build.record()
    assert (record["packages"], record["extracted"], record["reused"]) == (2, 2, 0)
    assert record["setuid"] == [
        {"path": "/usr/libexec/foo/helper", "package": "foo-tools", "mode": "4755"}
    ]
    assert record["files"] == 4 and record["symlinks"] == 1
    assert record["hardlinked"] + record["copied"] == 4

    meta = jsonio.read(
        extract.extracted_dir(build.cache, build.entry(FOOTOOL).sha256) / "meta.json"
    )
    assert meta["files"]["/usr/libexec/foo/helper"]["setuid"] is True
    assert meta["setuid"] == ["/usr/libexec/foo/helper"]
    assert meta["files"]["/usr/share/doc/foo/README"] == {
        "type": "file",
        "mode": 0o644,
        "size": 8,
        "sha256": hashlib.sha256(b"read me\n").hexdigest(),
    }


def test_adding_a_package_extracts_only_that_one(build: Build) -> None:
    first = build.stage(build.lock(LIBFOO, FOOTOOL, extra("one")))
    assert first.extracted == ("foo-tools", "libfoo", "one")
    second = build.stage(build.lock(LIBFOO, FOOTOOL, extra("one"), extra("two")))
    assert second.extracted == ("two",)
    assert second.reused == ("foo-tools", "libfoo", "one")
    record = build.record()
    assert (record["extracted"], record["reused"]) == (1, 3)
    assert (build.staging() / "usr/share/two/data").read_bytes() == b"two\n"
    assert (build.staging() / "usr/share/one/data").read_bytes() == b"one\n"


def test_lock_order_does_not_change_the_tree(factory: Factory, tmp_path: Path) -> None:
    pkgs = [LIBFOO, FOOTOOL, extra("alpha"), extra("beta")]
    shared = Package(
        name="zeta",
        contents=(Dir("/usr/share/foo", 0o755), File("/usr/share/doc/foo/README", b"read me\n")),
        autoreq=False,
    )
    first = Build(factory, tmp_path / "a")
    second = Build(factory, tmp_path / "b")
    first.stage(first.lock(*pkgs, shared))
    second.stage(second.lock(shared, *reversed(pkgs)))
    assert snapshot(first.staging()) == snapshot(second.staging())
    assert (first.root / "build/demo/owners.json").read_bytes() == (
        second.root / "build/demo/owners.json"
    ).read_bytes()
    record = first.record()
    assert record["shared"] == {"/usr/share/doc/foo/README": ["foo-tools", "zeta"]}
    assert record["dir_mode_differences"] == {"/usr/share/foo": {"libfoo": "0750", "zeta": "0755"}}


def test_conflicting_files_name_both_packages(build: Build) -> None:
    one = Package(name="left", contents=(File("/usr/share/x/conf", b"left\n"),), autoreq=False)
    two = Package(name="right", contents=(File("/usr/share/x/conf", b"right\n"),), autoreq=False)
    build.stage(build.lock(LIBFOO))
    before = snapshot(build.staging())
    with pytest.raises(StageError) as err:
        build.stage(build.lock(LIBFOO, two, one))
    message = err.value.message
    assert "left" in message and "right" in message and "/usr/share/x/conf" in message
    assert snapshot(build.staging()) == before  # the old tree stays as it was
    assert not list(build.staging().parent.glob(".tmp-*"))


def test_conflicting_types_name_both_packages(build: Build) -> None:
    one = Package(name="as-file", contents=(File("/usr/share/y", b"y"),), autoreq=False)
    two = Package(name="as-dir", contents=(File("/usr/share/y/z", b"z"),), autoreq=False)
    with pytest.raises(
        StageError,
        match=r"as-file and as-dir conflict at /usr/share/y: a file .* a directory \(holding",
    ):
        build.stage(build.lock(one, two))


def test_identical_files_are_shared(build: Build) -> None:
    one = Package(name="left", contents=(File("/usr/share/x/conf", b"same\n"),), autoreq=False)
    two = Package(name="right", contents=(File("/usr/share/x/conf", b"same\n"),), autoreq=False)
    build.stage(build.lock(two, one))
    assert (build.staging() / "usr/share/x/conf").read_bytes() == b"same\n"
    assert build.owners()["/usr/share/x/conf"] == "left"
    assert build.record()["shared"] == {"/usr/share/x/conf": ["left", "right"]}


def test_no_write_through_another_package_symlink(build: Build, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    link = Package(
        name="linker", contents=(Symlink("/usr/lib64/foo", str(sentinel)),), autoreq=False
    )
    evil = Package(
        name="evil", contents=(File("/usr/lib64/foo/evil.so", b"gotcha"),), autoreq=False
    )
    with pytest.raises(StageError) as err:
        build.stage(build.lock(evil, link))
    message = err.value.message
    assert "linker" in message and "evil" in message
    assert "/usr/lib64/foo/evil.so" in message and "/usr/lib64/foo" in message
    assert list(sentinel.iterdir()) == []
    assert not build.staging().exists()


def crafted(build: Build, tmp_path: Path, name: str, entries: list[Entry]) -> LockedPackage:
    base = build.factory.rpm(extra("crafted-base"))
    rpm = craft(base, tmp_path / "crafted" / f"{name}.rpm", entries)
    return locked("crafted-base", rpm)


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_hostile_names_write_nothing_outside(build: Build, tmp_path: Path, kind: str) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    # The extraction happens in <cache>/extracted/.tmp-<sha>.*/tree: four levels below
    # tmp_path, so this many ".." would land exactly in the sentinel folder.
    name = {
        "dotdot": "./../../../../sentinel/escaped",
        "absolute": str(sentinel / "escaped"),
    }[kind]
    entry = crafted(
        build,
        tmp_path,
        kind,
        [
            Entry("./usr/share/crafted-base/data", data=b"crafted-base\n"),
            Entry(name, data=b"owned\n"),
        ],
    )
    # The hostile entry really is in the payload, as other archive readers see it.
    rpm = Path(entry.url.removeprefix("file://"))
    assert name in command.output(["bsdtar", "-tf", rpm]).splitlines()
    with pytest.raises(StageError) as err:
        build.stage(build.lock(entry))
    message = err.value.message
    assert "crafted-base" in message and name in message
    assert ("'..'" in message) if kind == "dotdot" else ("absolute" in message)
    assert list(sentinel.iterdir()) == []
    assert not build.staging().exists()
    extracted = build.cache / "extracted"
    assert list(extracted.iterdir()) == []  # no half-extracted tree left to be reused


def test_device_nodes_are_refused(build: Build, tmp_path: Path) -> None:
    entry = crafted(
        build,
        tmp_path,
        "device",
        [
            Entry("./dev/evil", mode=stat.S_IFCHR | 0o666, rdev=(1, 3)),
        ],
    )
    with pytest.raises(StageError, match=r"/dev/evil' is a char device: refused"):
        build.stage(build.lock(entry))
    assert not (build.cache / "extracted" / entry.sha256).exists()


def test_payload_must_match_the_header(build: Build, tmp_path: Path) -> None:
    entry = crafted(
        build,
        tmp_path,
        "swapped",
        [
            Entry("./usr/share/crafted-base/data", data=b"something else\n"),
        ],
    )
    with pytest.raises(StageError, match="but the header says"):
        build.stage(build.lock(entry))
    entry = crafted(
        build,
        tmp_path,
        "smuggled",
        [
            Entry("./usr/share/crafted-base/data", data=b"crafted-base\n"),
            Entry("./usr/lib64/libsmuggled.so", data=b"not declared\n"),
        ],
    )
    with pytest.raises(StageError, match="is not listed in the package's header"):
        build.stage(build.lock(entry))


def test_damaged_extraction_is_redone(build: Build) -> None:
    build.stage(build.lock(LIBFOO))
    folder = extract.extracted_dir(build.cache, build.entry(LIBFOO).sha256)
    (folder / "tree/usr/share/foo/notes.txt").unlink()
    result = build.stage(build.lock(LIBFOO))
    assert result.extracted == ("libfoo",)
    assert (build.staging() / "usr/share/foo/notes.txt").read_bytes() == b"notes\n"


def test_concurrent_extraction_keeps_the_one_in_place(build: Build) -> None:
    """Another process (another project sharing the cache) published the package first:
    its complete extraction stays (it may be linking files out of it), ours is dropped;
    a broken one in place is replaced."""
    entry = build.entry(LIBFOO)
    rpm = build.factory.rpm(LIBFOO)
    first = extract.extract(rpm, entry.sha256, cache=build.cache, package="libfoo")
    folder = extract.extracted_dir(build.cache, entry.sha256)
    inode = (folder / "tree/usr/share/foo/notes.txt").stat().st_ino
    other = extract.extract(rpm, entry.sha256, cache=build.root / "other", package="libfoo")
    ours = other.tree.parent
    kept = extract._publish(ours, folder, entry.sha256)
    assert kept is not None and not kept.fresh and kept.meta == first.meta
    assert (folder / "tree/usr/share/foo/notes.txt").stat().st_ino == inode
    assert not ours.exists()
    (folder / "meta.json").write_text("{}")  # broken: replaced by a finished extraction
    other = extract.extract(rpm, entry.sha256, cache=build.root / "third", package="libfoo")
    assert extract._publish(other.tree.parent, folder, entry.sha256) is None
    assert extract.ExtractedMeta.read(folder / "meta.json") == first.meta
    assert jsonio.read(folder / "meta.json") == first.meta.to_json()  # the on-disk format
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_owners_record_round_trips_and_refuses_a_malformed_file(
    build: Build, tmp_path: Path
) -> None:
    result = build.stage(build.lock(LIBFOO, FOOTOOL))
    written = build.root / "build/demo/owners.json"
    record = Owners.read(written)
    assert record == Owners(result.owners)
    assert record.paths["/usr/libexec/foo/helper"] == "foo-tools"
    again = tmp_path / "again" / "owners.json"
    record.write(again)
    assert Owners.read(again) == record
    assert again.read_bytes() == written.read_bytes()  # the writer's bytes, unchanged
    again.write_text('{"usr/lib64/libfoo.so.1": "libfoo"}\n')  # not an absolute path
    with pytest.raises(StageError) as err:
        Owners.read(again)
    assert str(again) in err.value.message and "owners schema" in err.value.message
    assert err.value.hint == "stage the tree again: doit stage:again"
    again.write_text("{")
    with pytest.raises(StageError, match="not valid JSON"):
        Owners.read(again)
    with pytest.raises(StageError, match="no owners record"):
        Owners.read(tmp_path / "missing" / "owners.json")
    with pytest.raises(jsonschema.ValidationError):  # the writer validates too
        Owners({"/x": ""}).write(again)


def test_stage_record_round_trips_and_refuses_a_malformed_file(
    build: Build, tmp_path: Path
) -> None:
    build.stage(build.lock(LIBFOO, FOOTOOL))
    written = build.root / "build/demo/stage.json"
    record = StageRecord.read(written)
    assert record.stack == build.lock(LIBFOO, FOOTOOL).stack
    assert (record.packages, record.extracted, record.reused) == (2, 2, 0)
    assert record.extracted_packages == ("foo-tools", "libfoo")
    assert record.setuid == ({"path": "/usr/libexec/foo/helper", "package": "foo-tools",
                              "mode": "4755"},)
    assert record.redirected == () and record.dropped == ()
    # every key the schema knows is written, as the stage step always wrote them
    assert set(jsonio.read(written)) == set(jsonio.schema("stage")["properties"])
    again = tmp_path / "again" / "stage.json"
    record.write(again)
    assert StageRecord.read(again) == record
    assert again.read_bytes() == written.read_bytes()  # the writer's bytes, unchanged
    # a record of an older stage (no kept/removed/redirected/dropped) reads as none of them
    old = {k: v for k, v in jsonio.read(written).items()
           if k not in ("kept", "removed", "redirected", "dropped")}
    again.write_text(jsonio.dumps(old))
    assert StageRecord.read(again) == dataclasses.replace(record, kept=0, removed=0)
    again.write_text(jsonio.dumps({**old, "dropped": [{"path": "/usr/bin/foo"}]}))
    with pytest.raises(StageError) as err:
        StageRecord.read(again)
    assert str(again) in err.value.message and "stage schema at dropped/0" in err.value.message
    assert err.value.hint == "stage the tree again: doit stage:again"
    again.write_text("[1,")
    with pytest.raises(StageError, match="not valid JSON"):
        StageRecord.read(again)
    with pytest.raises(StageError, match="no stage record"):
        StageRecord.read(tmp_path / "missing" / "stage.json")
    with pytest.raises(jsonschema.ValidationError):  # the writer validates too
        dataclasses.replace(record, inputs="md5:x").write(again)


def test_extracted_meta_round_trips_and_a_malformed_one_is_extracted_again(
    build: Build, tmp_path: Path
) -> None:
    entry = build.entry(FOOTOOL)
    rpm = build.factory.rpm(FOOTOOL)
    done = extract.extract(rpm, entry.sha256, cache=build.cache, package="foo-tools")
    written = done.tree.parent / extract.META
    meta = extract.ExtractedMeta.read(written)
    assert meta == done.meta and meta.package.name == "foo-tools"
    assert meta.setuid == ("/usr/libexec/foo/helper",)
    assert meta.files["/usr/libexec/foo/helper"]["setuid"] is True
    copy = tmp_path / "meta.json"
    meta.write(copy)
    assert copy.read_bytes() == written.read_bytes()
    doc = jsonio.read(written)
    del doc["files"]["/usr/libexec/foo/helper"]["mode"]
    copy.write_text(jsonio.dumps(doc))
    with pytest.raises(StageError) as err:
        extract.ExtractedMeta.read(copy)
    assert str(copy) in err.value.message and "extracted schema at files" in err.value.message
    assert err.value.hint and "extracted anew" in err.value.hint
    # in the cache, the same damage is said and the package extracted again
    written.write_text(jsonio.dumps(doc))
    again = extract.extract(rpm, entry.sha256, cache=build.cache, package="foo-tools")
    assert again.fresh and again.meta == meta
    assert extract.ExtractedMeta.read(written) == meta


def test_extracted_meta_is_read_once_per_file_identity(build: Build, tmp_path: Path) -> None:
    """The stage, check and image steps of one build each read every package's record: a
    process reads and validates a file once while it stays the same file."""
    rpm = build.factory.rpm(FOOTOOL)
    done = extract.extract(rpm, build.entry(FOOTOOL).sha256, cache=build.cache,
                           package="foo-tools")
    copy = tmp_path / "meta.json"
    done.meta.write(copy)
    first = extract.ExtractedMeta.read(copy)
    assert extract.ExtractedMeta.read(copy) is first  # not parsed again
    doc = jsonio.read(copy)
    doc["setuid"] = []
    del doc["files"]["/usr/libexec/foo/helper"]["setuid"]
    copy.write_text(jsonio.dumps(doc))  # rewritten: another ctime, read again
    again = extract.ExtractedMeta.read(copy)
    assert again is not first and again.setuid == ()
    doc["files"]["/usr/libexec/foo/helper"]["mode"] = "bad"
    copy.write_text(jsonio.dumps(doc))
    with pytest.raises(StageError, match="extracted schema"):
        extract.ExtractedMeta.read(copy)
    copy.unlink()
    with pytest.raises(StageError, match=str(copy)):
        extract.ExtractedMeta.read(copy)


def rpmbuild(tmp_path: Path, name: str, files: str, install: str, *, v6: bool = False) -> Path:
    """An RPM from a hand-written spec (for what the fixture factory does not express)."""
    top = tmp_path / f"rpmbuild-{name}-{'v6' if v6 else 'v4'}"
    spec = top / f"{name}.spec"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        f"%global debug_package %{{nil}}\nName: {name}\nVersion: 1.0\nRelease: 1\n"
        f"Summary: s\nLicense: MIT\nBuildArch: x86_64\n%description\ns\n"
        f"%install\n{install}\n%files\n{files}\n"
    )
    fmt = [] if v6 else ["--define", "_rpmformat 4"]
    command.run(
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            "--target",
            "x86_64",
            *fmt,
            "--define",
            "_binary_payload w19.zstdio",
            "--define",
            f"_topdir {top}",
            spec,
        ]
    )
    return top / f"RPMS/x86_64/{name}-1.0-1.x86_64.rpm"


def test_file_capabilities_are_dropped_and_reported(build: Build, tmp_path: Path) -> None:
    rpm = rpmbuild(
        tmp_path,
        "capped",
        "%caps(cap_net_raw=ep) %attr(0755,root,root) /usr/libexec/ping",
        "mkdir -p %{buildroot}/usr/libexec && printf x > %{buildroot}/usr/libexec/ping",
    )
    result = build.stage(build.lock(locked("capped", rpm)))
    assert result.caps_dropped == {"/usr/libexec/ping": "cap_net_raw=ep"}
    assert os.listxattr(build.staging() / "usr/libexec/ping") == []
    assert build.record()["caps_dropped"] == [
        {"path": "/usr/libexec/ping", "package": "capped", "caps": "cap_net_raw=ep"}
    ]


LINKS_INSTALL = """\
mkdir -p %{buildroot}/usr/share/links/sub
echo hello > %{buildroot}/usr/share/links/a
ln %{buildroot}/usr/share/links/a %{buildroot}/usr/share/links/b
ln %{buildroot}/usr/share/links/a %{buildroot}/usr/share/links/sub/c
: > %{buildroot}/usr/share/links/empty1
ln %{buildroot}/usr/share/links/empty1 %{buildroot}/usr/share/links/empty2
ln -s sub/c %{buildroot}/usr/share/links/d
mkfifo %{buildroot}/usr/share/links/pipe"""


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_hardlinks_symlinks_fifos_in_both_package_formats(
    build: Build, tmp_path: Path, v6: bool
) -> None:
    rpm = rpmbuild(tmp_path, "links", "/usr/share/links", LINKS_INSTALL, v6=v6)
    result = build.stage(build.lock(locked("links", rpm)))
    tree = build.staging() / "usr/share/links"
    assert (tree / "a").read_bytes() == (tree / "sub/c").read_bytes() == b"hello\n"
    assert (
        (tree / "a").stat().st_ino == (tree / "b").stat().st_ino == (tree / "sub/c").stat().st_ino
    )
    assert (tree / "empty2").read_bytes() == b""
    assert os.readlink(tree / "d") == "sub/c"
    assert stat.S_ISFIFO((tree / "pipe").lstat().st_mode)
    assert build.record()["fifos"] == [{"path": "/usr/share/links/pipe", "package": "links"}]
    assert result.owners["/usr/share/links/sub/c"] == "links"


def test_process_pool_reports_errors_with_message_and_hint(
    build: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staging, "_processes", lambda workers, jobs: 2)  # even on one core
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    hostile = crafted(
        build,
        tmp_path,
        "dotdot-pool",
        [
            Entry("./usr/share/crafted-base/data", data=b"crafted-base\n"),
            Entry("./../../../../sentinel/escaped", data=b"owned\n"),
        ],
    )
    with pytest.raises(StageError) as err:
        build.stage(build.lock(LIBFOO, FOOTOOL, hostile))
    assert type(err.value) is StageError
    assert "crafted-base" in err.value.message and "'..'" in err.value.message
    assert "./../../../../sentinel/escaped" in err.value.message
    assert err.value.hint is not None and "malformed or hostile" in err.value.hint
    assert list(sentinel.iterdir()) == []
    assert not build.staging().exists()
    assert not extract.extracted_dir(build.cache, hostile.sha256).exists()
    assert not list((build.cache / "extracted").glob(".tmp-*"))


def test_process_pool_and_in_process_extraction_agree(
    factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = {}
    for processes in (1, 2):
        monkeypatch.setattr(staging, "_processes", lambda workers, jobs, n=processes: n)
        build = Build(factory, tmp_path / str(processes))
        fds = len(os.listdir("/proc/self/fd"))
        first = build.stage(build.lock(LIBFOO, FOOTOOL, extra("one")))
        assert (first.extracted, first.reused) == (("foo-tools", "libfoo", "one"), ())
        second = build.stage(build.lock(LIBFOO, FOOTOOL, extra("one"), extra("two")))
        assert (second.extracted, second.reused) == (("two",), ("foo-tools", "libfoo", "one"))
        record = build.record()
        assert (record["extracted"], record["reused"], record["packages"]) == (1, 3, 4)
        assert len(os.listdir("/proc/self/fd")) == fds  # every directory fd was closed
        trees[processes] = (snapshot(build.staging()), build.owners())
    assert trees[1] == trees[2]


def test_directory_walk_refuses_dot_components(tmp_path: Path) -> None:
    root = os.open(tmp_path, safetree.OPEN_DIR)
    dirs = safetree.DirFds(root)
    try:
        for path in ("/a/../b", "/a/./b", "/a//b", "/a/..", "/.."):
            with pytest.raises(OSError) as err:
                dirs.parent(path)
            assert err.value.errno == errno.EINVAL
        assert list(tmp_path.iterdir()) == []  # nothing made on the way
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(OSError) as err:
            dirs.parent("/link/x")
        assert err.value.errno in (errno.ELOOP, errno.ENOTDIR) and err.value.filename == "/link"
        fd, name = dirs.parent("/new/deeper/leaf")
        assert name == "leaf" and (tmp_path / "new/deeper").is_dir()
        assert dirs.parent("/new/deeper/other")[0] == fd  # opened once, kept
    finally:
        dirs.close()
        os.close(root)
    assert list((tmp_path / "real").iterdir()) == []


def test_stage_sweeps_old_leftovers_of_killed_extractions(build: Build) -> None:
    folder = build.cache / extract.EXTRACTED
    old = folder / ".tmp-deadbeef.killed"
    fresh = folder / ".tmp-cafe.running"
    for leftover in (old, fresh):
        (leftover / "tree").mkdir(parents=True)
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    build.stage(build.lock(LIBFOO))
    assert not old.exists()  # a killed run's: removed
    assert fresh.exists()  # may belong to a live extraction elsewhere: kept


OLD_P = Package(
    name="shifty",
    version="1.0",
    contents=(
        File("/opt/shifty/a", b"a one\n"),
        Symlink("/opt/shifty/link", "a"),
        File("/opt/shifty/sub/f", b"in sub\n"),
        File("/opt/shifty/gone", b"goes away\n"),
        File("/opt/shifty/same", b"unchanged\n"),
    ),
    autoreq=False,
)
NEW_P = Package(
    name="shifty",
    version="2.0",
    contents=(
        File("/opt/shifty/a", b"a two\n"),  # other content
        File("/opt/shifty/b", b"b\n"),
        Symlink("/opt/shifty/link", "b"),  # other target
        Symlink("/opt/shifty/sub", "b"),  # a folder becomes a symlink
        File("/opt/shifty/gone/inner", b"a file becomes a folder\n"),
        File("/opt/shifty/same", b"unchanged\n"),
    ),
    autoreq=False,
)


def test_restage_brings_the_previous_tree_up_to_date(
    build: Build, factory: Factory, tmp_path: Path
) -> None:
    build.stage(build.lock(LIBFOO, FOOTOOL, OLD_P, extra("one")))
    kept_before = (build.staging() / "usr/lib64/libfoo.so.1.0").lstat()
    build.stage(build.lock(LIBFOO, NEW_P, extra("one"), extra("two")))
    fresh = Build(factory, tmp_path / "fresh")
    fresh.stage(fresh.lock(LIBFOO, NEW_P, extra("one"), extra("two")))
    # The tree brought up to date is the tree a first stage makes, bit for bit.
    assert snapshot(build.staging()) == snapshot(fresh.staging())
    assert build.owners() == fresh.owners()
    record = build.record()
    # Kept: libfoo's file and symlink, /usr/share/foo/notes.txt, one/data. shifty 2.0's
    # "same" has the bytes of 1.0's but is another RPM's cache inode: linked again, with
    # a, b, gone/inner and two/data.
    assert (record["kept"], record["hardlinked"] + record["copied"]) == (4, 5)
    # Gone: foo-tools' 2 files and 4 folders, and sub/f (the entries whose type or
    # content changed are replaced in place, not counted here).
    assert record["removed"] == 6 + 1
    assert fresh.record()["kept"] == 0 and fresh.record()["removed"] == 0
    # A kept file was not linked again: linking would have moved its inode's ctime.
    kept_after = (build.staging() / "usr/lib64/libfoo.so.1.0").lstat()
    assert kept_after.st_ino == kept_before.st_ino
    assert kept_after.st_ctime_ns == kept_before.st_ctime_ns
    assert not list(build.staging().parent.glob(".tmp-*"))


def test_restage_replaces_what_was_written_into_the_tree(build: Build) -> None:
    build.stage(build.lock(LIBFOO, FOOTOOL))
    tree = build.staging()
    first = snapshot(tree)
    notes = tree / "usr/share/foo/notes.txt"
    notes.unlink()
    notes.write_bytes(b"notes\n")  # same bytes, another inode: linked from the cache again
    (tree / "usr/lib64/stray.so").write_bytes(b"left by hand\n")
    (tree / "usr/lib64/libfoo.so.1").unlink()
    (tree / "usr/lib64/libfoo.so.1").symlink_to("/elsewhere")
    build.stage(build.lock(LIBFOO, FOOTOOL))
    assert snapshot(tree) == first
    record = build.record()
    assert (record["kept"], record["removed"]) == (3, 1)
    cached = extract.extracted_dir(build.cache, build.entry(LIBFOO).sha256) / "tree"
    assert notes.stat().st_ino == (cached / "usr/share/foo/notes.txt").stat().st_ino


def test_restage_makes_the_tree_anew_when_it_cannot_be_updated(
    build: Build, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    build.stage(build.lock(LIBFOO, FOOTOOL))
    first = snapshot(build.staging())
    real = staging._previous

    def stale(root: Path) -> dict[str, staging._Old]:
        found = real(root)
        found["/usr/share/doc/foo/vanished"] = staging._Old("file", (0, 0))  # not there
        return found

    monkeypatch.setattr(staging, "_previous", stale)
    build.stage(build.lock(LIBFOO, FOOTOOL, extra("one")))
    assert "making it anew" in caplog.text
    assert (build.staging() / "usr/share/one/data").read_bytes() == b"one\n"
    assert {k: v for k, v in snapshot(build.staging()).items() if "one" not in k} == first
    assert build.record()["kept"] == 0


def test_extraction_writes_without_fsync_other_records_with_it(
    build: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extraction is published by renaming its folder and audited whenever it is
    reused: it costs no fsync. The records of the steps are fsync'd before their rename."""
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    rpm = build.factory.rpm(extra("nosync"))
    done = extract.extract(rpm, build.entry(extra("nosync")).sha256, cache=build.cache,
                           package="nosync")
    assert done.fresh and synced == []
    jsonio.write(tmp_path / "record.json", {"a": 1})
    assert len(synced) == 1


def test_extraction_record_lists_the_elf_contents(build: Build) -> None:
    pkg = Package(
        name="mixed",
        contents=(
            Library("libmixed.so.1"),
            File("/usr/share/mixed/elf-lookalike", b"\x7fEL not quite\n"),
            File("/usr/share/mixed/tiny", b"\x7f"),
            File("/usr/share/mixed/empty", b""),
        ),
        autoreq=False,
    )
    build.stage(build.lock(pkg))
    meta = extract.ExtractedMeta.read(
        extract.extracted_dir(build.cache, build.entry(pkg).sha256) / extract.META
    )
    library = next(p for p in meta.files if p.endswith("libmixed.so.1") and
                   meta.files[p]["type"] == "file")
    assert meta.elf == {meta.files[library]["sha256"]}
    assert jsonio.read(extract.extracted_dir(build.cache, build.entry(pkg).sha256)
                       / extract.META)["elf"] == [meta.files[library]["sha256"]]
    assert (build.staging() / library.lstrip("/")).read_bytes()[:4] == b"\x7fELF"


def test_records_read_by_stage_workers_are_not_read_again(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage step extracts (or audits) in worker processes; the check and image steps
    then read every package's record in the parent: it hands out what the workers read."""
    lock = build.lock(LIBFOO, FOOTOOL, extra("one"))
    build.stage(lock)  # extracted
    extract._READ.clear()
    parsed: list[Path] = []
    real = extract.ExtractedMeta._parse.__func__

    def counting(cls: type[extract.ExtractedMeta], path: Path) -> extract.ExtractedMeta:
        parsed.append(path)
        return real(cls, path)

    monkeypatch.setattr(extract.ExtractedMeta, "_parse", classmethod(counting))
    result = build.stage(lock)  # reused: audited in the workers
    assert result.reused == ("foo-tools", "libfoo", "one") and staging._processes(4, 3) > 1
    assert parsed == []  # nothing read here: the workers did
    for pkg in lock.packages:
        meta = extract.ExtractedMeta.read(
            extract.extracted_dir(build.cache, pkg.sha256) / extract.META)
        assert meta.rpm_sha256 == pkg.sha256
    assert parsed == []  # handed out from what the workers returned
