"""Each invariant and each artifact class, on trees laid out from fixture ELF files or
staged from fixture RPMs, against a base holding the real glibc."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fexstack import digest, jsonio
from fexstack.errors import CheckError
from invariants import compat, elf
from invariants.check import check_tree
from invariants.policy import CheckPolicy
from invariants.report import Report, raise_on_failure, write_report
from invariants.view import Layer
from overlays.stack import ElfAllowance, Waiver
from testkit.factory import Executable, Factory, File, Library, Package, Symlink, glibc_package
from tests.invariants_support import base_layer, fedora_base, stage


@pytest.fixture(scope="module")
def base(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fedora_base(factory, tmp_path_factory.mktemp("bases"))


def run(tree: Path, base: Path, klass: str = "deps", owners: dict[str, str] | None = None,
        with_compat: bool = False, **kwargs: object) -> Report:
    layers = [base_layer(base)]
    fix = compat.ensure(base) if with_compat else None
    if fix is not None:
        layers.append(Layer("compat", fix, "compat"))
    digests = kwargs.pop("digests", None)
    return check_tree(tree, CheckPolicy(klass, **kwargs),  # type: ignore[arg-type]
                      owners=owners or {}, view_layers=layers,
                      digests=digests)  # type: ignore[arg-type]


def findings(report: Report, invariant: str, status: str | None = None) -> list[str]:
    return [f.path for f in report.findings
            if f.invariant == invariant and (status is None or f.status == status)]


def test_clean_library_passes_every_invariant(factory: Factory, base: Path, tmp_path: Path) -> None:
    factory.elf(tmp_path / "t/usr/lib64/libclean.so.1", Library("libclean.so.1"))
    report = run(tmp_path / "t", base)
    assert not report.failed, report.summary()
    statuses = {n: i["status"] for n, i in report.invariants.items()}
    assert statuses["compat-shape"] == "skipped"
    assert {s for n, s in statuses.items() if n != "compat-shape"} == {"pass"}
    raise_on_failure(report)  # no exception


def test_arch_ebpf_accounted_only_through_allow_elf(factory: Factory, base: Path,
                                                    tmp_path: Path) -> None:
    factory.elf(tmp_path / "t/usr/lib64/bpf/prog.o", Library("prog.o", machine="bpf"))
    allowed = run(tmp_path / "t", base,
                  allow_elf=[ElfAllowance("/usr/lib64/bpf/*.o", "eBPF programs, never loaded")])
    assert allowed.invariants["arch"]["status"] == "accounted"
    [finding] = [f for f in allowed.findings if f.invariant == "arch"]
    assert (finding.path, finding.status, finding.reason) == (
        "/usr/lib64/bpf/prog.o", "accounted", "eBPF programs, never loaded")
    assert not allowed.failed
    plain = run(tmp_path / "t", base)
    assert plain.failed and findings(plain, "arch", "fail") == ["/usr/lib64/bpf/prog.o"]


def test_arch_aarch64_library_fails(factory: Factory, base: Path, tmp_path: Path) -> None:
    factory.elf(tmp_path / "t/usr/lib64/libarm.so.1", Library("libarm.so.1", machine="aarch64"))
    report = run(tmp_path / "t", base)
    assert report.failed
    [finding] = [f for f in report.findings if f.invariant == "arch"]
    assert finding.path == "/usr/lib64/libarm.so.1" and "aarch64" in finding.detail
    assert report.elf["/usr/lib64/libarm.so.1"]["arch"] == "aarch64"


def test_arch_i386_fails_unless_allow_32bit(factory: Factory, base: Path, tmp_path: Path) -> None:
    factory.elf(tmp_path / "t/usr/lib/libold.so.1", Library("libold.so.1", machine="i386"))
    report = run(tmp_path / "t", base)
    assert findings(report, "arch", "fail") == ["/usr/lib/libold.so.1"]
    assert "allow_32bit" in report.findings[0].hint
    allowed = run(tmp_path / "t", base, allow_32bit=True)
    assert allowed.invariants["arch"]["status"] == "pass" and not allowed.failed


def test_arch_garbage_elf_is_a_finding_not_a_crash(base: Path, tmp_path: Path) -> None:
    lib = tmp_path / "t/usr/lib64/libjunk.so.1"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00\x3e\x00" + b"\xff" * 40)
    (tmp_path / "t/usr/lib64/tiny").write_bytes(b"\x7fELF")
    report = run(tmp_path / "t", base)
    bad = [f for f in report.findings if f.invariant == "arch"]
    assert sorted(f.path for f in bad) == ["/usr/lib64/libjunk.so.1", "/usr/lib64/tiny"]
    assert all("unparseable ELF" in f.detail for f in bad)
    assert "error" in report.elf["/usr/lib64/libjunk.so.1"]


def test_abi_boundary_names_file_and_package(factory: Factory, base: Path,
                                             tmp_path: Path) -> None:
    sneaky = Package("sneaky", contents=(
        File("/opt/sneaky/libstdc++.so.6", b"not really", 0o755),
        Library("libsneaky.so.1", path="/usr/lib64/libsneaky.so.1"),
    ))
    owners = stage(factory, [glibc_package(), sneaky], tmp_path / "t")
    report = run(tmp_path / "t", base, owners=owners)
    assert report.failed and report.invariants["abi-boundary"]["status"] == "fail"
    found = {f.path: f for f in report.findings if f.invariant == "abi-boundary"}
    assert found["/usr/lib64/libc.so.6"].package == "glibc"
    assert "brought by glibc" in found["/usr/lib64/libc.so.6"].detail
    assert found["/usr/lib64/ld-linux-x86-64.so.2"].package == "glibc"
    assert "ld-linux*.so*" in found["/usr/lib64/ld-linux-x86-64.so.2"].detail
    # matched by package: glibc's /etc/ld.so.conf; by name: a file of another package
    assert found["/etc/ld.so.conf"].package == "glibc"
    assert found["/opt/sneaky/libstdc++.so.6"].package == "sneaky"
    assert "/usr/lib64/libsneaky.so.1" not in found
    with pytest.raises(CheckError) as caught:
        raise_on_failure(report)
    assert "/usr/lib64/libc.so.6" in caught.value.message and "glibc" in caught.value.message


def _shell_tree(factory: Factory, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    pkg = Package("bash", contents=(
        Executable("/usr/bin/bash"),
        Symlink("/usr/lib64/tools/sh", "../../bin/bash"),
        Symlink("/opt/run", "/bin/bash"),
        Library("libok.so.1", path="/usr/lib64/libok.so.1"),
    ))
    return tmp_path / "t", stage(factory, [pkg], tmp_path / "t")


def test_library_focus_rejects_executables_and_links_to_them(factory: Factory, base: Path,
                                                            tmp_path: Path) -> None:
    tree, owners = _shell_tree(factory, tmp_path)
    report = run(tree, base, owners=owners)
    assert report.failed
    assert findings(report, "library-focus", "fail") == [
        "/opt/run", "/usr/bin/bash", "/usr/lib64/tools/sh"]
    assert {f.package for f in report.findings if f.invariant == "library-focus"} == {"bash"}


def test_precedence_collision_fails_directory_merge_ok(factory: Factory, base: Path,
                                                      tmp_path: Path) -> None:
    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/libnew.so.1", Library("libnew.so.1"))  # /usr/lib64 merges
    (tree / "etc").mkdir()
    (tree / "etc/ld.so.conf").write_text("/opt\n")  # a file of the base
    (tree / "lib").mkdir()  # a directory over the base's lib -> usr/lib symlink
    report = run(tree, base, owners={"/etc/ld.so.conf": "evil-conf"})
    assert findings(report, "precedence", "fail") == ["/etc/ld.so.conf", "/lib"]
    conf = next(f for f in report.findings if f.path == "/etc/ld.so.conf")
    assert conf.package == "evil-conf" and "layer base" in conf.detail
    assert "symlink" in next(f.detail for f in report.findings if f.path == "/lib")


def test_isa_v4_library_fails_naming_the_file(factory: Factory, base: Path,
                                              tmp_path: Path) -> None:
    factory.elf(tmp_path / "t/usr/lib64/libv4.so.1", Library("libv4.so.1", isa_level="v4"))
    factory.elf(tmp_path / "t/usr/lib64/libv3.so.1", Library("libv3.so.1", isa_level="v3"))
    report = run(tmp_path / "t", base)
    assert findings(report, "isa", "fail") == ["/usr/lib64/libv4.so.1"]
    assert "x86-64-v4" in report.findings[0].detail
    assert report.elf["/usr/lib64/libv3.so.1"]["isa_needed"] == "x86-64-v3"
    assert report.elf["/usr/lib64/libv4.so.1"]["isa_needed"] == "x86-64-v4"


def test_interpreter_must_resolve_and_compat_fixes_it(factory: Factory, base: Path,
                                                     tmp_path: Path) -> None:
    factory.elf(tmp_path / "t/opt/app/app", Executable("/opt/app/app"))
    report = run(tmp_path / "t", base)
    assert findings(report, "interpreter", "fail") == ["/opt/app/app"]
    fix = compat.ensure(base)
    assert fix is not None
    fixed = check_tree(tmp_path / "t", CheckPolicy("deps"), owners={},
                       view_layers=[base_layer(base), Layer("compat", fix, "compat")])
    assert fixed.invariants["interpreter"]["status"] == "pass", fixed.summary()


def test_linkability_reports_the_file_for_each_soname(factory: Factory, base: Path,
                                                      tmp_path: Path) -> None:
    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/libdep.so.1", Library("libdep.so.1"))
    factory.elf(tree / "usr/lib64/libtop.so.1",
                Library("libtop.so.1", needs=("libdep.so.1", "libgone.so.9")))
    report = run(tree, base)
    [row] = [r for r in report.linkability if r["path"] == "/usr/lib64/libtop.so.1"]
    got = {n["soname"]: (n["path"], n["via"]) for n in row["needs"]}
    assert got == {"libdep.so.1": ("/usr/lib64/libdep.so.1", "default"),
                   "libgone.so.9": (None, "none"),
                   "libc.so.6": ("/usr/lib64/libc.so.6", "ld.so.cache")}
    assert findings(report, "linkability", "fail") == ["/usr/lib64/libtop.so.1"]
    assert "libgone.so.9" in report.findings[-1].detail


def test_waiver_accounts_and_unmatched_waiver_warns(factory: Factory, base: Path,
                                                   tmp_path: Path) -> None:
    tree, owners = _shell_tree(factory, tmp_path)
    waivers = [
        Waiver("library-focus", "the app's AppRun needs this bash", path="/usr/bin/*"),
        Waiver("D", "helper links", package="bash"),
        Waiver("precedence", "nothing collides here", path="/nowhere/*"),
    ]
    report = run(tree, base, owners=owners, waivers=waivers, with_compat=True)
    assert not report.failed, report.summary()
    focus = {f.path: (f.status, f.reason) for f in report.findings
             if f.invariant == "library-focus"}
    assert focus["/usr/bin/bash"] == ("accounted", "the app's AppRun needs this bash")
    assert focus["/opt/run"] == ("accounted", "helper links")
    assert report.invariants["library-focus"]["status"] == "accounted"
    assert len(report.warnings) == 1 and "/nowhere/*" in report.warnings[0]
    assert "warning:" in report.summary()


def test_base_refresh_reports_what_deps_forbids(factory: Factory, base: Path,
                                                tmp_path: Path) -> None:
    owners = stage(factory, [glibc_package()], tmp_path / "t")
    tree, shell_owners = _shell_tree(factory, tmp_path)
    owners.update(shell_owners)
    deps = run(tree, base, owners=owners)
    assert deps.failed
    refresh = run(tree, base, "base-refresh", owners=owners, with_compat=True)
    assert not refresh.failed, refresh.summary()
    for name in ("abi-boundary", "precedence", "library-focus"):
        assert refresh.invariants[name]["status"] == "reported"
    # each override of the base is listed
    assert "/usr/lib64/libc.so.6" in findings(refresh, "precedence", "reported")
    for klass in ("base", "gpu"):
        assert not run(tree, base, klass, owners=owners).failed


def test_compat_class_allows_only_loader_symlinks(factory: Factory, base: Path,
                                                  tmp_path: Path) -> None:
    fix = compat.ensure(base)
    assert fix is not None
    good = check_tree(fix, CheckPolicy("compat"), owners={}, view_layers=[base_layer(base)])
    assert not good.failed, good.summary()
    assert good.invariants["compat-shape"]["status"] == "pass"
    bad = tmp_path / "bad"
    (bad / "lib64").mkdir(parents=True)
    (bad / "lib64/ld-linux-x86-64.so.2").symlink_to("/usr/lib64/libc.so.6")
    factory.elf(bad / "lib64/libextra.so.1", Library("libextra.so.1"))
    report = check_tree(bad, CheckPolicy("compat"), owners={}, view_layers=[base_layer(base)])
    assert findings(report, "compat-shape", "fail") == [
        "/lib64/ld-linux-x86-64.so.2", "/lib64/libextra.so.1"]


def test_compat_generation_once_per_base(factory: Factory, base: Path,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    first = compat.ensure(base)
    assert first is not None
    link = first / "lib64/ld-linux-x86-64.so.2"
    assert os.readlink(link) == "/usr/lib64/ld-linux-x86-64.so.2"
    assert sorted(str(p.relative_to(first)) for p in first.rglob("*")) == [
        "lib64", "lib64/ld-linux-x86-64.so.2"]
    stamp = link.lstat().st_mtime_ns
    again = compat.ensure(base)
    assert again == first and link.lstat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]
    with_lib64 = fedora_base(factory, tmp_path_factory.mktemp("b"), lib64_symlink=True)
    assert compat.ensure(with_lib64) is None


def test_each_elf_is_parsed_once_across_invariants(factory: Factory, base: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEXSTACK_CACHE", str(tmp_path / "cache"))  # no stored facts yet
    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/liba.so.1", Library("liba.so.1"))
    factory.elf(tree / "usr/lib64/libb.so.1", Library("libb.so.1", needs=("liba.so.1",)))
    factory.elf(tree / "opt/x/x", Executable("/opt/x/x", needs=("libb.so.1",)))
    elf.clear_cache()
    before = elf.PARSES
    run(tree, base)
    parsed = elf.PARSES - before
    elf_entries = [k for k, v in elf._CACHE.items() if v is not None]
    # arch, isa, interpreter and linkability all read the three files, and the loader
    # reads libc and ld.so: each distinct file is parsed exactly once.
    assert parsed == len(elf_entries) >= 3 + 2
    run(tree, base)
    assert elf.PARSES - before == parsed


def test_elf_facts_persist_across_runs_by_content(factory: Factory, base: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEXSTACK_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/liba.so.1", Library("liba.so.1"))
    factory.elf(tree / "usr/lib64/libb.so.1", Library("libb.so.1", needs=("liba.so.1",)))
    elf.clear_cache()
    before = elf.PARSES
    first = run(tree, base)
    assert elf.PARSES - before >= 2
    assert (tmp_path / "cache" / elf.STORE).is_file()
    elf.clear_cache()  # a new process: only the persistent cache is left
    before = elf.PARSES
    assert run(tree, base).elf == first.elf
    assert elf.PARSES - before == 0  # nothing parsed again, base files included
    # Same size, new content: found by its digest, parsed once more, with the new facts.
    lib = tree / "usr/lib64/libb.so.1"
    data = lib.read_bytes()
    lib.write_bytes(data.replace(b"liba.so.1", b"libz.so.1"))
    elf.clear_cache()
    before = elf.PARSES
    again = run(tree, base)
    assert elf.PARSES - before == 1
    assert again.elf["/usr/lib64/libb.so.1"]["needed"][0] == "libz.so.1"


def test_recorded_digests_spare_reading_files(factory: Factory, base: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With the stage step's digests, stored answers ("ELF: these facts", "not ELF") are
    used without opening the files; a file written since (mtime not 0) is read again."""
    monkeypatch.setenv("FEXSTACK_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/libc1.so.1", Library("libc1.so.1"))
    (tree / "usr/share/c1").mkdir(parents=True)
    (tree / "usr/share/c1/data.txt").write_text("not ELF\n")
    digests = {}
    for path in ("/usr/lib64/libc1.so.1", "/usr/share/c1/data.txt"):
        disk = tree / path.lstrip("/")
        os.utime(disk, ns=(0, 0))  # as the stage step leaves every file
        digests[path] = (digest.sha256_file(disk), disk.stat().st_size)
    elf.clear_cache()
    first = run(tree, base, digests=digests)
    elf.clear_cache()
    opened: list[Path] = []
    real_open = open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).startswith(str(tree)):
            opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    before = elf.PARSES
    with monkeypatch.context() as mp:
        mp.setattr("builtins.open", spy)
        assert run(tree, base, digests=digests).elf == first.elf
    assert opened == []
    assert elf.PARSES - before == 0
    # Rewritten in place with the same size: the recorded digest no longer counts.
    lib = tree / "usr/lib64/libc1.so.1"
    lib.write_bytes(lib.read_bytes().replace(b"libc1.so.1", b"libc2.so.1"))
    elf.clear_cache()
    changed = run(tree, base, digests=digests)
    assert elf.PARSES - before == 1
    assert changed.elf["/usr/lib64/libc1.so.1"]["soname"] == "libc2.so.1"


