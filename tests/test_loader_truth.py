"""Ground truth for the loader model: the real x86_64 dynamic loader, on the same layers
mounted with overlayfs in a private mount namespace, resolves every soname to the same
file the static report names (or finds it missing too)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fexstack import command
from invariants import compat
from invariants.check import check_tree
from invariants.policy import CheckPolicy
from invariants.view import Layer, View
from testkit.factory import Executable, Factory, Library
from tests.invariants_support import base_layer, fedora_base

LDSO = "/usr/lib64/ld-linux-x86-64.so.2"
LLP = ("/opt/llp/lib",)

# Mount base, compat, deps as overlayfs (lowerdir lists the LAST muvm layer first: the
# layers are bound as L0 (base), L1 ... and lowerdir reads ...:L1:L0), mount
# /proc, then trace each program in a chroot: the kernel starts it through its PT_INTERP
# (the compat overlay's symlink) with LD_TRACE_LOADED_OBJECTS=1, set only after the chroot
# so that no tool of the toolchain root is traced instead.
SCRIPT = r"""
set -e
top=$1 llp=$2 python=$3 n=$4; shift 4
cd "$top"
lower=
i=0
while [ "$i" -lt "$n" ]; do  # bind each layer to a short name: mount options are short
  mkdir "L$i" && mount --bind "$1" "L$i" && lower="L$i${lower:+:$lower}"
  i=$((i + 1)); shift
done
mkdir upper work merged
mount -t overlay overlay -o "lowerdir=$lower,upperdir=upper,workdir=work" merged
merged=$top/merged
mkdir -p "$merged/proc" && mount -t proc proc "$merged/proc"
for exe in "$@"; do
  echo "@@ $exe"
  "$python" -c "$CHROOT_PY" "$merged" "$exe" "$llp" || true
done
"""

CHROOT_PY = """
import os, sys
root, exe, llp = sys.argv[1:4]
os.chroot(root)
os.chdir("/")
os.execve(exe, [exe], {"LD_TRACE_LOADED_OBJECTS": "1", "LD_LIBRARY_PATH": llp})
"""


def loader_settings(base: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The real loader's system search path and supported glibc-hwcaps (from --help)."""
    text = command.output([base / LDSO.lstrip("/"), "--help"])
    dirs = tuple(re.findall(r"^\s+(/\S+) \(system search path\)", text, re.M))
    hwcaps = tuple(re.findall(r"^\s+(x86-64-v\d) \(supported, searched\)", text, re.M))
    assert dirs, text
    return dirs, hwcaps


def trace(layers: list[Path], programs: list[str], tmp: Path) -> dict[str, dict[str, str | None]]:
    top = tmp / "mnt"
    top.mkdir()
    out = command.output(["unshare", "-m", "--propagation", "unchanged", "sh", "-c", SCRIPT,
                          "trace", top, ":".join(LLP), sys.executable, str(len(layers)),
                          *layers, *programs], env={"CHROOT_PY": CHROOT_PY})
    result: dict[str, dict[str, str | None]] = {}
    current: dict[str, str | None] = {}
    for line in out.splitlines():
        if line.startswith("@@ "):
            current = result.setdefault(line[3:], {})
        elif "=>" in line:
            name, _, rest = line.strip().partition(" => ")
            rest = rest.strip()
            current[name] = None if rest == "not found" else re.sub(r" \(0x[0-9a-f]+\)$", "",
                                                                      rest)
    return result


