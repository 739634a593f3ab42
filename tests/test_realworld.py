"""The real-world corpus itself: real Debian packages as RPMs, and the base made from them.

The unit tests of the Debian -> RPM metadata mapping need nothing; the others use the
session fixture ``realworld_corpus`` (built once per machine, see tests/realworld/).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from fexstack import command
from overlays import basepkgs, location, locking
from overlays import stack as stackmod
from tests.realworld import base, convert, corpus, packages
from tests.realworld.apt import CorpusError
from tests.realworld.corpus import Corpus
from tests.realworld.debcontrol import evr_text, parse_version, relations

# --- Debian control -> RPM metadata (no corpus needed) ------------------------------------


@pytest.mark.parametrize(
    ("debian", "epoch", "version", "release"),
    [
        ("2.41-12+deb13u5", None, "2.41", "12+deb13u5"),
        ("1:19.1.7-3+b1", 1, "19.1.7", "3+b1"),
        ("0.18", None, "0.18", "0"),
        ("1.2~rc1-0ubuntu1-3", None, "1.2~rc1_0ubuntu1", "3"),
        ("2:1.0+dfsg-1~exp1", 2, "1.0+dfsg", "1~exp1"),
    ],
)
def test_debian_versions_map_to_rpm_evrs(
    debian: str, epoch: int | None, version: str, release: str
) -> None:
    evr = parse_version(debian)
    assert (evr.epoch, evr.version, evr.release) == (epoch, version, release)


def test_debian_relations_map_to_rpm_dependencies() -> None:
    field = (
        "libc6 (>= 2.34), libglib2.0-0t64 (>= 2.80.0), debconf (>= 0.5) | debconf-2.0, "
        "python3:any, libfoo (<< 1:2.0-1~), libbar (>> 3), libbaz (= 1.2-3), foo | foo"
    )
    assert relations(field) == [
        "libc6 >= 2.34",
        "libglib2.0-0t64 >= 2.80.0",
        "(debconf >= 0.5 or debconf-2.0)",
        "python3",
        "libfoo < 1:2.0-1~",
        "libbar > 3",
        "libbaz = 1.2-3",
        "foo",
    ]
    assert relations("") == []
    assert evr_text(parse_version("1.0", relation=True)) == "1.0"  # no release invented


def test_bad_debian_data_is_refused() -> None:
    with pytest.raises(CorpusError, match="cannot read the Debian relation"):
        relations("libc6 (>= 2.34")
    with pytest.raises(CorpusError, match="epoch"):
        parse_version("x:1.0-1")


def test_cache_key_follows_package_lists_suite_and_converter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trixie = corpus.suite("trixie")
    k = corpus.key(trixie)
    assert corpus.key() == k  # trixie is the default
    more = dataclasses.replace(trixie, corpus_seeds=(*trixie.corpus_seeds, "libfoo"))
    assert corpus.key(more) != k
    assert corpus.key(dataclasses.replace(trixie, base_seeds=trixie.base_seeds[1:])) != k
    assert corpus.key(corpus.suite("bookworm")) != k
    monkeypatch.setattr(convert, "CONVERTER_VERSION", convert.CONVERTER_VERSION + 1)
    assert corpus.key(trixie) != k
    with pytest.raises(CorpusError, match="no corpus suite 'sid'"):
        corpus.suite("sid")


# --- the corpus ---------------------------------------------------------------------------

DROPPED = tuple("./" + d for d in convert.DROPPED)


def _deb_payload(deb: Path) -> dict[str, tuple[str, int, str]]:
    """/path -> (kind, mode, sha256 or link target) of a .deb's payload, as the RPM keeps it."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                          capture_output=True).stdout
    entries: dict[str, tuple[str, int, str]] = {}
    dirs_with_children: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for m in members:
            name = m.name.rstrip("/")
            parent = os.path.dirname(name)
            dirs_with_children.add(parent)
        for m in members:
            name = m.name.rstrip("/")
            if name in (".", "") or any(name == d or name.startswith(d + "/") for d in DROPPED):
                continue
            path = name[1:]
            if m.isdir():
                if name not in dirs_with_children:
                    entries[path] = ("dir", stat.S_IFDIR | m.mode, "")
            elif m.issym():
                entries[path] = ("symlink", stat.S_IFLNK | 0o777, m.linkname)
            elif m.islnk():
                link = m.linkname if m.linkname.startswith(".") else "./" + m.linkname
                content = tar.extractfile(tar.getmember(link))
                assert content is not None
                entries[path] = ("file", stat.S_IFREG | m.mode,
                                 hashlib.sha256(content.read()).hexdigest())
            else:
                content = tar.extractfile(m)
                assert content is not None
                entries[path] = ("file", stat.S_IFREG | m.mode,
                                 hashlib.sha256(content.read()).hexdigest())
    return entries


