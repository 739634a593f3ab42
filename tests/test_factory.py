"""The fixture factory makes real RPMs, ELF files, signed packages, repositories and bases."""

from __future__ import annotations

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from fexstack import command
from testkit.factory import (
    Dir,
    Executable,
    Factory,
    FactoryError,
    File,
    GpgKey,
    Library,
    Package,
    Symlink,
    base_tree,
    libgcc_package,
    libstdcxx_package,
    write_kiwi_packages,
)

BAR = Package("libbar", contents=(Library("libbar.so.1"),))
FOO = Package(
    "libfoo", version="2.0", contents=(Library("libfoo.so.1", needs=("libbar.so.1",)),)
)
APP = Package(
    "app",
    contents=(Executable("/usr/bin/app", needs=("libfoo.so.1", "libm.so.6")),),
)


def rpm_query(rpm: Path, *args: str) -> list[str]:
    return command.output(["rpm", "-qp", *args, str(rpm)]).splitlines()


def dynamic_tags(path: Path) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        section = elf.get_section_by_name(".dynamic")
        assert section is not None, f"{path} has no .dynamic"
        for tag in section.iter_tags():
            if tag.entry.d_tag == "DT_NEEDED":
                tags.setdefault("NEEDED", []).append(tag.needed)
            elif tag.entry.d_tag == "DT_RUNPATH":
                tags.setdefault("RUNPATH", []).append(tag.runpath)
            elif tag.entry.d_tag == "DT_RPATH":
                tags.setdefault("RPATH", []).append(tag.rpath)
            elif tag.entry.d_tag == "DT_SONAME":
                tags.setdefault("SONAME", []).append(tag.soname)
    return tags


def isa_needed(path: Path) -> int:
    """The GNU_PROPERTY_X86_ISA_1_NEEDED bit mask (0 when absent)."""
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        for section in elf.iter_sections():
            if section.name != ".note.gnu.property":
                continue
            for note in section.iter_notes():
                for prop in note["n_desc"]:
                    if prop["pr_type"] == "GNU_PROPERTY_X86_ISA_1_NEEDED":
                        return int(prop["pr_data"])
    return 0


def resolve(repo: Path, seeds: list[str], tmp: Path) -> dict[str, str]:
    """Resolve ``seeds`` against ``repo`` with libdnf5; {name: nevra} of the transaction."""
    import libdnf5

    base = libdnf5.base.Base()
    config = base.get_config()
    config.installroot = str(tmp / "root")
    config.cachedir = str(tmp / "cache")
    config.system_cachedir = str(tmp / "syscache")
    config.reposdir = []
    config.varsdir = []
    config.plugins = False
    config.use_host_config = False
    config.pkg_gpgcheck = False
    config.install_weak_deps = False
    config.ignorearch = True
    base.get_vars().get().set("arch", "x86_64")
    base.setup()
    repo_obj = base.get_repo_sack().create_repo("fixtures")
    repo_obj.get_config().baseurl = [repo.as_uri()]
    base.get_repo_sack().load_repos(libdnf5.repo.Repo.Type_AVAILABLE)
    goal = libdnf5.base.Goal(base)
    for seed in seeds:
        goal.add_rpm_install(seed)
    transaction = goal.resolve()
    assert transaction.get_problems() == 0, list(transaction.get_resolve_logs_as_strings())
    return {
        t.get_package().get_name(): t.get_package().get_nevra()
        for t in transaction.get_transaction_packages()
    }


def test_soname_requires_resolve_with_libdnf5(
    factory: Factory, glibc: Package, tmp_path: Path
) -> None:
    foo_rpm = factory.rpm(FOO)
    requires = rpm_query(foo_rpm, "--requires")
    assert "libbar.so.1()(64bit)" in requires
    assert "libc.so.6()(64bit)" in requires
    assert "libbar.so.1()(64bit)" in rpm_query(factory.rpm(BAR), "--provides")
    assert "libc.so.6()(64bit)" in rpm_query(factory.rpm(glibc), "--provides")

    repo = factory.repo(tmp_path / "repo", [BAR, FOO, glibc])
    assert (repo / "repodata" / "repomd.xml").exists()
    assert sorted(p.name for p in repo.glob("*.rpm")) == [
        "glibc-2.99-1.x86_64.rpm",
        "libbar-1.0-1.x86_64.rpm",
        "libfoo-2.0-1.x86_64.rpm",
    ]
    resolved = resolve(repo, ["libfoo"], tmp_path / "dnf")
    assert resolved == {
        "libfoo": "libfoo-2.0-1.x86_64",
        "libbar": "libbar-1.0-1.x86_64",
        "glibc": "glibc-2.99-1.x86_64",
    }


