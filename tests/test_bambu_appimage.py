"""appcheck on an AppImage built like Bambu Studio's (FACTS.md "2026 facts"): a ``#!/bin/sh``
AppRun that unsets GTK_PATH, GTK_EXE_PREFIX, GIO_MODULE_DIR, GSETTINGS_SCHEMA_DIR,
GDK_PIXBUF_MODULE_FILE and LD_PRELOAD, overwrites ``LD_LIBRARY_PATH="$DIR/bin"`` and execs
bin/bambu-studio; bundled libraries in bin/; a downloaded network plugin with an executable
stack in a plugin folder; and a libsoup 2 + libsoup 3 closure. The AppImage is packed by
runner/packer.py and extracted by runner/appimage.py; the layers are those of
tests/test_appcheck.py (a Fedora-like base, its compat overlay, a deps overlay image).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from runner import appcheck, apprun
from runner.appimage import extract
from runner.profile import EXECSTACK_TUNABLE, with_execstack
from testkit.factory import Executable, Factory, Library
from testkit.packer import build_appimage
from tests.test_appcheck import LIB_DIRS, PRESENT, World, make_appdir, world  # noqa: F401

# Shaped like the AppRun Bambu's src/platform/unix/build_appimage.sh.in writes.
BAMBU_APPRUN = """#!/bin/sh

DIR="$(dirname "$0")"

# keep a host shell's runtime paths out of the app
unset GTK_PATH
unset GTK_EXE_PREFIX
unset GIO_MODULE_DIR
unset GSETTINGS_SCHEMA_DIR
unset GDK_PIXBUF_MODULE_FILE
unset LD_PRELOAD

export LD_LIBRARY_PATH="$DIR/bin"