def _rpm_payload(rpm: Path) -> dict[str, tuple[str, int, str]]:
    fmt = "[%{FILENAMES}\t%{FILEMODES}\t%{FILEDIGESTS}\t%{FILELINKTOS}\n]"
    text = command.output(["rpm", "-qp", "--qf", fmt, str(rpm)])
    entries: dict[str, tuple[str, int, str]] = {}
    for line in text.splitlines():
        path, mode_text, digest, link = line.split("\t")
        mode = int(mode_text) & 0xFFFF
        kind = ("dir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "file")
        entries[path] = (kind, mode, link if kind == "symlink" else digest)
    return entries


def _packages_with_legacy_paths(found: Corpus) -> dict[str, list[str]]:
    """Name -> payload paths under /lib, /lib64, /bin or /sbin (not /usr), from the RPMs."""
    import rpm

    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    hits: dict[str, list[str]] = {}
    for name in sorted(found.packages):
        with open(found.rpm(name), "rb") as fh:
            header = ts.hdrFromFdno(fh.fileno())
        paths = [p for p in header[rpm.RPMTAG_FILENAMES]
                 if p.split("/")[1:2] in (["lib"], ["lib64"], ["bin"], ["sbin"])]
        if paths:
            hits[name] = paths
    return hits


@pytest.mark.realworld
def test_corpus_holds_the_closure_with_recorded_versions(realworld_corpus: Corpus) -> None:
    found = realworld_corpus
    for seed in (*packages.BASE_SEEDS, *packages.CORPUS_SEEDS):
        assert seed in found.packages, seed
    assert found.base_names >= set(packages.BASE_SEEDS)
    assert not found.base_names & set(packages.NOT_IN_BASE)
    rpms = sorted(p.name for p in found.repo.glob("*.rpm"))
    assert rpms == sorted(p.rpm for p in found.packages.values())
    debs = sorted(p.name for p in found.debs.glob("*.deb"))
    assert debs == sorted(p.deb for p in found.packages.values())
    # The RPM headers carry exactly the recorded (mapped) versions.
    text = command.output(["rpm", "-qp", "--qf", "%{NAME} %{EPOCH} %{VERSION} %{RELEASE}\n",
                           *(str(found.repo / r) for r in rpms)])
    for line in text.splitlines():
        name, epoch, version, release = line.split()
        p = found.packages[name]
        assert (epoch, version, release) == (
            str(p.epoch) if p.epoch is not None else "(none)", p.version, p.release)
        assert parse_version(p.deb_version).version == p.version


def _assert_same_payload(found: Corpus, names: list[str]) -> None:
    for name in names:
        deb_side = _deb_payload(found.deb(name))
        rpm_side = _rpm_payload(found.rpm(name))
        assert sorted(rpm_side) == sorted(deb_side), name
        for path, (kind, mode, data) in deb_side.items():
            got = rpm_side[path]
            if kind == "dir":
                assert got[0] == "dir", (name, path)
            else:
                assert got == (kind, mode, data), (name, path)


@pytest.mark.realworld
def test_converted_rpms_hold_exactly_the_debs_files(realworld_corpus: Corpus) -> None:
    # Trixie finished moving /lib, /bin and /sbin into /usr: only base-files' own
    # merged-/usr symlinks remain there (bookworm's packages still ship such paths).
    assert _packages_with_legacy_paths(realworld_corpus) == {
        "base-files": ["/bin", "/lib", "/lib64", "/sbin"]
    }
    links = _rpm_payload(realworld_corpus.rpm("base-files"))
    assert links["/lib64"] == ("symlink", stat.S_IFLNK | 0o777, "usr/lib64")
    names = ["libc6", "bash", "libgtk-3-0t64", "libgstreamer1.0-0", "bubblewrap",
             "adwaita-icon-theme", "libgl1-mesa-dri", "gtk-3-examples"]
    _assert_same_payload(realworld_corpus, names)


@pytest.mark.realworld
def test_bookworm_rpms_keep_debians_lib_bin_and_sbin_paths(realworld_bookworm: Corpus) -> None:
    legacy = _packages_with_legacy_paths(realworld_bookworm)
    assert "/lib/x86_64-linux-gnu/libc.so.6" in legacy["libc6"]
    assert "/lib64/ld-linux-x86-64.so.2" in legacy["libc6"]
    assert any(p.startswith("/sbin/") for p in legacy.get("libcap2-bin", []))
    assert len(legacy) > 20
    _assert_same_payload(realworld_bookworm, sorted({"libc6", "bash", *list(legacy)[:12]}))
    # In the base, rpm wrote those paths through the merged-/usr symlinks.
    tree = realworld_bookworm.base_tree
    assert (tree / "lib").is_symlink()
    assert (tree / "usr/lib/x86_64-linux-gnu/libc.so.6").is_file()
    assert (tree / "lib64").is_symlink() and (tree / "usr/lib64/ld-linux-x86-64.so.2").exists()


@pytest.mark.realworld
def test_libdnf5_resolves_the_bookworm_corpus_on_its_base(
    realworld_bookworm: Corpus, tmp_path: Path
) -> None:
    stacks = realworld_bookworm.write_stacks_dir(tmp_path / "stacks")
    locked = _lock(realworld_bookworm, stacks, "gst-core", ["libgstreamer1.0-0"])
    # bookworm's libgstreamer requires libcap2-bin, which ships /sbin/setcap
    assert {"libgstreamer1.0-0", "libcap2-bin"} <= locked
    seeds = list(packages.SUITES["bookworm"].corpus_seeds)
    locked = _lock(realworld_bookworm, stacks, "everything", seeds)
    assert locked == set(realworld_bookworm.packages) - realworld_bookworm.base_names


@pytest.mark.realworld
def test_gtk_rpm_has_rpms_own_soname_provides_and_requires(realworld_corpus: Corpus) -> None:
    rpm = realworld_corpus.rpm("libgtk-3-0t64")
    provides = command.output(["rpm", "-qp", "--provides", str(rpm)]).splitlines()
    requires = command.output(["rpm", "-qp", "--requires", str(rpm)]).splitlines()
    assert "libgtk-3.so.0()(64bit)" in provides
    assert "libgdk-3.so.0()(64bit)" in provides
    # Debian's Provides (the pre-t64 name) becomes a versioned rpm Provides.
    version = realworld_corpus.packages["libgtk-3-0t64"]
    assert f"libgtk-3-0 = {version.version}-{version.release}" in provides
    # Every DT_NEEDED of the real library is an rpm soname requirement.
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    lib = realworld_corpus.base_tree / "usr/lib/x86_64-linux-gnu/libgtk-3.so.0"
    with open(lib.resolve(), "rb") as fh:
        dynamic = ELFFile(fh).get_section_by_name(".dynamic")
        assert isinstance(dynamic, DynamicSection)
        needed = [t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    assert len(needed) > 10
    for soname in needed:
        assert f"{soname}()(64bit)" in requires, soname
    assert any(r.startswith("libc.so.6(GLIBC_2.") for r in requires)
    assert any(r.startswith("libglib2.0-0t64 >= ") for r in requires)  # from Depends
    # No generator but the ELF one: no interpreter or perl/python requirements.
    assert not [r for r in requires if r.startswith(("/", "perl(", "python3"))]
    assert "rtld(GNU_HASH)" in command.output(
        ["rpm", "-qp", "--provides", str(realworld_corpus.rpm("libc6"))]).splitlines()


def _lock(found: Corpus, stacks: Path, name: str, seeds: list[str]) -> set[str]:
    lines = "".join(f'"{seed}" = "the app needs it"\n' for seed in seeds)
    (stacks / f"{name}.toml").write_text(
        f'[stack]\ndescription = "{name}"\nclass = "deps"\nbase = "{corpus.BASE_ID}"\n\n'
        f'[source]\nrelease = "{found.release}"\nrepos = ["{corpus.REPO_ID}"]\n\n'
        f"[seeds]\n{lines}"
    )
    loaded = stackmod.load_stack(stacks, name)
    assert loaded.base.lib_dirs == found.lib_dirs
    result = locking.lock_stack(loaded, lock_path=stacks / f"{name}.lock.toml",
                                build_dir=stacks.parent / "build" / name,
                                progress=lambda line: None)
    for pkg in result.lock.packages:
        # A local repository's package is locked by its location inside the repository.
        assert location.is_relative(pkg.url), pkg.url
        assert (found.repo / pkg.url).is_file(), pkg.url
    return {p.name for p in result.lock.packages}


@pytest.mark.realworld
def test_libdnf5_resolves_seeds_on_the_corpus_base(
    realworld_corpus: Corpus, tmp_path: Path
) -> None:
    stacks = realworld_corpus.write_stacks_dir(tmp_path / "stacks")
    base_list = {p.name for p in basepkgs.load_base_packages(realworld_corpus.base_packages)}
    assert base_list == realworld_corpus.base_names
    locked = _lock(realworld_corpus, stacks, "gst-core", ["libgstreamer1.0-0"])
    assert "libgstreamer1.0-0" in locked
    assert "libcap2-bin" in locked  # a tool package a library requires (issue 13)
    assert not locked & realworld_corpus.base_names  # the base's packages stay out
    assert locked <= set(realworld_corpus.packages)
    # The whole corpus resolves: WebKitGTK, the GStreamer plugin sets, the GUI programs.
    seeds = list(packages.CORPUS_SEEDS)
    locked = _lock(realworld_corpus, stacks, "everything", seeds)
    assert set(seeds) - realworld_corpus.base_names <= locked
    assert not locked & realworld_corpus.base_names
    assert locked == set(realworld_corpus.packages) - realworld_corpus.base_names


@pytest.mark.realworld
def test_the_build_refuses_a_corpus_not_closed_for_rpm(
    realworld_corpus: Corpus, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for rpm_file in realworld_corpus.repo.glob("*.rpm"):
        (repo / rpm_file.name).symlink_to(rpm_file)
    corpus.check_closed(repo, tmp_path / "scratch")  # the real corpus is closed
    (repo / realworld_corpus.packages["libglut3.12"].rpm).unlink()
    with pytest.raises(CorpusError, match=r"libglut\.so\.3\(\)\(64bit\) is needed by libcaca0"):
        corpus.check_closed(repo, tmp_path / "scratch")


@pytest.mark.realworld
def test_base_loader_runs_the_bases_programs_and_resolves_gtk(
    realworld_corpus: Corpus, privileged: None
) -> None:
    tree = str(realworld_corpus.base_tree)
    # The kernel starts bash through its PT_INTERP /lib64/ld-linux-x86-64.so.2.
    out = command.output(["chroot", tree, "/usr/bin/bash", "--version"])
    assert out.startswith("GNU bash, version 5.")
    out = command.output(["chroot", tree, base.LOADER, "/usr/bin/bash", "-c", "echo ok"])
    assert out == "ok\n"
    listing = command.output(
        ["chroot", tree, base.LOADER, "--list", "/usr/lib/x86_64-linux-gnu/libgtk-3.so.0"])
    assert "not found" not in listing
    assert "libgdk-3.so.0 => /lib/x86_64-linux-gnu/libgdk-3.so.0" in listing or \
        "libgdk-3.so.0 => /usr/lib/x86_64-linux-gnu/libgdk-3.so.0" in listing


@pytest.mark.realworld
def test_base_is_merged_usr_and_stripped_like_the_fex_rootfs(realworld_corpus: Corpus) -> None:
    tree = realworld_corpus.base_tree
    for name, target in base.USRMERGE_LINKS:
        assert (tree / name).is_symlink() and os.readlink(tree / name) == target
    assert (tree / "lib64/ld-linux-x86-64.so.2").exists()
    assert set(os.listdir(tree / "usr/share")) == {"drirc.d"}  # Mesa's, kept as kiwi does
    kept_bin = os.listdir(tree / "usr/bin")
    assert "bash" in kept_bin
    assert all(any(fnmatch.fnmatchcase(n, p) for p in base.KEEP_BIN) for n in kept_bin)
    stripped = realworld_corpus.info["stripped"]
    assert {"glib-2.0", "icons", "fonts", "X11"} <= set(stripped["usr/share"])
    assert "fonts" in stripped["etc"]
    assert sorted(os.listdir(tree / "etc")) == ["ld.so.cache", "ld.so.conf", "ld.so.conf.d"]
    for gone in ("usr/libexec", "var", "run", "tmp"):
        assert not (tree / gone).exists()
    # Debian's /lib/x86_64-linux-gnu payload paths were written through the symlinks.
    assert (tree / "usr/lib/x86_64-linux-gnu/libc.so.6").is_file()
    assert (tree / "usr/lib/x86_64-linux-gnu/dri").is_dir()  # Mesa's software driver
    base_toml = stackmod.load_base(realworld_corpus.stacks_dir / "bases", corpus.BASE_ID)
    assert base_toml.image == realworld_corpus.base_image and base_toml.image.is_file()
    assert base_toml.lib_dirs == realworld_corpus.lib_dirs
    assert "/usr/lib/x86_64-linux-gnu" in base_toml.lib_dirs
    kiwi = realworld_corpus.base_packages.read_text().splitlines()
    assert all(len(line.split("|")) == 7 for line in kiwi)
    assert len(kiwi) == len(realworld_corpus.base_names)


@pytest.mark.realworld
def test_cache_reuse_detects_a_changed_entry(realworld_corpus: Corpus, tmp_path: Path) -> None:
    src = realworld_corpus.root
    copy = tmp_path / src.name
    (copy / "repo").mkdir(parents=True)
    (copy / "base").mkdir()
    shutil.copyfile(src / "corpus.json", copy / "corpus.json")
    shutil.copytree(src / "repo" / "repodata", copy / "repo" / "repodata")
    for rpm in (src / "repo").glob("*.rpm"):
        (copy / "repo" / rpm.name).symlink_to(rpm)
    (copy / "base" / "base.erofs").symlink_to(src / "base" / "base.erofs")
    assert len(corpus._load(copy).packages) == len(realworld_corpus.packages)
    repomd = copy / "repo" / "repodata" / "repomd.xml"
    repomd.write_bytes(repomd.read_bytes() + b" ")
    with pytest.raises(CorpusError, match="repomd"):
        corpus._load(copy)
    said: list[str] = []
    assert corpus._verified(copy, said.append) is None  # ensure() builds it again
    assert "does not verify" in said[0]
    shutil.copyfile(src / "repo" / "repodata" / "repomd.xml", repomd)
    next(iter(sorted((copy / "repo").glob("*.rpm")))).unlink()
    with pytest.raises(CorpusError, match="rpms"):
        corpus._load(copy)
    assert json.loads((copy / "corpus.json").read_text())["key"] == realworld_corpus.key