def test_same_spec_is_cached_and_bytes_are_reproducible(tmp_path: Path) -> None:
    pkg = Package("cached", contents=(Library("libcached.so.1"), File("/etc/cached.conf", b"x")))
    factory = Factory(tmp_path / "one")
    first = factory.rpm(pkg)
    assert factory.rpm(pkg) == first
    assert factory.built == 1, "the same spec was rebuilt"
    changed = factory.rpm(Package("cached", release="2", contents=pkg.contents))
    assert changed != first and factory.built == 2
    # A later session on the same workdir reuses the file.
    again = Factory(tmp_path / "one")
    assert again.rpm(pkg) == first and again.built == 0
    # A separate factory (nothing cached) builds the very same bytes.
    fresh = Factory(tmp_path / "two").rpm(pkg)
    assert fresh.read_bytes() == first.read_bytes()


def test_machines_and_isa_levels(factory: Factory, tmp_path: Path) -> None:
    specs: list[Library | Executable] = [
        Library("libarm.so.1", machine="aarch64"),
        Executable("/opt/arm/bin/armapp", machine="aarch64", needs=("libarm.so.1",)),
        Library("libold.so.1", machine="i386"),
        Library("probe.bpf.o", path="/usr/lib64/bpf/probe.bpf.o", machine="bpf"),
        Library("libv4.so.1", isa_level="v4"),
        Library("libplain.so.1"),
        Executable("/usr/bin/v3app", isa_level="v3"),
    ]
    out = {s.install_path: factory.elf(tmp_path / s.install_path.lstrip("/"), s) for s in specs}
    headers = {}
    for path, file in out.items():
        with file.open("rb") as fh:
            elf = ELFFile(fh)
            headers[path] = (elf["e_machine"], elf.elfclass, elf["e_type"])
    assert headers["/usr/lib64/libarm.so.1"] == ("EM_AARCH64", 64, "ET_DYN")
    assert headers["/usr/lib/libold.so.1"] == ("EM_386", 32, "ET_DYN")
    assert headers["/usr/lib64/bpf/probe.bpf.o"] == ("EM_BPF", 64, "ET_REL")
    assert headers["/usr/lib64/libv4.so.1"] == ("EM_X86_64", 64, "ET_DYN")
    assert dynamic_tags(out["/opt/arm/bin/armapp"])["NEEDED"] == ["libarm.so.1"]
    v4, v3, v2, baseline = 8, 4, 2, 1
    assert isa_needed(out["/usr/lib64/libv4.so.1"]) & v4
    assert isa_needed(out["/usr/bin/v3app"]) & (v4 | v3) == v3
    # a baseline build needs no level above it (the baseline bit may or may not be set)
    assert isa_needed(out["/usr/lib64/libplain.so.1"]) & ~baseline == 0
    assert isa_needed(out["/usr/lib64/libv4.so.1"]) & ~(v4 | v3 | v2 | baseline) == 0
    notes = command.output(["readelf", "-n", str(out["/usr/lib64/libv4.so.1"])])
    assert "x86-64-v4" in notes


def test_foreign_arch_and_noarch_packages(factory: Factory) -> None:
    arm_lib = Library("libarm2.so.1", machine="aarch64")
    arm = factory.rpm(Package("armlib", arch="aarch64", contents=(arm_lib,)))
    old = factory.rpm(
        Package("oldlib", arch="i686", contents=(Library("libold2.so.1", machine="i386"),))
    )
    data = factory.rpm(
        Package(
            "data",
            arch="noarch",
            epoch=3,
            contents=(File("/usr/share/data/run.sh", b"#!/bin/sh\necho hi\n", 0o755),),
            requires=("glibc >= 2.99",),
            provides=("data-format = 5",),
            recommends=("libfoo",),
            conflicts=("olddata < 2",),
        )
    )
    qf = "%{NAME} %{EPOCHNUM} %{ARCH} %{RPMFORMAT}\n"
    assert rpm_query(arm, "--qf", qf) == ["armlib 0 aarch64 4"]
    assert "libarm2.so.1()(64bit)" in rpm_query(arm, "--provides")
    assert rpm_query(old, "--qf", qf) == ["oldlib 0 i686 4"]
    assert "libold2.so.1" in rpm_query(old, "--provides")
    assert rpm_query(data, "--qf", qf) == ["data 3 noarch 4"]
    requires = rpm_query(data, "--requires")
    assert "glibc >= 2.99" in requires and "/bin/sh" in requires
    assert "data-format = 5" in rpm_query(data, "--provides")
    assert rpm_query(data, "--recommends") == ["libfoo"]
    assert rpm_query(data, "--conflicts") == ["olddata < 2"]