exec "$DIR/bin/bambu-studio" "$@"
"""
UNSET = ["GDK_PIXBUF_MODULE_FILE", "GIO_MODULE_DIR", "GSETTINGS_SCHEMA_DIR", "GTK_EXE_PREFIX",
         "GTK_PATH", "LD_PRELOAD"]

BUNDLED = Library("libbambu-bundled.so.1")  # in bin/, reached only through $DIR/bin
SOUP2 = Library("libsoup-2.4.so.1")
SOUP3 = Library("libsoup-3.0.so.0")
WEBKIT40 = Library("libwebkit2gtk-4.0.so.37", needs=(SOUP2.soname,))
NET3 = Library("libbambu-net3.so.1", needs=(SOUP3.soname,))
NETWORKING = Library("libbambu_networking.so", needs=(BUNDLED.soname,))
MAIN = Executable("/bin/bambu-studio", needs=(BUNDLED.soname, PRESENT.soname))
PROFILE_ENV = {
    "LD_LIBRARY_PATH": "/usr/lib64",  # overwritten by AppRun: no effect
    "GTK_PATH": "/usr/lib64/gtk-3.0",  # unset by AppRun: no effect
    "WEBKIT_DISABLE_DMABUF_RENDERER": "1",  # untouched
}


def set_exec_stack(path: Path) -> None:
    """Turn PF_X on in PT_GNU_STACK, as ``execstack -s`` does (a 64-bit little-endian ELF)."""
    data = bytearray(path.read_bytes())
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type, p_flags = struct.unpack_from("<II", data, at)
        if p_type == 0x6474E551:  # PT_GNU_STACK
            struct.pack_into("<I", data, at + 4, p_flags | 0x1)
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"{path} has no PT_GNU_STACK")


def bambu_appdir(factory: Factory, root: Path, *, soup3: bool = False) -> Path:
    factory.register(BUNDLED, SOUP2, SOUP3, WEBKIT40, NET3)
    main = MAIN if not soup3 else Executable(
        "/bin/bambu-studio", needs=(BUNDLED.soname, PRESENT.soname, WEBKIT40.soname,
                                    NET3.soname))
    elves: dict[str, Library | Executable] = {
        "bin/bambu-studio": main, f"bin/{BUNDLED.soname}": BUNDLED}
    if soup3:  # a bundled library built on libsoup 3, next to WebKitGTK 4.0 from the stack
        elves.update({f"bin/{NET3.soname}": NET3, f"bin/{SOUP3.soname}": SOUP3})
    appdir = make_appdir(factory, root / "AppDir", elves)
    (appdir / "AppRun").write_text(BAMBU_APPRUN)
    (appdir / "AppRun").chmod(0o755)
    (appdir / "resources").mkdir()
    return appdir


def plugin_dir(factory: Factory, home: Path) -> Path:
    plugins = home / ".config" / "BambuStudio" / "plugins"
    factory.elf(plugins / NETWORKING.soname, NETWORKING)
    set_exec_stack(plugins / NETWORKING.soname)
    return plugins


def run_check(world: World,  # noqa: F811
              appdir: Path, env: dict[str, str], plugins: tuple[Path, ...] = ()
              ) -> dict[str, Any]:
    # Fedora's loader searches /usr/lib64 by default: the deps overlay is found there even
    # though AppRun overwrites LD_LIBRARY_PATH
    report = appcheck.check_appdir(appdir, view_layers=world.layers,
                                   lib_dirs=(*LIB_DIRS, "/usr/lib64"),
                                   env=env, plugin_dirs=plugins)
    jsonio.validate(report, appcheck.SCHEMA)
    return report


def test_bambu_like_appimage_gets_apprun_environment(
    factory: Factory, world: World, tmp_path: Path  # noqa: F811
) -> None:
    appimage = build_appimage(bambu_appdir(factory, tmp_path), tmp_path / "Bambu.AppImage")
    appdir = extract(appimage, cache=tmp_path / "cache").appdir
    plugins = plugin_dir(factory, tmp_path / "home")
    report = run_check(world, appdir, PROFILE_ENV, (plugins,))
    model = report["apprun"]
    assert model["kind"] == "shell" and model["interpreter"] == "/bin/sh"
    assert model["unset"] == UNSET
    assert model["set"] == {"LD_LIBRARY_PATH": f"{appdir}/bin"}
    assert model["exec"] == f"{appdir}/bin/bambu-studio"
    assert report["search"]["ld_library_path"] == [f"{appdir}/bin"]
    # the bundled library is found through AppRun's LD_LIBRARY_PATH, not the profile's
    needs = {r["soname"]: r for r in report["files"][f"{appdir}/bin/bambu-studio"]["needs"]}
    assert needs[BUNDLED.soname]["path"] == f"{appdir}/bin/{BUNDLED.soname}"
    assert needs[BUNDLED.soname]["via"] == "LD_LIBRARY_PATH"
    assert report["blocking"] == 0, report["findings"]
    env_findings = {f["detail"].split()[0]: f for f in report["findings"] if f["kind"] == "env"}
    assert set(env_findings) == {"[app].env.LD_LIBRARY_PATH", "[app].env.GTK_PATH"}
    assert "overwrites it" in env_findings["[app].env.LD_LIBRARY_PATH"]["detail"]
    assert "unsets it (line 6)" in env_findings["[app].env.GTK_PATH"]["detail"]
    # the downloaded plugin: linkable (through $DIR/bin), executable stack reported
    plugin = str(plugins.resolve() / NETWORKING.soname)
    assert report["files"][plugin]["plugin"] is True
    assert report["files"][plugin]["execstack"] is True
    plugin_needs = {r["soname"]: r["path"] for r in report["files"][plugin]["needs"]}
    assert plugin_needs[BUNDLED.soname] == f"{appdir}/bin/{BUNDLED.soname}"
    [stack] = [f for f in report["findings"] if f["kind"] == "execstack"]
    assert stack["path"] == plugin and "allow_execstack = true" in stack["detail"]
    assert report["recommendations"] == [
        f"allow_execstack = true under [app]: {plugin} needs an executable stack"]
    assert report["files"][f"{appdir}/bin/{BUNDLED.soname}"].get("execstack") is None
    summary = appcheck.summarize(report)
    assert not summary.blocking
    assert summary.summary.endswith(
        "; recommended in the stack: allow_execstack = true under [app]")

    # Without the AppRun model the bundled library would be missing: the profile's path.
    (appdir / "AppRun").chmod(0o755)
    elf_apprun = tmp_path / "elf-apprun"
    factory.elf(elf_apprun / "AppRun", Executable("/AppRun"))
    bare = run_check(world, elf_apprun, PROFILE_ENV, (tmp_path / "no-plugins-yet",))
    [nothing] = [f for f in bare["findings"] if f["kind"] == "plugins"]
    assert nothing["path"] == str(tmp_path / "no-plugins-yet") and not nothing["blocking"]
    assert bare["apprun"]["kind"] == "elf" and "ELF" in bare["apprun"]["note"]
    assert bare["search"]["ld_library_path"] == ["/usr/lib64"]

    # The user sets [app] allow_execstack: the finding says so, nothing is recommended.
    allowed = run_check(world, appdir, {**PROFILE_ENV,
                                        "GLIBC_TUNABLES": with_execstack("glibc.malloc.x=1")},
                        (plugins,))
    [stack] = [f for f in allowed["findings"] if f["kind"] == "execstack"]
    assert f"allowed by GLIBC_TUNABLES={EXECSTACK_TUNABLE}" in stack["detail"]
    assert allowed["recommendations"] == []


def test_libsoup2_and_libsoup3_in_one_process_block(
    factory: Factory, world: World, tmp_path: Path  # noqa: F811
) -> None:
    """The merged closure: WebKitGTK 4.0 and libsoup 2 come from a deps overlay (the stack),
    libsoup 3 from a library the AppImage bundles; bambu-studio would load both."""
    from invariants.view import Layer

    stack = tmp_path / "webkit40-overlay"
    for lib in (WEBKIT40, SOUP2):
        factory.elf(stack / lib.install_path.lstrip("/"), lib)
    appdir = bambu_appdir(factory, tmp_path, soup3=True).resolve()
    report = appcheck.check_appdir(
        appdir, view_layers=(*world.layers, Layer("webkit40", stack, "deps")),
        lib_dirs=(*LIB_DIRS, "/usr/lib64"), env={})
    jsonio.validate(report, appcheck.SCHEMA)
    main = f"{appdir}/bin/bambu-studio"
    clashes = [f for f in report["findings"] if f["kind"] == "abi-conflict"]
    assert [f["path"] for f in clashes] == [main]  # the bundled lib alone reaches only soup 3
    [clash] = clashes
    assert clash["blocking"] is True
    assert "libsoup-2.4.so.1 (/usr/lib64/libsoup-2.4.so.1)" in clash["detail"]
    assert f"libsoup-3.0.so.0 ({appdir}/bin/libsoup-3.0.so.0)" in clash["detail"]
    assert appcheck.summarize(report).blocking
    # without the stack's WebKitGTK 4.0 nothing clashes (and the soname is simply missing)
    alone = run_check(world, appdir, {})
    assert not [f for f in alone["findings"] if f["kind"] == "abi-conflict"]


@pytest.mark.parametrize(
    ("script", "kind", "note"),
    [
        ("#!/bin/bash\nif [ -n \"$X\" ]; then export A=1; fi\nexec \"$0\"\n", "complex", "line 2"),
        ("#!/usr/bin/python3\nprint(1)\n", "other", "not a shell"),
        ("#!/usr/bin/env bash\nHERE=\"${BASH_SOURCE[0]%/*}\"\nexport A=\"$HERE/lib:$A\"\n"
         "exec \"$HERE/usr/bin/app\"\n", "shell", None),
    ],
)
def test_apprun_kinds(tmp_path: Path, script: str, kind: str, note: str | None) -> None:
    (tmp_path / "AppRun").write_text(script)
    model = apprun.read(tmp_path, {"A": "/old"})
    assert model.kind == kind
    if note is None:
        assert model.note is None
        assert model.environment({"A": "/old"})["A"] == f"{tmp_path}/lib:/old"
        assert model.no_effect({"A": "/old"}) == []  # extended, not overwritten
        assert model.exec == f"{tmp_path}/usr/bin/app"
    else:
        assert model.note is not None and note in model.note
        assert model.environment({"A": "/old"}) == {"A": "/old"}


def test_allow_execstack_is_a_profile_key_never_set_silently(tmp_path: Path) -> None:
    from overlays.stack import App
    from runner.profile import build_profile

    plain = build_profile("bambu", app=App(appimage=tmp_path / "a.AppImage"), gpu=[])
    assert "GLIBC_TUNABLES" not in plain.env
    app = App(appimage=tmp_path / "a.AppImage", allow_execstack=True,
              env={"GLIBC_TUNABLES": "glibc.malloc.check=3"},  # type: ignore[arg-type]
              plugin_dirs=(tmp_path / "plugins",))
    profile = build_profile("bambu", app=app, gpu=[])
    assert profile.env["GLIBC_TUNABLES"] == f"glibc.malloc.check=3:{EXECSTACK_TUNABLE}"
    assert profile.plugin_dirs == (tmp_path / "plugins",)
    assert profile.to_json()["plugin_dirs"] == [str(tmp_path / "plugins")]


def test_stack_app_keys_reach_the_appcheck_hook(
    factory: Factory, world: World, tmp_path: Path  # noqa: F811
) -> None:
    """[app] plugin_dirs and allow_execstack of a stack file, through make_appcheck."""
    from overlays.stack import load_stack

    appdir = bambu_appdir(factory, tmp_path)
    plugins = plugin_dir(factory, tmp_path / "home")
    stacks = tmp_path / "stacks"
    (stacks / "bases").mkdir(parents=True)
    (stacks / "repos.toml").write_text('[repos.fix]\nbaseurl = ["/nowhere"]\n')
    dirs = ", ".join(f'"{d}"' for d in (*LIB_DIRS, "/usr/lib64"))
    (stacks / "bases" / "f44.toml").write_text(
        f'[base]\nimage = "base.erofs"\nlib_dirs = [{dirs}]\n')
    text = ('[stack]\nbase = "f44"\n\n[source]\nrelease = "44"\nrepos = ["fix"]\n\n'
            '[seeds]\nx = "y"\n\n[app]\nappimage = "a.AppImage"\n'
            f'plugin_dirs = ["{plugins}"]\n{{extra}}[app.env]\nGTK_PATH = "/x"\n')
    (stacks / "bambu.toml").write_text(text.format(extra=""))
    found = appcheck.make_appcheck(load_stack(stacks, "bambu"), view_layers=world.layers)(appdir)
    assert found.report is not None and not found.blocking
    assert found.report["plugin_dirs"] == [str(plugins)]
    assert found.report["recommendations"] and any(
        "GTK_PATH has no effect" in line for line in found.findings)
    (stacks / "bambu.toml").write_text(text.format(extra="allow_execstack = true\n"))
    allowed = appcheck.make_appcheck(load_stack(stacks, "bambu"), view_layers=world.layers)(appdir)
    assert allowed.report is not None and allowed.report["recommendations"] == []
    assert any("allowed by GLIBC_TUNABLES" in line for line in allowed.findings)