def build_deps(factory: Factory, tree: Path, dirs: tuple[str, ...]) -> list[str]:
    sysdir = dirs[1] if len(dirs) > 1 else dirs[0]  # e.g. /usr/lib/x86_64-linux-gnu
    libs = {
        "/opt/app/lib/libapp.so.1": Library("libapp.so.1", needs=("libcommon.so.1",)),
        f"{sysdir}/libcommon.so.1": Library("libcommon.so.1"),
        "/opt/hidden/lib/libhidden.so.1": Library("libhidden.so.1"),
        "/opt/app/lib/libskip.so.1": Library("libskip.so.1", machine="aarch64"),
        f"{sysdir}/libskip.so.1": Library("libskip.so.1"),
        f"{sysdir}/libhw.so.1": Library("libhw.so.1"),
        f"{sysdir}/glibc-hwcaps/x86-64-v2/libhw.so.1": Library("libhw.so.1"),
        "/opt/app/lib/glibc-hwcaps/x86-64-v3/libapphw.so.1": Library("libapphw.so.1"),
        "/opt/rp/lib/librp.so.1": Library("librp.so.1", needs=("librpdep.so.1",
                                                               "librunp.so.1")),
        "/opt/rp/lib2/librpdep.so.1": Library("librpdep.so.1"),
        "/opt/rp/lib/librunp.so.1": Library("librunp.so.1", needs=("libonlyrp.so.1",),
                                            runpath="/nowhere"),
        "/opt/rp/lib2/libonlyrp.so.1": Library("libonlyrp.so.1"),
        "/opt/llp/lib/libllp.so.1": Library("libllp.so.1"),
        f"{sysdir}/libllp.so.1": Library("libllp.so.1", symbols=("decoy",)),
    }
    for path, spec in libs.items():
        factory.elf(tree / path.lstrip("/"), spec)
    factory.register(Library("libskip.so.1"), Library("libhw.so.1"))
    programs = {
        "/opt/app/bin/app": Executable(
            "/opt/app/bin/app", runpath="$ORIGIN/../lib",
            needs=("libapp.so.1", "libmissing.so.1", "libhidden.so.1", "libskip.so.1",
                   "libhw.so.1", "libapphw.so.1")),
        "/opt/rp/bin/rp": Executable("/opt/rp/bin/rp", rpath="/opt/rp/lib:/opt/rp/lib2",
                                     needs=("librp.so.1",)),
        "/opt/llp/bin/llp": Executable("/opt/llp/bin/llp", needs=("libllp.so.1",)),
    }
    for path, spec in programs.items():
        factory.elf(tree / path.lstrip("/"), spec)
    return list(programs)


@pytest.mark.privileged
def test_static_report_agrees_with_the_real_loader(
    privileged: None, factory: Factory, tmp_path: Path
) -> None:
    base = fedora_base(factory, tmp_path / "bases")
    dirs, hwcaps = loader_settings(base)
    fix = compat.ensure(base)
    assert fix is not None  # the base lacks /lib64: programs need the compat symlink
    deps = tmp_path / "deps"
    programs = build_deps(factory, deps, dirs)
    policy = CheckPolicy("deps", ld_library_path=tuple(LLP), lib_dirs=tuple(dirs),
                         hwcaps=tuple(hwcaps))
    report = check_tree(deps, policy, owners={},
                        view_layers=[base_layer(base), Layer("compat", fix, "compat")])
    static = {
        row["path"]: {n["soname"]: n["path"] for n in row["needs"] if n["via"] != "loaded"}
        for row in report.linkability if row["kind"] == "executable"
    }
    real = trace([base, fix, deps], programs, tmp_path)
    assert set(real) == set(programs)
    for program in programs:
        assert static[program] == real[program], program
    app = real["/opt/app/bin/app"]
    # the cases this stack exercises, as the real loader saw them
    assert app["libapp.so.1"] == "/opt/app/bin/../lib/libapp.so.1"  # RUNPATH with $ORIGIN
    assert app["libmissing.so.1"] is None and app["libhidden.so.1"] is None
    # the aarch64 copy on RUNPATH is skipped; the x86_64 one in a system directory loads
    assert app["libskip.so.1"] == f"{dirs[0]}/libskip.so.1"
    assert app["libhw.so.1"] == f"{dirs[0]}/glibc-hwcaps/x86-64-v2/libhw.so.1"
    assert app["libc.so.6"] == "/usr/lib64/libc.so.6"  # from the base's ld.so.cache
    rp = real["/opt/rp/bin/rp"]
    assert rp["librpdep.so.1"] == "/opt/rp/lib2/librpdep.so.1"  # the executable's RPATH
    assert rp["libonlyrp.so.1"] is None  # a RUNPATH object gets no inherited RPATH
    assert real["/opt/llp/bin/llp"]["libllp.so.1"] == "/opt/llp/lib/libllp.so.1"
    assert report.invariants["interpreter"]["status"] == "pass"
    assert {f.path for f in report.findings if f.invariant == "linkability"} == {
        "/opt/app/bin/app", "/opt/rp/bin/rp", "/opt/rp/lib/librunp.so.1",
        "/opt/rp/lib/librp.so.1"}  # alone, librp.so.1 lacks the executable's RPATH