def test_autoreq_off_drops_soname_dependencies(factory: Factory) -> None:
    rpm = factory.rpm(
        Package(
            "quiet", autoreq=False, contents=(Library("libquiet.so.1", needs=("libbar.so.1",)),)
        )
    )
    assert not any("so" in r for r in rpm_query(rpm, "--requires"))
    assert not any("libquiet" in p for p in rpm_query(rpm, "--provides"))


def test_runpath_and_rpath(factory: Factory, tmp_path: Path) -> None:
    factory.register(Library("libbar.so.1"))
    runpath = factory.elf(
        tmp_path / "librun.so.1",
        Library("librun.so.1", needs=("libbar.so.1",), runpath="$ORIGIN/../lib"),
    )
    rpath = factory.elf(
        tmp_path / "app",
        Executable("/opt/app/bin/app", needs=("librun.so.1",), rpath="/opt/app/lib"),
    )
    run_tags, rpath_tags = dynamic_tags(runpath), dynamic_tags(rpath)
    assert run_tags["RUNPATH"] == ["$ORIGIN/../lib"] and "RPATH" not in run_tags
    assert run_tags["SONAME"] == ["librun.so.1"]
    assert "libbar.so.1" in run_tags["NEEDED"]
    assert rpath_tags["RPATH"] == ["/opt/app/lib"] and "RUNPATH" not in rpath_tags
    assert rpath_tags["NEEDED"][0] == "librun.so.1"
    with pytest.raises(FactoryError, match="not both"):
        factory.elf(tmp_path / "x", Library("libboth.so.1", runpath="/a", rpath="/b"))


def test_setuid_symlink_dir_and_soname_link_survive(factory: Factory) -> None:
    rpm = factory.rpm(
        Package(
            "tools",
            contents=(
                File("/usr/libexec/tools/helper", b"\x7fnot-elf", 0o4755),
                File("/usr/libexec/tools/group", b"g", 0o2711),
                Symlink("/opt/tools/current", "../tools-1.0"),
                Dir("/opt/tools/private", 0o700),
                Library("libtool.so.3", path="/opt/tools/lib/libtool.so.3.1.0"),
            ),
        )
    )
    listing = {}
    for line in rpm_query(rpm, "-lv"):
        fields = line.split()
        listing[fields[-3] if "->" in fields else fields[-1]] = line
    assert listing["/usr/libexec/tools/helper"].startswith("-rwsr-xr-x")
    assert listing["/usr/libexec/tools/group"].startswith("-rwx--s--x")
    assert listing["/opt/tools/current"].startswith("lrwxrwxrwx")
    assert listing["/opt/tools/current"].endswith("/opt/tools/current -> ../tools-1.0")
    assert listing["/opt/tools/private"].startswith("drwx------")
    assert listing["/opt/tools/lib/libtool.so.3"].endswith("-> libtool.so.3.1.0")
    assert " root " in listing["/usr/libexec/tools/helper"]
    assert "libtool.so.3()(64bit)" in rpm_query(rpm, "--provides")


def _import_key(root: Path, key: GpgKey) -> None:
    root.mkdir(parents=True, exist_ok=True)
    command.run(["rpmkeys", "--root", str(root), "--import", str(key.public_key)])


def test_signed_rpm_verifies_with_its_key_only(
    factory: Factory, gpg_key: GpgKey, other_gpg_key: GpgKey, tmp_path: Path
) -> None:
    assert gpg_key.fingerprint != other_gpg_key.fingerprint
    assert factory.gpg_key(gpg_key.name) == gpg_key
    signed = factory.rpm(BAR, sign_with=gpg_key)
    assert signed != factory.rpm(BAR)
    _import_key(tmp_path / "good", gpg_key)
    good = command.output(["rpmkeys", "--root", str(tmp_path / "good"), "-Kv", str(signed)])
    assert f"key fingerprint: {gpg_key.fingerprint.lower()}: OK" in good
    _import_key(tmp_path / "bad", other_gpg_key)
    bad = command.run(
        ["rpmkeys", "--root", str(tmp_path / "bad"), "-Kv", str(signed)], check=False
    )
    assert bad.returncode != 0
    assert b"NOKEY" in bad.stdout
    unsigned = command.output(
        ["rpmkeys", "--root", str(tmp_path / "good"), "-Kv", str(factory.rpm(BAR))]
    )
    assert "signature" not in unsigned and "Payload SHA256 digest: OK" in unsigned

    repo = factory.repo(tmp_path / "signed-repo", [BAR], sign_with=gpg_key)
    assert (repo / "libbar-1.0-1.x86_64.rpm").read_bytes() == signed.read_bytes()
    as_file = factory.repo(tmp_path / "file-repo", [signed])
    assert (as_file / signed.name).read_bytes() == signed.read_bytes()
    with pytest.raises(FactoryError, match="already has a different"):
        factory.repo(as_file, [BAR])


