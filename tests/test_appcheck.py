"""appcheck: the AppDir's ELF files checked on the run's layers before anything launches.

The layers are real: a Fedora-like base with the toolchain root's glibc (loader only at
/usr/lib64, so /lib64/ld-linux-x86-64.so.2 needs the compat overlay), the compat overlay
made for it, and a deps overlay as an EROFS image with a manifest. The AppDirs hold ELF
files compiled by the fixture factory. Where it matters, the real loader (in the native
backend's chroot, or ld.so --list) agrees with the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from invariants.compat import ensure
from invariants.view import Layer, layer
from runner import appcheck
from runner.launch import AppcheckResult, run_app
from runner.options import RunOptions
from runner.profile import Profile, build_profile
from testkit.factory import Executable, Factory, Library, base_tree, glibc_package
from testkit.packer import build_appimage
from tests.test_muvm import write_manifest

# The toolchain root's (Debian's) loader searches these after ld.so.cache, not /usr/lib64;
# the run profile reaches the deps overlay's /usr/lib64 through LD_LIBRARY_PATH.
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
LIBRARY_PATH = ("/usr/lib64",)
INTERP = "/lib64/ld-linux-x86-64.so.2"

PRESENT = Library("libac-present.so.1")  # in the deps overlay
MISSING = Library("libac-missing.so.1")  # in no layer
GONE = Library("libac-gone.so.1")  # in no layer either (a plugin's dependency)


@dataclass(frozen=True)
class World:
    work: Path
    base: Path
    compat: Path
    deps_image: Path
    deps_manifest: Path
    layers: tuple[Layer, ...]  # base, compat, deps (muvm order)
    layers_without_compat: tuple[Layer, ...]


@pytest.fixture(scope="module")
def world(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("appcheck")
    with pytest.MonkeyPatch.context() as mp:
        # module fixtures run before the autouse cache fixture: use the same folder
        mp.setenv("FEXSTACK_CACHE", str(tmp_path_factory.getbasetemp() / "fexstack-cache"))
        base = base_tree(work / "base", [glibc_package()], factory=factory)
        compat = ensure(base)
        assert compat is not None, "the base has no /lib64: a compat overlay is needed"
        factory.register(MISSING, GONE)
        tree = work / "deps-tree"
        factory.elf(tree / PRESENT.install_path.lstrip("/"), PRESENT)
        image = work / "deps.erofs"
        subprocess.run(
            ["mkfs.erofs", "-b", "4096", "-T0", str(image), str(tree)],
            check=True,
            capture_output=True,
        )
        base_layer = layer(base, "base", "base")
        deps_layer = layer(image, "deps", "deps")
        yield World(
            work=work,
            base=base,
            compat=compat,
            deps_image=image,
            deps_manifest=write_manifest(image),
            layers=(base_layer, layer(compat, "compat", "compat"), deps_layer),
            layers_without_compat=(base_layer, deps_layer),
        )


def make_appdir(factory: Factory, appdir: Path, elves: dict[str, Library | Executable]) -> Path:
    """An AppDir holding ``elves`` (relative path -> spec) compiled by the factory."""
    appdir.mkdir(parents=True)
    for rel, spec in elves.items():
        factory.elf(appdir / rel, spec)
    return appdir


def check(world: World, appdir: Path, *, compat: bool = True) -> dict[str, Any]:
    report = appcheck.check_appdir(
        appdir,
        view_layers=world.layers if compat else world.layers_without_compat,
        lib_dirs=LIB_DIRS,
        ld_library_path=LIBRARY_PATH,
    )
    jsonio.validate(report, appcheck.SCHEMA)
    return report


def findings(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["kind"] == kind]


def needs_of(report: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {r["soname"]: r for r in report["files"][path]["needs"]}


# --- the report ------------------------------------------------------------------------


def test_missing_library_is_blocking_and_named(
    factory: Factory, world: World, tmp_path: Path
) -> None:
    app = Executable("/usr/bin/app", needs=(PRESENT.soname, MISSING.soname))
    appdir = make_appdir(factory, tmp_path / "AppDir", {"usr/bin/app": app})
    report = check(world, appdir)
    exe = f"{appdir}/usr/bin/app"
    assert report["appdir"] == str(appdir)
    assert report["blocking"] == 1
    [miss] = findings(report, "linkability")
    assert miss["blocking"] is True and miss["path"] == exe
    assert MISSING.soname in miss["detail"] and exe in miss["detail"]
    needs = needs_of(report, exe)
    assert needs[PRESENT.soname]["path"] == "/usr/lib64/libac-present.so.1"
    assert needs[PRESENT.soname]["via"] == "LD_LIBRARY_PATH"
    assert needs[MISSING.soname]["path"] is None
    result = appcheck.summarize(report)
    assert result.blocking
    assert MISSING.soname in result.summary
    assert any(line.startswith("BLOCKING linkability") for line in result.findings)


def test_interpreter_resolves_only_with_the_compat_layer(
    factory: Factory, world: World, tmp_path: Path
) -> None:
    app = Executable("/usr/bin/app", needs=(PRESENT.soname,))
    appdir = make_appdir(factory, tmp_path / "AppDir", {"usr/bin/app": app})
    exe = f"{appdir}/usr/bin/app"

    without = check(world, appdir, compat=False)
    [bad] = findings(without, "interpreter")
    assert bad["blocking"] is True and bad["path"] == exe and INTERP in bad["detail"]
    assert without["files"][exe]["interp_resolves"] is False
    assert appcheck.summarize(without).blocking

    with_compat = check(world, appdir)
    assert with_compat["files"][exe]["interp"] == INTERP
    assert with_compat["files"][exe]["interp_resolves"] is True
    assert with_compat["findings"] == [] and with_compat["blocking"] == 0
    assert not appcheck.summarize(with_compat).blocking


def test_v4_isa_elf_is_blocking(factory: Factory, world: World, tmp_path: Path) -> None:
    fast = Library("libac-avx512.so.1", isa_level="v4")
    plain = Library("libac-plain.so.1")
    appdir = make_appdir(
        factory,
        tmp_path / "AppDir",
        {"usr/lib/libac-avx512.so.1": fast, "usr/lib/libac-plain.so.1": plain},
    )
    report = check(world, appdir)
    [isa] = findings(report, "isa")
    assert isa["path"] == f"{appdir}/usr/lib/libac-avx512.so.1"
    assert isa["blocking"] is True and "x86-64-v4" in isa["detail"]
    assert report["files"][isa["path"]]["isa"] == "x86-64-v4"
    assert report["files"][f"{appdir}/usr/lib/libac-plain.so.1"]["isa"] != "x86-64-v4"
    assert report["blocking"] == 1 and appcheck.summarize(report).blocking


def test_bundled_library_with_missing_dependency_is_reported_not_blocking(
    factory: Factory, world: World, tmp_path: Path
) -> None:
    plugin = Library("libac-plugin.so.1", needs=(GONE.soname,))
    appdir = make_appdir(
        factory, tmp_path / "AppDir", {"usr/lib/plugins/libac-plugin.so.1": plugin}
    )
    report = check(world, appdir)
    [note] = findings(report, "linkability")
    assert note["path"] == f"{appdir}/usr/lib/plugins/libac-plugin.so.1"
    assert note["blocking"] is False and GONE.soname in note["detail"]
    assert report["blocking"] == 0
    result = appcheck.summarize(report)
    assert not result.blocking and "1 note(s)" in result.summary
    assert result.findings == (f"note linkability: {note['path']}: {note['detail']}",)


def test_origin_is_the_appdirs_absolute_path(
    factory: Factory, world: World, tmp_path: Path
) -> None:
    bundled = Library("libac-bundled.so.1")
    tool = Executable("/usr/bin/tool", needs=(bundled.soname,), runpath="$ORIGIN/../lib")
    first = make_appdir(
        factory,
        tmp_path / "one" / "AppDir",
        {"usr/bin/tool": tool, "usr/lib/libac-bundled.so.1": bundled},
    )
    second = tmp_path / "two" / "elsewhere" / "AppDir"
    shutil.copytree(first, second, symlinks=True)
    for appdir in (first, second):
        report = check(world, appdir)
        assert report["findings"] == [], report["findings"]
        hit = needs_of(report, f"{appdir}/usr/bin/tool")[bundled.soname]
        assert hit["via"] == "runpath"
        assert hit["path"] == f"{appdir}/usr/bin/../lib/libac-bundled.so.1"
        assert hit["real"] == f"{appdir}/usr/lib/libac-bundled.so.1"
    # the real loader (the host's: the AppDir sits at the same path) finds the same file
    listed = subprocess.run(
        [INTERP, "--list", str(second / "usr/bin/tool")],
        check=True,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"},
    ).stdout
    assert f"{bundled.soname} => {second}/usr/bin/../lib/libac-bundled.so.1" in listed


def test_without_the_bundled_library_the_runpath_miss_is_blocking(
    factory: Factory, world: World, tmp_path: Path
) -> None:
    bundled = Library("libac-unbundled.so.1")
    factory.register(bundled)
    tool = Executable("/usr/bin/tool", needs=(bundled.soname,), runpath="$ORIGIN/../lib")
    appdir = make_appdir(factory, tmp_path / "AppDir", {"usr/bin/tool": tool})
    report = check(world, appdir)
    [miss] = findings(report, "linkability")
    assert miss["blocking"] is True and bundled.soname in miss["detail"]
    # the $ORIGIN directory was searched, at the AppDir's absolute path
    assert f"{appdir}/usr/bin/../lib/{bundled.soname}" in miss["detail"]


# --- run_app with the appcheck hook (native backend: real mounts, real loader) ------------


def profile_for(world: World, appimage: Path, name: str) -> Profile:
    return build_profile(
        name,
        appimage=appimage,
        base=world.base,
        gpu=[],
        compat=world.compat,
        deps=[("deps", world.deps_image, world.deps_manifest)],
        env={"LD_LIBRARY_PATH": ":".join(LIBRARY_PATH)},
        backend="native",
    )


def hook(world: World) -> Callable[[Path], AppcheckResult]:
    return appcheck.hook(view_layers=world.layers, lib_dirs=LIB_DIRS, ld_library_path=LIBRARY_PATH)


def evidence_of(result_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    report = jsonio.read(result_dir / "run.report.json")
    jsonio.validate(report, "run-report")
    jsonio.validate(jsonio.read(result_dir / "inputs.json"), "inputs")
    found = jsonio.read(result_dir / "appcheck.json")
    jsonio.validate(found, appcheck.SCHEMA)
    return report, found


def test_run_stops_on_a_missing_library_unless_forced(
    privileged: None, factory: Factory, world: World, tmp_path: Path
) -> None:
    app = Executable("/AppRun", needs=(PRESENT.soname, MISSING.soname))
    appdir = make_appdir(factory, tmp_path / "AppDir", {"AppRun": app})
    appimage = build_appimage(appdir, tmp_path / "missing.AppImage")
    profile = profile_for(world, appimage, "appcheck-missing")

    stopped = run_app(
        profile,
        RunOptions(appcheck=hook(world), evidence_root=tmp_path / "ev", echo=False),
    )
    assert stopped.outcome == "INFRA"
    report, found = evidence_of(stopped.evidence_dir)
    assert report["stage"] == "appcheck" and MISSING.soname in report["reason"]
    assert report["appcheck"]["blocking"] is True and report["appcheck"]["forced"] is False
    assert report["command"] is None and report["guest_command"] is None  # nothing launched
    extracted = report["extraction"]["appdir"]
    assert found["appdir"] == extracted
    [miss] = [f for f in found["findings"] if f["blocking"]]
    assert miss["kind"] == "linkability" and miss["path"] == f"{extracted}/AppRun"
    assert MISSING.soname in miss["detail"]
    assert any(MISSING.soname in line for line in report["appcheck"]["findings"])

    forced = run_app(
        profile,
        RunOptions(appcheck=hook(world), force=True, evidence_root=tmp_path / "ev", echo=False),
    )
    report, found = evidence_of(forced.evidence_dir)
    log = (forced.evidence_dir / "run.log").read_text()
    # it ran, and the real loader failed exactly where appcheck said it would
    assert forced.outcome == "FAIL", log
    assert report["appcheck"]["forced"] is True and report["appcheck"]["blocking"] is True
    assert report["guest_command"] == [f"{extracted}/AppRun"]
    assert f"{MISSING.soname}: cannot open shared object file" in log
    assert MISSING.soname in report["reason"]
    assert found["blocking"] == 1


def test_run_passes_when_appcheck_finds_nothing(
    privileged: None, factory: Factory, world: World, tmp_path: Path
) -> None:
    app = Executable("/AppRun", needs=(PRESENT.soname,))
    appdir = make_appdir(factory, tmp_path / "AppDir", {"AppRun": app})
    appimage = build_appimage(appdir, tmp_path / "fine.AppImage")
    result = run_app(
        profile_for(world, appimage, "appcheck-fine"),
        RunOptions(appcheck=hook(world), evidence_root=tmp_path / "ev", echo=False),
    )
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "PASS", log
    report, found = evidence_of(result.evidence_dir)
    assert report["appcheck"] == {
        "blocking": False,
        "summary": "1 ELF files load in the merged view (0 note(s))",
        "findings": [],
        "forced": False,
    }
    assert found["findings"] == [] and found["blocking"] == 0