def test_report_json_is_schema_valid_sorted_and_stable(factory: Factory, base: Path,
                                                       tmp_path: Path) -> None:
    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/libg.so.1", Library("libg.so.1", runpath="$ORIGIN"))
    report = run(tree, base, owners={"/usr/lib64/libg.so.1": "g"})
    out = tmp_path / "build/g/invariants.json"
    write_report(report, out)
    text = out.read_text()
    data = json.loads(text)
    jsonio.validate(data, "invariants")
    assert text == jsonio.dumps(data)  # sorted keys, stable layout
    write_report(run(tree, base, owners={"/usr/lib64/libg.so.1": "g"}), out)
    assert out.read_text() == text
    assert data["failed"] is False and data["findings"] == [] and data["warnings"] == []
    assert data["elf"] == {"/usr/lib64/libg.so.1": {
        "arch": "x86_64", "class": 64, "machine": "EM_X86_64", "type": "ET_DYN",
        "interp": None, "soname": "libg.so.1", "needed": ["libc.so.6"], "rpath": None,
        "runpath": "$ORIGIN", "isa_needed": None, "isa_used": None,
        "isa_needed_bits": 0, "isa_used_bits": 0}}
    assert data["linkability"] == [{"path": "/usr/lib64/libg.so.1", "kind": "library",
                                    "needs": [{"soname": "libc.so.6",
                                               "needed_by": "/usr/lib64/libg.so.1",
                                               "path": "/usr/lib64/libc.so.6",
                                               "real": "/usr/lib64/libc.so.6",
                                               "via": "runpath", "detail": ""}]}]
    assert [layer["class"] for layer in data["layers"]] == ["base", "deps"]
    assert set(data["invariants"]) == {"arch", "abi-boundary", "precedence", "library-focus",
                                       "privilege",
                                       "interpreter", "isa", "linkability", "abi-conflict",
                                       "compat-shape", "caches"}


