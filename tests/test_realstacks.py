"""Stacks that mirror stacks/bambu-webkit41.toml's intent, built with real Debian packages.

On the real-world corpus (tests/realworld/): a GStreamer stack (core, base and good
plugins), a WebKitGTK 4.1 stack (with libsoup 3, glib-networking and libsecret) and a
Bambu-like stack including both, each built with ``doit overlay:<name>`` in a throwaway
project. One project per corpus is built per module and shared by the tests.

The corpus has no true gap for these stacks: libcaca's GL plugin, which the issue saw
without libGL.so.1, finds it in the base (libgl1, as Fedora's FEX RootFS carries it) and
libglut.so.3 in libglut3.12; the tests assert zero failing findings and show where
the plugin's libraries come from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fexstack import command, jsonio
from invariants.loader import Loader, Search
from invariants.view import Layer, Tree, View
from testkit import packer
from tests.pipeline_support import CHECKOUT, DoitRun
from tests.realworld import corpus as corpusmod
from tests.realworld.corpus import Corpus

DOIT_TIMEOUT = 600
LDSO = "/lib64/ld-linux-x86-64.so.2"
LIBDIR = "/usr/lib/x86_64-linux-gnu"

GST = {
    "libgstreamer1.0-0": "GStreamer core (libgstreamer-1.0.so.0)",
    "gstreamer1.0-plugins-base": "playback, audio and video conversion plugins",
    "gstreamer1.0-plugins-good": "the common codecs and sources Bambu's camera view uses",
}
WEBKIT = {
    "libwebkit2gtk-4.1-0": "the web views (libwebkit2gtk-4.1.so.0)",
    "libsoup-3.0-0": "HTTP for WebKitGTK 4.1 (libsoup-3.0.so.0)",
    "glib-networking": "TLS for libsoup (GIO modules)",
    "libsecret-1-0": "secret storage (libsecret-1.so.0)",
}
# bambu-webkit41.toml's own seeds, by Debian name, that the corpus has (its OSMesa and
# libfuse2 are not in the corpus). gtk3, cairo, GLU and libOpenGL are in the base.
BAMBU = {
    "libgtk-3-0t64": "the GUI is wxWidgets' GTK 3 port (libgtk-3.so.0)",
    "libcairo2": "2D drawing (libcairo.so.2)",
    "libglu1-mesa": "libGLU.so.1, linked by the slicer's 3D view",
    "libsecret-1-0": "libsecret-1.so.0: secret storage",
    "libopengl0": "libOpenGL.so.0 (GLVND's OpenGL entry point)",
}
BOOKWORM_NAMES = {"libgtk-3-0t64": "libgtk-3-0"}


def stack_toml(found: Corpus, description: str, seeds: Mapping[str, str],
               include: Sequence[str] = (), extra: str = "") -> str:
    head = f"include = {list(include)!r}\n".replace("'", '"') if include else ""
    lines = "".join(f'"{BOOKWORM_NAMES.get(n, n) if found.suite == "bookworm" else n}"'
                    f' = "{why}"\n' for n, why in seeds.items())
    return (f'[stack]\ndescription = "{description}"\nclass = "deps"\n'
            f'base = "{corpusmod.BASE_ID}"\n{head}\n'
            f'[source]\nrelease = "{found.release}"\nrepos = ["{corpusmod.REPO_ID}"]\n\n'
            f"[seeds]\n{lines}{extra}")


@dataclass
class RealProject:
    """A throwaway fexstack project whose stacks use the corpus's repo and base."""

    root: Path
    cache: Path
    found: Corpus

    @property
    def build(self) -> Path:
        return self.root / "build"

    def write(self, name: str, text: str) -> None:
        (self.root / "stacks" / f"{name}.toml").write_text(text)

    def doit(self, *args: str, check: bool = True, **env: str) -> DoitRun:
        full = dict(os.environ)
        full["FEXSTACK_CACHE"] = str(self.cache)
        full["PYTHONPATH"] = str(CHECKOUT)
        full["PYTHONUNBUFFERED"] = "1"
        for key in ("FEXSTACK_MUVM", "DISPLAY", "WAYLAND_DISPLAY"):
            full.pop(key, None)
        full.update(env)
        proc = subprocess.run([sys.executable, "-m", "tasks", *args], cwd=self.root, env=full,
                              capture_output=True, text=True, timeout=DOIT_TIMEOUT)
        run = DoitRun(list(args), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed:\n{run.output}")
        return run

    def record(self, stack: str, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = jsonio.read(self.build / stack / name)
        return doc

    def manifest(self, stack: str) -> dict[str, Any]:
        doc: dict[str, Any] = jsonio.read(self.build / "overlays" / f"{stack}.manifest.json")
        jsonio.validate(doc, "manifest")
        return doc


def new_project(where: Path, found: Corpus) -> RealProject:
    root = where / "project"
    root.mkdir(parents=True)
    found.write_stacks_dir(root / "stacks")
    project = RealProject(root, where / "cache", found)
    project.write("gst", stack_toml(found, "GStreamer core, base and good plugins", GST))
    project.write("webkit", stack_toml(found, "WebKitGTK 4.1 with libsoup 3", WEBKIT))
    project.write("bambu", stack_toml(found, "Bambu Studio's libraries, WebKitGTK 4.1 flavour",
                                      BAMBU, include=("webkit", "gst")))
    return project


def _built(found: Corpus, where: Path) -> RealProject:
    project = new_project(where, found)
    project.doit("overlay:gst", "overlay:webkit", "overlay:bambu")
    return project


@pytest.fixture(scope="module")
def trixie(realworld_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> RealProject:
    return _built(realworld_corpus, tmp_path_factory.mktemp("realstacks-trixie"))


@pytest.fixture(scope="module")
def bookworm(realworld_bookworm: Corpus,
             tmp_path_factory: pytest.TempPathFactory) -> RealProject:
    return _built(realworld_bookworm, tmp_path_factory.mktemp("realstacks-bookworm"))


def _assert_clean(project: RealProject, name: str) -> dict[str, Any]:
    report = project.record(name, "invariants.json")
    jsonio.validate(report, "invariants")
    assert report["failed"] is False
    assert report["findings"] == []
    assert {i["status"] for i in report["invariants"].values()} <= {"pass", "skipped"}
    assert (project.build / "overlays" / f"{name}.erofs").is_file()
    return report


def _locked(project: RealProject, name: str) -> set[str]:
    text = (project.root / "stacks" / f"{name}.lock.toml").read_text()
    return set(re.findall(r'^name = "([^"]+)"', text, re.M))


@pytest.mark.realworld
@pytest.mark.parametrize("which", ["trixie", "bookworm"])
def test_real_stacks_build_with_zero_failing_invariants(
    which: str, request: pytest.FixtureRequest
) -> None:
    project: RealProject = request.getfixturevalue(which)
    found = project.found
    reports = {name: _assert_clean(project, name) for name in ("gst", "webkit", "bambu")}
    gst, webkit, bambu = (_locked(project, n) for n in ("gst", "webkit", "bambu"))
    assert bambu == gst | webkit  # the base's seeds (GTK, cairo, GLU) resolve to nothing
    assert not bambu & found.base_names
    # libcaca's GL plugin: libGL.so.1 from the base, libglut.so.3 from the overlay
    [row] = [r for r in reports["gst"]["linkability"]
             if r["path"].startswith(f"{LIBDIR}/caca/libgl_plugin.so.")]
    needs = {n["soname"]: n for n in row["needs"]}
    assert needs["libGL.so.1"]["path"] is not None
    assert (found.base_tree / needs["libGL.so.1"]["real"].lstrip("/")).is_file()
    [glut] = [n for name, n in needs.items() if name.startswith("libglut.so.3")]
    assert glut["real"].startswith(f"{LIBDIR}/libglut.so.3")  # .3 in trixie, .3.12 before
    # tool executables that libraries require are left out, with their packages
    dropped = {d["path"]: d["package"] for d in reports["gst"]["dropped"]}
    assert dropped["/usr/sbin/setcap"] == "libcap2-bin"
    web_dropped = {d["path"]: d["package"] for d in reports["webkit"]["dropped"]}
    assert web_dropped["/usr/bin/bwrap"] == "bubblewrap"
    assert web_dropped["/usr/bin/xdg-dbus-proxy"] == "xdg-dbus-proxy"
    for name in ("gst", "webkit", "bambu"):
        manifest = project.manifest(name)
        assert {d["path"] for d in manifest["install"]["dropped"]} == {
            d["path"] for d in reports[name]["dropped"]}
        files = {f["path"] for f in manifest["files"]}
        assert not {p for p in files if p.startswith(("/usr/bin/", "/usr/sbin/"))}


@pytest.mark.realworld
def test_bookworm_lists_redirections_and_dropped_originals(bookworm: RealProject) -> None:
    """Bookworm's packages ship /lib, /bin and /sbin: they are installed under /usr, and
    stage.json and the manifest list each (original -> installed)."""
    for name in ("gst", "webkit", "bambu"):
        stage = bookworm.record(name, "stage.json")
        manifest = bookworm.manifest(name)
        redirected = {(r["original"], r["installed"], r["package"]) for r in stage["redirected"]}
        assert redirected == {(r["original"], r["installed"], r["package"])
                              for r in manifest["install"]["redirected"]}
        assert stage["dropped"] == manifest["install"]["dropped"]
        staging = bookworm.build / name / "staging"
        for original, installed, _ in redirected:
            assert installed == "/usr" + original
            assert not (staging / original.lstrip("/").split("/")[0]).exists()  # no /lib dir
            assert os.path.lexists(staging / installed.lstrip("/"))
        dropped = {d["original"]: (d["path"], d["package"]) for d in stage["dropped"]}
        assert dropped["/sbin/setcap"] == ("/usr/sbin/setcap", "libcap2-bin")
    stage = bookworm.record("gst", "stage.json")
    originals = {r["original"] for r in stage["redirected"]}
    assert "/lib/x86_64-linux-gnu/libncurses.so.6" in originals  # libncurses6, from libcaca
    files = {f["path"] for f in bookworm.manifest("gst")["files"]}
    assert f"{LIBDIR}/libncurses.so.6" in files
    assert not {p for p in files if p.split("/")[1] in ("lib", "lib64", "bin", "sbin")}


# --- the loader ground truth on the WebKitGTK overlay -----------------------------------

# Mount base and overlay with overlayfs in a private mount namespace, then, chrooted into
# the merged tree with an empty environment, list what the real loader loads for each
# file (read from stdin): one shell for all files, so 330 files take about a second.
TRACE = r"""
set -e
top=$1 n=$2; shift 2
cd "$top"
lower=
i=0
while [ "$i" -lt "$n" ]; do
  mkdir "L$i" && mount --bind "$1" "L$i" && lower="L$i${lower:+:$lower}"
  i=$((i + 1)); shift
done
mkdir upper work merged
mount -t overlay overlay -o "lowerdir=$lower,upperdir=upper,workdir=work" merged
exec env -i "$(command -v chroot)" merged /usr/bin/bash -c \
  'while read -r f; do echo "@@ $f"; '"$LDSO"' --list "$f" 2>&1 || true; done'
"""


def real_loader(layers: Sequence[Path], files: Sequence[str],
                tmp: Path) -> dict[str, dict[str, str | None]]:
    """File -> {soname: path the real loader opened, or None: not found}."""
    top = tmp / "mnt"
    top.mkdir()
    proc = command.run(["unshare", "-m", "--propagation", "private", "sh", "-c", TRACE,
                        "trace", top, str(len(layers)), *layers],
                       env={"LDSO": LDSO}, input="".join(f"{f}\n" for f in files).encode())
    out = proc.stdout.decode()
    result: dict[str, dict[str, str | None]] = {}
    current: dict[str, str | None] = {}
    for line in out.splitlines():
        if line.startswith("@@ "):
            current = result.setdefault(line[3:], {})
        elif " => " in line:
            name, _, rest = line.strip().partition(" => ")
            rest = re.sub(r" \(0x[0-9a-f]+\)$", "", rest.strip())
            current[name] = None if rest == "not found" else rest
        elif line.strip() and not line.startswith("\t"):
            current.setdefault("!error", line.strip())
    return result


@pytest.mark.realworld
def test_static_report_agrees_with_the_real_loader_on_webkit(
    trixie: RealProject, privileged: None, tmp_path: Path
) -> None:
    found = trixie.found
    staging = trixie.build / "webkit" / "staging"
    report = trixie.record("webkit", "invariants.json")
    rows = {r["path"]: r for r in report["linkability"]}
    # every dynamic x86_64 ELF of the overlay is in the report
    elves = {path for path, facts in report["elf"].items() if facts["needed"]}
    assert len(rows) > 300 and set(rows) == elves
    files = sorted(rows)
    real = real_loader([found.base_tree, staging], files, tmp_path)
    assert set(real) == set(files)
    errors = {f: r["!error"] for f, r in real.items() if "!error" in r}
    assert errors == {}
    # the report, file by file and soname by soname
    disagree: list[str] = []
    for path, row in rows.items():
        for need in row["needs"]:
            if need["via"] == "loaded":
                continue
            if real[path].get(need["soname"], "<absent>") != need["path"]:
                disagree.append(f"{path}: {need['soname']}: report {need['path']}, "
                                f"loader {real[path].get(need['soname'], '<absent>')}")
    assert disagree == [], "\n".join(disagree[:40])
    # the model's whole closure of each file as the main object equals the loader's list
    trees = [Tree.from_dir(found.base_tree, "base"), Tree.from_dir(staging, "webkit")]
    view = View([Layer("base", found.base_tree, "base"), Layer("webkit", staging, "deps")],
                trees)
    loader = Loader(view, Search(lib_dirs=found.lib_dirs))
    whole: list[str] = []
    for path in files:
        model = loader.closure(path, main=True).loaded()
        got = {k: v for k, v in real[path].items() if k != "!error"}
        if model != got:
            whole.append(f"{path}: model-only {sorted(set(model.items()) - set(got.items()))}"
                         f" loader-only {sorted(set(got.items()) - set(model.items()))}")
    assert whole == [], "\n".join(whole[:20])
    executables = [p for p, r in rows.items() if r["kind"] == "executable"]
    assert f"{LIBDIR}/webkit2gtk-4.1/WebKitWebProcess" in executables
    [web] = [real[p] for p in files if p.startswith(f"{LIBDIR}/libwebkit2gtk-4.1.so.0.")]
    # the base's ld.so.cache names /lib/x86_64-linux-gnu (through /lib -> usr/lib); the
    # overlay's libraries, not in that cache, are found in the first default directory
    assert web["libgtk-3.so.0"] == "/lib/x86_64-linux-gnu/libgtk-3.so.0"
    assert web["libsoup-3.0.so.0"] == "/lib/x86_64-linux-gnu/libsoup-3.0.so.0"
    assert not (found.base_tree / "usr/lib/x86_64-linux-gnu/libsoup-3.0.so.0").exists()
    # libraries that name the loader in DT_NEEDED get the loaded one, not a search
    absl = [p for p in files if "ld-linux-x86-64.so.2" in report["elf"][p]["needed"]]
    assert any(rows[p]["kind"] == "library" for p in absl)
    for path in absl:
        [need] = [n for n in rows[path]["needs"]
                  if n["soname"] == "ld-linux-x86-64.so.2" and n["needed_by"] == path]
        assert need["via"] == "loaded" and need["path"] == LDSO


# --- a thin AppImage on a stack seeding only libgstreamer1.0-0 ---------------------------

APPRUN = """#!/bin/bash
# A thin AppImage: Debian's gst-launch-1.0, without the libraries it links.
HERE="${BASH_SOURCE[0]%/*}"
export GST_REGISTRY="${TMPDIR:-/tmp}/thin-gst-registry.bin"
"$HERE/usr/bin/gst-launch-1.0" fakesrc num-buffers=3 ! fakesink || exit
echo "thin-gst: ok"
"""


def thin_gst_appimage(found: Corpus, out: Path, scratch: Path) -> Path:
    """AppRun and gst-launch-1.0 from the corpus's gstreamer1.0-tools, nothing else."""
    unpacked = scratch / "deb"
    unpacked.mkdir(parents=True)
    command.run(["dpkg-deb", "-x", found.deb("gstreamer1.0-tools"), unpacked])
    appdir = scratch / "AppDir"
    (appdir / "usr" / "bin").mkdir(parents=True)
    shutil.copy2(unpacked / "usr/bin/gst-launch-1.0", appdir / "usr/bin/gst-launch-1.0")
    (appdir / "AppRun").write_text(APPRUN)
    (appdir / "AppRun").chmod(0o755)
    (appdir / "thin-gst.desktop").write_text(
        "[Desktop Entry]\nType=Application\nName=thin gst\nExec=AppRun\nIcon=thin-gst\n"
        "Categories=Utility;\nTerminal=true\n")
    (appdir / "thin-gst.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>\n')
    return packer.build_appimage(appdir, out)


@pytest.mark.realworld
def test_thin_gstreamer_appimage_reaches_the_runner_and_passes(
    trixie: RealProject, privileged: None, tmp_path: Path
) -> None:
    found = trixie.found
    appimage = thin_gst_appimage(found, tmp_path / "thin-gst.AppImage", tmp_path / "pack")
    app = '\n[app]\nappimage = "{}"\ngpu_mode = "software"\ntimeout_seconds = 120\n'
    trixie.write("thingst", stack_toml(
        found, "libgstreamer for a thin AppImage", {"libgstreamer1.0-0": "the app links it"},
        extra=app.format(appimage)))
    run = trixie.doit("run:thingst", "--backend", "native", check=False)
    assert run.returncode == 0, run.output
    assert run.ran("check:thingst") and run.ran("run:thingst"), run.output
    assert "libcap2-bin" in _locked(trixie, "thingst")  # required, its tools dropped
    [line] = [x for x in run.stdout.splitlines() if x.startswith("evidence: ")]
    bundle = Path(line.removeprefix("evidence: ").strip())
    report = jsonio.read(bundle / "run.report.json")
    jsonio.validate(report, "run-report")
    assert report["outcome"] == "PASS" and report["backend"] == "native", report
    assert "thin-gst: ok" in (bundle / "run.log").read_text()
    found_needs = jsonio.read(bundle / "appcheck.json")
    program = f"{report['extraction']['appdir']}/usr/bin/gst-launch-1.0"
    needs = {r["soname"]: r["path"] for r in found_needs["files"][program]["needs"]}
    assert needs["libgstreamer-1.0.so.0"] is not None


@pytest.mark.realworld
def test_real_stack_rebuilt_in_place_gives_the_cold_build_bytes_once_put_back(
    trixie: RealProject,
) -> None:
    """A seed added to a built real stack: the stage step brings the staging tree up to date
    (the real packages' files stay, only the new ones are linked), the check passes, and
    with the seed removed again the image has the first cold build's bytes."""
    cold = trixie.manifest("gst")["image"]["sha256"]
    before = trixie.record("gst", "stage.json")
    try:
        trixie.write("gst", stack_toml(trixie.found, "GStreamer core, base and good plugins",
                                       {**GST, "libsecret-1-0": "a seed added later"}))
        run = trixie.doit("overlay:gst")
        assert run.ran("stage:gst") and run.ran("image:gst"), run.output
        added = trixie.record("gst", "stage.json")
        linked = added["hardlinked"] + added["copied"]
        assert added["files"] > before["files"] and 0 < linked < added["kept"]
        assert added["kept"] >= before["files"] - 20  # all but what the caches pass rewrote
        _assert_clean(trixie, "gst")
        assert "libsecret-1-0" in _locked(trixie, "gst")
        assert trixie.manifest("gst")["image"]["sha256"] != cold
    finally:
        trixie.write("gst", stack_toml(trixie.found, "GStreamer core, base and good plugins",
                                       GST))
        trixie.doit("overlay:gst")
    back = trixie.record("gst", "stage.json")
    assert back["removed"] > 0 and back["kept"] > 0
    assert (back["files"], back["symlinks"], back["dirs"]) == (
        before["files"], before["symlinks"], before["dirs"])
    _assert_clean(trixie, "gst")
    assert trixie.manifest("gst")["image"]["sha256"] == cold
