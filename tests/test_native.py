"""The native backend: real overlayfs over a glibc base and EROFS deps, chroot, real loader."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fexstack import jsonio
from runner import native
from runner.launch import RunResult, run_app
from runner.options import RunOptions
from runner.profile import Profile, build_profile
from tests.test_muvm import write_manifest

HOST_LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
# glibc built for Debian searches /lib/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu by
# default, not Fedora's /usr/lib64: the profile reaches the overlay's libraries through
# LD_LIBRARY_PATH, as a run profile can.
PROFILE_ENV = {"LD_LIBRARY_PATH": "/usr/lib64"}


def gcc(*args: str | Path) -> None:
    subprocess.run(["gcc", *map(str, args)], check=True, capture_output=True)


def libfoo(out: Path, message: str) -> Path:
    src = out.with_suffix(".c")
    src.write_text(f'#include <stdio.h>\nvoid foo(void) {{ puts("{message}"); }}\n')
    gcc("-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o", out, src)
    return out


def deps_image(work: Path, name: str, message: str) -> tuple[str, Path, Path]:
    tree = work / f"{name}-tree"
    (tree / "usr/lib64").mkdir(parents=True)
    libfoo(tree / "usr/lib64/libfoo.so.1", message)
    image = work / f"{name}.erofs"
    subprocess.run(["mkfs.erofs", "-b", "4096", str(image), str(tree)], check=True,
                   capture_output=True)  # fmt: skip
    return name, image, write_manifest(image)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A Fedora-like glibc base directory, two deps images, and an AppDir program."""
    if shutil.which("gcc") is None or not (HOST_LIBDIR / "libc.so.6").exists():
        pytest.skip("needs gcc and the toolchain root's glibc")
    work = tmp_path_factory.mktemp("native")
    base = work / "base"
    lib64 = base / "usr/lib64"
    lib64.mkdir(parents=True)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(HOST_LIBDIR / name, lib64 / name)
    (base / "lib64").symlink_to("usr/lib64")
    (base / "etc").mkdir()
    (base / "etc/ld.so.conf").write_text("/usr/lib64\n")
    subprocess.run(["ldconfig", "-r", str(base)], check=True, capture_output=True)
    assert (base / "etc/ld.so.cache").exists()
    one = deps_image(work, "foo-one", "hello from libfoo one")
    two = deps_image(work, "foo-two", "hello from libfoo two")
    appdir = work / "AppDir"
    appdir.mkdir()
    main = work / "main.c"
    main.write_text("void foo(void);\nint main(void) { foo(); return 0; }\n")
    link = work / "link"
    link.mkdir()
    libfoo(link / "libfoo.so.1", "link-time stub")
    gcc("-o", appdir / "app", main, f"-L{link}", "-l:libfoo.so.1")
    return {"base": base, "one": one, "two": two, "app": appdir / "app", "work": work}


def app_dir(layout: dict[str, object]) -> list[Path]:
    """The AppDir, bound in: the unprivileged app reaches it inside pytest's 0700 temp."""
    app = layout["app"]
    assert isinstance(app, Path)
    return [app.parent]


def profile_for(layout: dict[str, object], deps: list[object]) -> Profile:
    base = layout["base"]
    assert isinstance(base, Path)
    return build_profile(
        "native-demo", base=base, gpu=[], deps=deps,  # type: ignore[arg-type]
        env=PROFILE_ENV, backend="native",
    )  # fmt: skip


def run_layout_app(profile: Profile, layout: dict[str, object], evidence: Path) -> RunResult:
    """Run the layout's program (its folder bound into the view) on ``profile``."""
    options = RunOptions(command=[str(layout["app"])], binds=app_dir(layout),
                         evidence_root=evidence, echo=False)
    return run_app(profile, options)


def test_program_loads_through_overlayfs_and_chroot(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    profile = profile_for(layout, [layout["one"]])
    result = run_layout_app(profile, layout, tmp_path)
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "PASS", log
    assert "hello from libfoo one" in log
    report = jsonio.read(result.evidence_dir / "run.report.json")
    jsonio.validate(report, "run-report")
    assert report["backend"] == "native" and report["exit_status"] == 0
    kinds = [(i["role"], i["kind"]) for i in report["images"]]
    assert kinds == [("base", "directory"), ("deps", "file")]


def test_missing_deps_layer_fails_with_the_loader_error(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    profile = profile_for(layout, [])
    result = run_layout_app(profile, layout, tmp_path)
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "FAIL", log
    assert "error while loading shared libraries: libfoo.so.1" in log
    report = jsonio.read(result.evidence_dir / "run.report.json")
    assert report["exit_status"] == 127
    assert "libfoo.so.1" in report["reason"]


def test_the_last_layer_wins(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    first = run_layout_app(profile_for(layout, [layout["one"], layout["two"]]), layout, tmp_path)
    text = (first.evidence_dir / "run.log").read_text()
    assert "hello from libfoo two" in text and "hello from libfoo one" not in text
    second = run_layout_app(profile_for(layout, [layout["two"], layout["one"]]), layout, tmp_path)
    text = (second.evidence_dir / "run.log").read_text()
    assert "hello from libfoo one" in text and "hello from libfoo two" not in text


def test_mounts_vanish_with_the_run(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    before = Path("/proc/self/mountinfo").read_text().count("\n")
    profile = profile_for(layout, [layout["one"]])
    result = native.run(profile, [str(layout["app"])], binds=app_dir(layout), echo=False)
    assert result.exit_status == 0
    assert Path("/proc/self/mountinfo").read_text().count("\n") == before
    assert "fexstack-native" not in Path("/proc/self/mountinfo").read_text()


def test_unmountable_layer_is_infra(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.erofs"
    junk.write_bytes(os.urandom(8192))
    profile = profile_for(layout, [("junk", junk, None)])
    result = native.run(profile, [str(layout["app"])], binds=app_dir(layout), echo=False)
    status = native.interpret(result.exit_status, result.signal, result.text)
    assert result.exit_status == native.SETUP_FAILED
    assert status.outcome == "INFRA" and "junk.erofs" in status.reason


def test_missing_program_is_fail(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    profile = profile_for(layout, [layout["one"]])
    result = native.run(profile, [str(tmp_path / "no-such-app")], echo=False)
    status = native.interpret(result.exit_status, result.signal, result.text)
    assert result.exit_status == native.EXEC_FAILED
    assert status.outcome == "FAIL" and "could not be started" in status.reason


def test_appimage_end_to_end(
    privileged: None, layout: dict[str, object], tmp_path: Path
) -> None:
    """A real AppImage: extracted, its ELF AppRun started from the AppDir bound in."""
    from testkit.packer import build_appimage

    appdir = tmp_path / "AppDir"
    appdir.mkdir()
    shutil.copy2(str(layout["app"]), appdir / "AppRun")
    appimage = build_appimage(appdir, tmp_path / "foo.AppImage")
    profile = build_profile(
        "foo", appimage=appimage, base=layout["base"], gpu=[],  # type: ignore[arg-type]
        deps=[layout["one"]], env=PROFILE_ENV, backend="native",  # type: ignore[list-item]
    )  # fmt: skip
    result = run_app(profile, RunOptions(evidence_root=tmp_path / "ev", echo=False))
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "PASS", log
    assert "hello from libfoo one" in log
    report = jsonio.read(result.evidence_dir / "run.report.json")
    appdir_used = report["extraction"]["appdir"]
    assert report["guest_command"] == [f"{appdir_used}/AppRun"]
    assert appdir_used.startswith(os.environ["FEXSTACK_CACHE"])  # extracted into the cache