def test_report_round_trips_and_the_up_to_date_test_reads_it_validated(
        factory: Factory, base: Path, tmp_path: Path) -> None:
    import dataclasses

    from invariants.context import Finding
    from tasks.uptodate import report_passed

    tree = tmp_path / "t"
    factory.elf(tree / "usr/lib64/libg.so.1", Library("libg.so.1", runpath="$ORIGIN"))
    report = run(tree, base, owners={"/usr/lib64/libg.so.1": "g"})
    out = tmp_path / "build/g/invariants.json"
    write_report(report, out)
    assert Report.read(out) == report
    assert report_passed(out)()
    failed = dataclasses.replace(
        report,
        invariants={**report.invariants, "arch": {**report.invariants["arch"], "status": "fail"}},
        findings=(Finding("arch", "/usr/lib64/libg.so.1", "not x86_64", "exclude it", "g"),),
    )
    write_report(failed, out)
    assert Report.read(out) == failed and Report.read(out).failed
    assert not report_passed(out)()  # a failed check is never up to date
    write_report(report, out)
    data = jsonio.read(out)
    out.write_text(jsonio.dumps({**data, "findings": [{"invariant": "arch"}]}))
    with pytest.raises(CheckError) as err:
        Report.read(out)
    assert str(out) in err.value.message and "invariants schema at findings/0" in \
        err.value.message
    assert err.value.hint == "check the tree again: doit check:g"
    assert not report_passed(out)()  # not a report: the check runs again
    out.unlink()
    with pytest.raises(CheckError, match="no invariants report"):
        Report.read(out)
    assert not report_passed(out)()