@pytest.mark.privileged
def test_library_installed_through_lib64_loads_from_the_mounted_layers(
    privileged: None, factory: Factory, tmp_path: Path
) -> None:
    """An old package's /lib64 and /lib payload, staged over a merged-/usr base, lands
    under /usr; the real loader, started through the base's /lib64 symlink, loads both
    libraries from there, as the static report says."""
    import io

    from overlays import fetch, staging
    from overlays.install import InstallRoot
    from tests.craft_rpm import lock_of, locked
    from tests.test_install import OLD_THIRD_PARTY
    from tests.test_stage import REPOS

    base = fedora_base(factory, tmp_path / "bases", lib64_symlink=True)
    dirs, hwcaps = loader_settings(base)
    assert compat.ensure(base) is None  # /lib64 -> usr/lib64: no compat overlay needed
    lock = lock_of([locked(OLD_THIRD_PARTY.name, factory.rpm(OLD_THIRD_PARTY))])
    cache = tmp_path / "cache"
    fetch.fetch_lock(lock, repos=REPOS, cache=cache, record=None, progress=io.StringIO())
    lower = View([base_layer(base)])
    assert InstallRoot(lower).place("/lib64/libold64.so.1", "file") == "/usr/lib64/libold64.so.1"
    result = staging.stage_lock(lock, cache=cache, staging=tmp_path / "staging",
                                record=tmp_path / "stage.json", lower=lower,
                                drop_executables=True)
    deps = result.staging
    policy = CheckPolicy("deps", lib_dirs=tuple(dirs), hwcaps=tuple(hwcaps))
    report = check_tree(deps, policy, owners=result.owners, view_layers=[base_layer(base)])
    assert not report.failed, report.summary()
    program = "/opt/old/bin/oldapp"
    static = {n["soname"]: n["path"] for row in report.linkability if row["path"] == program
              for n in row["needs"] if n["via"] != "loaded"}
    real = trace([base, deps], [program], tmp_path)[program]
    assert static == real
    assert real["libold64.so.1"] == "/lib64/libold64.so.1"  # via RPATH, through the symlink
    assert real["liboldgnu.so.1"] == "/lib/x86_64-linux-gnu/liboldgnu.so.1"
    assert real["libc.so.6"] is not None


def test_a_library_naming_the_loader_gets_the_loaded_one(
    factory: Factory, tmp_path: Path
) -> None:
    """Libraries that list ld-linux-x86-64.so.2 in DT_NEEDED (abseil, ICU, WebKitGTK in
    Debian) get the loader already in the process, as ``ld.so --list`` shows on real
    data (tests/test_realstacks.py): it is never searched for, not even in the cache."""
    base = fedora_base(factory, tmp_path / "bases", lib64_symlink=True)
    dirs, hwcaps = loader_settings(base)
    deps = tmp_path / "deps"
    path = f"{dirs[-1]}/libneedsrtld.so.1"
    factory.elf(deps / path.lstrip("/"), Library("libneedsrtld.so.1",
                                                  needs=("ld-linux-x86-64.so.2",)))
    policy = CheckPolicy("deps", lib_dirs=tuple(dirs), hwcaps=tuple(hwcaps))
    report = check_tree(deps, policy, owners={}, view_layers=[base_layer(base)])
    [row] = [r for r in report.linkability if r["path"] == path]
    [need] = [n for n in row["needs"] if n["soname"] == "ld-linux-x86-64.so.2"]
    assert (need["soname"], need["via"], need["path"]) == (
        "ld-linux-x86-64.so.2", "loaded", "/lib64/ld-linux-x86-64.so.2")
    assert need["real"] == "/usr/lib64/ld-linux-x86-64.so.2"
    assert not report.failed