def test_base_tree_loads_from_the_tree(factory: Factory, glibc: Package, tmp_path: Path) -> None:
    dest = base_tree(tmp_path / "base", [glibc, BAR, FOO, APP, libgcc_package()])
    assert (dest / "etc/ld.so.cache").is_file()
    assert (dest / "usr/lib64/ld-linux-x86-64.so.2").is_file()
    assert not (dest / "lib64").exists(), "the default base has no /lib64"
    loader = dest / "usr/lib64/ld-linux-x86-64.so.2"
    listing = command.output(
        [loader, "--library-path", dest / "usr/lib64", "--list", dest / "usr/bin/app"]
    )
    for soname in ("libc.so.6", "libm.so.6", "libfoo.so.1", "libbar.so.1"):
        assert f"{soname} => {dest}/usr/lib64/{soname}" in listing, listing
    assert "not found" not in listing


@pytest.mark.privileged
def test_base_tree_runs_in_a_chroot(
    privileged: None, factory: Factory, glibc: Package, tmp_path: Path
) -> None:
    packages = [glibc, BAR, FOO, APP, libstdcxx_package()]
    fex_like = base_tree(tmp_path / "fex", packages)
    listing = command.output(
        ["chroot", str(fex_like), "/usr/lib64/ld-linux-x86-64.so.2", "--list", "/usr/bin/app"]
    )
    assert "libbar.so.1 => /usr/lib64/libbar.so.1" in listing  # found through ld.so.cache
    missing_interp = command.run(["chroot", str(fex_like), "/usr/bin/app"], check=False)
    assert missing_interp.returncode == 127  # PT_INTERP /lib64/... does not exist
    fedora_like = base_tree(tmp_path / "fedora", packages, lib64_symlink=True)
    ran = command.output(["chroot", str(fedora_like), "/usr/bin/app"])
    assert ran == "/usr/bin/app ok\n"


def test_write_kiwi_packages(glibc: Package, tmp_path: Path) -> None:
    epoch = Package("withepoch", epoch=2, version="1.5", release="3.fc44", license="GPL-2.0")
    path = write_kiwi_packages(tmp_path / "base.packages", [glibc, epoch, FOO])
    assert path.read_text().splitlines() == [
        "glibc|(none)|2.99|1|x86_64|(none)|LGPL-2.1-or-later",
        "libfoo|(none)|2.0|1|x86_64|(none)|MIT",
        "withepoch|2|1.5|3.fc44|x86_64|(none)|GPL-2.0",
    ]
    empty = write_kiwi_packages(tmp_path / "empty.packages", [FOO], missing="")
    assert empty.read_text() == "libfoo||2.0|1|x86_64||MIT\n"


def test_fake_runtime_libraries_do_not_change_linking(factory: Factory, tmp_path: Path) -> None:
    fake = Package("fakelibc", contents=(Library("libc.so.6", path="/opt/fake/libc.so.6"),))
    assert "libc.so.6()(64bit)" in rpm_query(factory.rpm(fake), "--provides")
    exe = factory.elf(tmp_path / "app", Executable("/usr/bin/after-fake", needs=("libm.so.6",)))
    listing = command.output(["/usr/lib64/ld-linux-x86-64.so.2", "--list", str(exe)])
    assert "/opt/fake" not in listing and "libm.so.6 =>" in listing


def test_bad_specs_are_errors(factory: Factory, tmp_path: Path) -> None:
    with pytest.raises(FactoryError, match="machine"):
        Library("libx.so.1", machine="mips")
    with pytest.raises(FactoryError, match="listed twice"):
        Package("dup", contents=(File("/a"), Symlink("/a", "b")))
    factory.register(Library("libcyc1.so.1", needs=("libcyc2.so.1",)))
    factory.register(Library("libcyc2.so.1", needs=("libcyc1.so.1",)))
    with pytest.raises(FactoryError, match="cycle"):
        factory.elf(tmp_path / "cyc", Library("libcyc1.so.1", needs=("libcyc2.so.1",)))