def test_unknown_class_is_an_error(base: Path, tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    with pytest.raises(CheckError):
        run(tmp_path / "t", base, "nonsense")




def test_privilege_fails_setuid_and_setgid_in_deps(factory: Factory, base: Path,
                                                   tmp_path: Path) -> None:
    pkg = Package("suidlib", contents=(
        File("/usr/libexec/suidlib/helper", b"#!/bin/sh\n", 0o4755),
        File("/usr/libexec/suidlib/group", b"#!/bin/sh\n", 0o2755),
        File("/usr/share/suidlib/plain", b"data\n", 0o644),
    ))
    tree = tmp_path / "t"
    owners = stage(factory, [pkg], tree)
    report = run(tree, base, owners=owners)
    assert findings(report, "privilege", "fail") == [
        "/usr/libexec/suidlib/group", "/usr/libexec/suidlib/helper"]
    assert {f.package for f in report.findings if f.invariant == "privilege"} == {"suidlib"}
    details = " ".join(f.detail for f in report.findings if f.invariant == "privilege")
    assert "setuid" in details and "setgid" in details
    refresh = run(tree, base, klass="base-refresh", owners=owners)
    assert refresh.invariants["privilege"]["status"] == "reported"
    assert not any(f.invariant == "privilege" and f.status == "fail" for f in refresh.findings)


# --- ABI conflicts: libsoup 2 and libsoup 3 in one closure --------------------------------

GLIB = Library("libglib-2.0.so.0")
SOUP2 = Library("libsoup-2.4.so.1", needs=("libglib-2.0.so.0",))
SOUP3 = Library("libsoup-3.0.so.0", needs=("libglib-2.0.so.0",))
WEBKIT40 = Library("libwebkit2gtk-4.0.so.37", needs=("libsoup-2.4.so.1",))
# a plugin built against libsoup 3 that a WebKitGTK 4.0 stack would drag in
GST_SOUP3 = Library("libgstsoup3.so", path="/usr/lib64/gstreamer-1.0/libgstsoup3.so",
                    needs=("libsoup-3.0.so.0", "libwebkit2gtk-4.0.so.37"))


def test_abi_conflict_names_both_paths_and_sonames(factory: Factory, base: Path,
                                                   tmp_path: Path) -> None:
    from invariants import conflict

    factory.register(GLIB, SOUP2, SOUP3, WEBKIT40)
    tree = tmp_path / "t"
    for lib in (GLIB, SOUP2, SOUP3, WEBKIT40, GST_SOUP3):
        factory.elf(tree / lib.install_path.lstrip("/"), lib)
    report = run(tree, base, owners={"/usr/lib64/gstreamer-1.0/libgstsoup3.so": "gst-soup"})
    assert report.failed and report.invariants["abi-conflict"]["status"] == "fail"
    [finding] = [f for f in report.findings if f.invariant == "abi-conflict"]
    assert finding.path == "/usr/lib64/gstreamer-1.0/libgstsoup3.so"
    assert finding.package == "gst-soup"
    assert "libsoup-2.4.so.1 (/usr/lib64/libsoup-2.4.so.1)" in finding.detail
    assert "libsoup-3.0.so.0 (/usr/lib64/libsoup-3.0.so.0)" in finding.detail
    assert "abort" in finding.detail and finding.hint
    # the same tree without the plugin: both sonames are there, but no process loads both
    (tree / "usr/lib64/gstreamer-1.0/libgstsoup3.so").unlink()
    assert run(tree, base).invariants["abi-conflict"]["status"] == "pass"
    # the rule is data: another pair is one more row
    assert [(c.first, c.second) for c in conflict.CONFLICTS] == [
        ("libsoup-2.4.so.1", "libsoup-3.0.so.0")]


def test_compat_on_a_base_whose_lib64_is_a_symlink(factory: Factory, tmp_path: Path,
                                                   tmp_path_factory: pytest.TempPathFactory
                                                   ) -> None:
    """Fedora's RootFS very likely has /lib64 -> usr/lib64 (the filesystem package)."""
    import shutil

    from invariants.view import View, index

    fedora = fedora_base(factory, tmp_path_factory.mktemp("f44"), lib64_symlink=True)
    assert os.readlink(fedora / "lib64") == "usr/lib64"
    assert compat.plan(index(fedora, "base")) == {}  # nothing to add
    assert compat.ensure(fedora) is None
    # the same base with its loader moved away from /usr/lib64: /lib64/ld-linux... is
    # missing, and the link goes through the base's /lib64 symlink, never replacing it
    moved = tmp_path / "moved"
    shutil.copytree(fedora, moved, symlinks=True)
    (moved / "opt/rtld").mkdir(parents=True)
    os.rename(moved / "usr/lib64/ld-linux-x86-64.so.2", moved / "opt/rtld/ld-linux-x86-64.so.2")
    tree = compat.ensure(moved)
    assert tree is not None
    entries = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    assert entries == ["usr", "usr/lib64", "usr/lib64/ld-linux-x86-64.so.2"]
    for folder in (p for p in tree.rglob("*") if p.is_dir() and not p.is_symlink()):
        assert not (moved / folder.relative_to(tree)).is_symlink(), folder
    view = View([Layer("base", moved, "base"), Layer("compat", tree, "compat")],
                [index(moved, "base"), index(tree, "compat")])
    assert view.resolve("/lib64", follow_last=False).kind == "symlink"
    found = view.resolve(compat.X86_64_INTERP)
    assert found.kind == "file" and found.path == "/opt/rtld/ld-linux-x86-64.so.2"
    # and a plan that would cross the symlink is refused
    with pytest.raises(CheckError, match="turn the base's symlink /lib64"):
        compat._keep_base_symlinks(index(moved, "base"), {"/lib64/ld-linux-x86-64.so.2": "x"})


@pytest.mark.privileged
def test_compat_keeps_the_lib64_symlink_under_real_overlayfs(
    privileged: None, factory: Factory, tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The kernel's overlayfs (compat over base, as muvm stacks them) agrees with the view:
    /lib64 stays the base's symlink and the loader path resolves through it."""
    import shutil
    import subprocess

    fedora = fedora_base(factory, tmp_path_factory.mktemp("f44"), lib64_symlink=True)
    moved = tmp_path / "moved"
    shutil.copytree(fedora, moved, symlinks=True)
    (moved / "opt/rtld").mkdir(parents=True)
    os.rename(moved / "usr/lib64/ld-linux-x86-64.so.2", moved / "opt/rtld/ld-linux-x86-64.so.2")
    tree = compat.ensure(moved)
    assert tree is not None
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = ('mount -t overlay overlay -o "lowerdir=$1:$2" "$3" && stat -c %F "$3/lib64" && '
              'readlink "$3/lib64" && link=$(readlink "$3/lib64/ld-linux-x86-64.so.2") && '
              'echo "$link" && stat -c %F "$3$link"')
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(tree), str(moved),
                          str(mnt)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    kind, target, loader, loader_kind = out.stdout.splitlines()
    assert (kind, target) == ("symbolic link", "usr/lib64")
    # the compat link, reached through the base's /lib64 symlink, leads to the loader file
    assert (loader, loader_kind) == ("/opt/rtld/ld-linux-x86-64.so.2", "regular file")


def test_many_elf_files_are_parsed_in_processes_with_the_same_facts(
    factory: Factory, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past elf.PARALLEL_MIN files the check parses in forked processes: the same facts,
    each ELF file counted once, and stored for the next run."""
    monkeypatch.setenv("FEXSTACK_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "t"
    digests = {}
    for i in range(12):
        path = f"/usr/lib64/libmany{i}.so.1"
        factory.elf(tree / path.lstrip("/"), Library(f"libmany{i}.so.1",
                                                     needs=("libc.so.6",)))
        (tree / f"usr/share/many/{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (tree / f"usr/share/many/{i}.txt").write_text(f"not ELF {i}\n")
    for disk in sorted(p for p in tree.rglob("*") if p.is_file()):
        os.utime(disk, ns=(0, 0))
        digests["/" + str(disk.relative_to(tree))] = (digest.sha256_file(disk), disk.stat().st_size)
    elf.clear_cache()
    serial = run(tree, base, digests=digests)
    monkeypatch.setenv("FEXSTACK_CACHE", str(tmp_path / "cache2"))  # nothing stored there
    monkeypatch.setattr(elf, "PARALLEL_MIN", 4)
    monkeypatch.setattr(elf, "PARALLEL_CHUNK", 3)
    elf.clear_cache()
    forks: list[int] = []
    real = elf._processes
    monkeypatch.setattr(elf, "_processes", lambda jobs: forks.append(real(jobs)) or forks[-1])
    before = elf.PARSES
    parallel = run(tree, base, digests=digests)
    assert parallel.elf == serial.elf and len(parallel.elf) == 12
    assert forks and forks[0] == min(elf.PARALLEL_MAX, len(os.sched_getaffinity(0)))
    assert elf.PARSES - before >= 12  # the overlay's 12 ELF files, counted here once each
    elf.clear_cache()
    before = elf.PARSES
    assert run(tree, base, digests=digests).elf == serial.elf
    assert elf.PARSES - before == 0  # the processes' facts were stored
