"""Real GUI apps from the real-world corpus, as thin AppImages, through the native backend.

GTK 3's gtk3-widget-factory (Debian's gtk-3-examples) and a WebKitGTK 4.1 web view of our
own (tests/data/webview.c) are built with ``doit overlay:`` against the corpus base and
run with ``doit run:`` under Xvfb, as the unprivileged user.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import appimage
from tests.realworld import apps
from tests.realworld.corpus import Corpus


@pytest.mark.realworld
def test_thin_appimage_holds_the_program_and_apprun_only(
    realworld_corpus: Corpus, tmp_path: Path
) -> None:
    deb = realworld_corpus.deb("gtk-3-examples")
    one = apps.from_deb(deb, tmp_path / "a.AppImage", program="/usr/bin/gtk3-widget-factory")
    two = apps.from_deb(deb, tmp_path / "b.AppImage", program="/usr/bin/gtk3-widget-factory")
    assert one.read_bytes() == two.read_bytes()  # reproducible
    info = appimage.inspect(one)
    assert info.type == 2
    done = appimage.extract(one, cache=tmp_path / "x")
    appdir = Path(done.appdir)
    files = sorted(str(p.relative_to(appdir)) for p in appdir.rglob("*") if not p.is_dir())
    assert files == ["AppRun", "usr/bin/gtk3-widget-factory"]  # no library bundled
    apprun = (appdir / "AppRun").read_text()
    assert apprun.startswith("#!/bin/bash\n")
    assert 'exec "$APPDIR/usr/bin/gtk3-widget-factory" "$@"' in apprun
    with pytest.raises(FileNotFoundError, match="/usr/bin/nope"):
        apps.from_deb(deb, tmp_path / "c.AppImage", program="/usr/bin/nope")
    assert not (tmp_path / "c.AppImage").exists()


# --- the apps, built with doit overlay: and run with doit run: under Xvfb ----------------

import hashlib  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from fexstack import jsonio  # noqa: E402
from runner import display  # noqa: E402
from tests.pipeline_support import Project  # noqa: E402
from tests.realworld import project as rwp  # noqa: E402
from tests.test_gui import png_colours, xvfb  # noqa: E402,F401  (the fixture)

DATA = Path(__file__).parent / "data"
LIBDIR = "usr/lib/x86_64-linux-gnu"
# What the corpus base (like Fedora's RootFS: no /usr/share) takes from the host, as FEX
# falls back to the host's files on Asahi: the MIME database and GSettings schemas GTK 3
# reads, glvnd's EGL vendor files (Mesa's 50_mesa.json), fontconfig's configuration and
# fonts, bubblewrap.
HOST_SHARE = ("/usr/share/mime", "/usr/share/glib-2.0/schemas", "/usr/share/glvnd/egl_vendor.d",
              "/etc/fonts", "/usr/share/fonts")
HOST_BWRAP = "/usr/bin/bwrap"
GTK_SEEDS = {"glib-networking": "GIO's TLS and proxy modules (a GTK app's network access)"}
WEBKIT_SEEDS = {
    "libwebkit2gtk-4.1-0": "the web view links libwebkit2gtk-4.1.so.0",
    "xdg-dbus-proxy": "WebKit's sandbox runs /usr/bin/xdg-dbus-proxy",
}
KEEP_PROXY = {"/usr/bin/xdg-dbus-proxy": "WebKitGTK's sandbox execs it"}


def _webview_appimage(found: Corpus, work: Path) -> Path:
    """tests/data/webview.c linked against the real libraries (no headers needed)."""
    libs = work / "link"
    command_deb = found.deb("libwebkit2gtk-4.1-0")
    import subprocess

    subprocess.run(["dpkg-deb", "-x", str(command_deb), str(libs)], check=True)
    base_libs = found.base_tree / LIBDIR
    return apps.from_c(
        DATA / "webview.c", work / "webview.AppImage", name="fexstack-webview",
        libs=[str(libs / LIBDIR / "libwebkit2gtk-4.1.so.0"), str(base_libs / "libgtk-3.so.0"),
              str(base_libs / "libgobject-2.0.so.0"), str(base_libs / "libglib-2.0.so.0"),
              "-Wl,--allow-shlib-undefined", "-Wl,--unresolved-symbols=ignore-in-shared-libs"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def gui_project(
    realworld_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    """One project, its overlays built once for the module: ``widgets`` (GTK 3's
    gtk3-widget-factory) and ``webview`` (WebKitGTK 4.1), on the corpus base with the
    host providing HOST_SHARE and bwrap."""
    work = tmp_path_factory.mktemp("realworld-gui")
    found = realworld_corpus
    factory = apps.from_deb(found.deb("gtk-3-examples"), work / "widgets.AppImage",
                            program="/usr/bin/gtk3-widget-factory")  # fmt: skip
    webview = _webview_appimage(found, work)
    project = rwp.new_project(work, found, host_provides=(*HOST_SHARE, HOST_BWRAP))
    rwp.write_stack(project, found, "widgets", GTK_SEEDS, appimage=factory, timeout_seconds=10)
    rwp.write_stack(project, found, "webview", WEBKIT_SEEDS, appimage=webview,
                    keep_executables=KEEP_PROXY, timeout_seconds=90)  # fmt: skip
    project.doit("overlay:widgets", "overlay:webview", timeout=900)
    yield project


def _report(bundle: Path) -> dict[str, object]:
    doc = jsonio.read(bundle / "run.report.json")
    jsonio.validate(doc, "run-report")
    assert isinstance(doc, dict)
    return doc


def _last_bundle(project: Project, name: str) -> Path:
    return rwp.bundles(project, name)[-1]


def _caches(project: Project, name: str) -> dict[str, dict[str, object]]:
    manifest = jsonio.read(project.manifest(name))
    return {c["kind"]: c for c in manifest["install"].get("caches", [])}


@pytest.mark.realworld
def test_gtk3_widget_factory_shows_its_window(
    privileged: None, xvfb: dict[str, str], gui_project: Project  # noqa: F811
) -> None:
    """gtk3-widget-factory (Debian's gtk-3-examples) as a thin AppImage on the stripped
    corpus base: GTK 3's MIME database and schemas from the host (host_provides), the
    gdk-pixbuf and GIO module caches generated into the overlay by the stage step."""
    run = gui_project.doit("run:widgets", "--backend", "native", check=False, timeout=300)
    bundle = _last_bundle(gui_project, "widgets")
    log = (bundle / "run.log").read_text()
    doc = _report(bundle)
    assert doc["outcome"] == "WINDOW_SEEN", run.output + log
    seen = doc["display"]
    assert isinstance(seen, dict) and seen["windows"] == ["gtk3-widget-factory"], seen
    colours = png_colours(bundle / display.SCREENSHOT_NAME)
    assert len(colours) > 1, colours
    identity = doc["identity"]
    assert isinstance(identity, dict) and identity["uid"] != 0 and not identity["privileged"]
    # what came from where: the caches the overlay made, the files the host gave
    caches = _caches(gui_project, "widgets")
    assert caches["gdk-pixbuf"]["status"] == "made" and caches["gdk-pixbuf"]["where"] == "view"
    assert caches["gio-modules"]["status"] == "made"
    assert "/usr/lib/x86_64-linux-gnu/gio/modules/libgiognutls.so" in caches["gio-modules"][
        "inputs_added"]  # fmt: skip
    appcheck = jsonio.read(bundle / "appcheck.json")
    needs = {n["paths"][0]: n["met_by"] for n in appcheck["runtime_needs"]}
    assert needs["/usr/share/mime/mime.cache"] == "/usr/share/mime/mime.cache"
    assert "/usr/share/mime/mime.cache" in appcheck["from_host"]
    assert "/usr/share/glib-2.0/schemas/gschemas.compiled" in appcheck["from_host"]


@pytest.mark.realworld
def test_generated_caches_are_reproducible_and_recorded(
    privileged: None, gui_project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage step's caches: the same bytes when made again from the same inputs (in
    another folder), and the manifest says which tool made each from which inputs."""
    from invariants.view import View
    from overlays import pipeline
    from overlays.caches import generate
    from overlays.project import Project as FexProject

    caches = _caches(gui_project, "widgets")
    made = {k: c for k, c in caches.items() if c["status"] == "made"}
    assert {"gdk-pixbuf", "gio-modules"} <= set(made)
    for rec in made.values():
        assert len(str(rec["tool_sha256"])) == 64 and len(str(rec["inputs_sha256"])) == 64
        assert str(rec["tool"]).startswith("/usr/lib/x86_64-linux-gnu/")  # the view's own
    staging = gui_project.build / "widgets" / "staging"
    copy = tmp_path / "staging"
    shutil.copytree(staging, copy, symlinks=True)
    files = [str(f) for rec in made.values() for f in rec["files"]]  # type: ignore[union-attr]
    before = {f: hashlib.sha256((staging / f.lstrip("/")).read_bytes()).hexdigest() for f in files}
    for f in files:
        (copy / f.lstrip("/")).unlink()
    monkeypatch.setenv("FEXSTACK_CACHE", str(gui_project.cache))  # the build's base view
    fex = FexProject(gui_project.root)
    stack = pipeline.stack_of(fex, "widgets")
    lower = View(pipeline.view_layers(fex, stack))
    again = generate.generate(copy, lower, stack.base.host_provides)
    assert {r["kind"]: r["inputs_sha256"] for r in again if r["status"] == "made"} == {
        k: c["inputs_sha256"] for k, c in made.items()}
    after = {f: hashlib.sha256((copy / f.lstrip("/")).read_bytes()).hexdigest() for f in files}
    assert after == before
    loaders = (copy / "usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders.cache").read_text()
    assert '"/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders/libpixbufloader-' in loaders


@pytest.mark.realworld
def test_webkit_view_loads_its_page_with_the_sandbox_on(
    privileged: None, xvfb: dict[str, str], gui_project: Project  # noqa: F811
) -> None:
    """The WebKitGTK 4.1 view, sandbox on: bwrap's executable is left out of the overlay
    (deps overlays drop tools) and the host is declared to provide /usr/bin/bwrap."""
    run = gui_project.doit("run:webview", "--backend", "native", check=False, timeout=300)
    bundle = _last_bundle(gui_project, "webview")
    log = (bundle / "run.log").read_text()
    doc = _report(bundle)
    assert doc["outcome"] == "PASS", run.output + log
    assert "page loaded" in log
    assert "sandbox enabled: 1" in log
    sandbox = log.split("sandbox: ", 1)[1].splitlines()[0]  # the web process under bwrap
    assert sandbox.startswith("/usr/bin/bwrap ") and "WebKitWebProcess" in sandbox, log
    identity = doc["identity"]
    assert isinstance(identity, dict) and identity["uid"] != 0 and not identity["privileged"]
    manifest = jsonio.read(gui_project.manifest("webview"))
    dropped = {d["path"] for d in manifest["install"]["dropped"]}
    assert HOST_BWRAP in dropped  # bubblewrap is in the lock, its executable is not
    appcheck = jsonio.read(bundle / "appcheck.json")
    assert HOST_BWRAP in appcheck["from_host"]
    assert any(p.startswith("/usr/share/glvnd/egl_vendor.d/") for p in appcheck["from_host"])
    needs = {n["paths"][0]: n["met_by"] for n in appcheck["runtime_needs"]}
    assert needs["/usr/bin/xdg-dbus-proxy"] == "/usr/bin/xdg-dbus-proxy"  # the overlay's


@pytest.mark.realworld
def test_without_bwrap_anywhere_the_webview_fails_before_launch(
    privileged: None, xvfb: dict[str, str], gui_project: Project,  # noqa: F811
    realworld_corpus: Corpus,
) -> None:  # fmt: skip
    rwp.set_host_provides(gui_project, realworld_corpus, HOST_SHARE)  # no /usr/bin/bwrap
    try:
        gui_project.doit("run:webview", "--backend", "native", check=False, timeout=600)
        bundle = _last_bundle(gui_project, "webview")
        doc = _report(bundle)
        assert doc["outcome"] == "INFRA" and doc["stage"] == "appcheck", doc
        assert "page loaded" not in (bundle / "run.log").read_text()
        appcheck = jsonio.read(bundle / "appcheck.json")
        [finding] = [f for f in appcheck["findings"] if f["kind"] == "runtime-need"]
        assert finding["path"] == HOST_BWRAP and finding["blocking"]
        assert "libwebkit2gtk-4.1.so.0 runs /usr/bin/bwrap" in finding["detail"]
    finally:
        rwp.set_host_provides(gui_project, realworld_corpus, (*HOST_SHARE, HOST_BWRAP))


@pytest.mark.realworld
def test_gtk3_without_host_data_fails_before_launch_naming_the_files(
    privileged: None, xvfb: dict[str, str], gui_project: Project,  # noqa: F811
    realworld_corpus: Corpus,
) -> None:  # fmt: skip
    """No host fallback (the default on x86_64): the stripped base has no MIME database
    and no GTK schemas, and no overlay can add them (their packages are the base's)."""
    rwp.set_host_provides(gui_project, realworld_corpus, ())
    try:
        gui_project.doit("run:widgets", "--backend", "native", check=False, timeout=600)
        bundle = _last_bundle(gui_project, "widgets")
        doc = _report(bundle)
        assert doc["outcome"] == "INFRA" and doc["stage"] == "appcheck", doc
        appcheck = jsonio.read(bundle / "appcheck.json")
        missing = {f["path"]: f["detail"] for f in appcheck["findings"]
                   if f["kind"] == "runtime-need"}  # fmt: skip
        assert set(missing) == {"/usr/share/mime/mime.cache",
                                "/usr/share/glib-2.0/schemas/gschemas.compiled"}  # fmt: skip
        # the overlay's own gschemas.compiled (made from gsettings-desktop-schemas) is there
        # but cannot hold GTK's schemas: their package is the base's, stripped of /usr/share
        caches = _caches(gui_project, "widgets")
        assert caches["gsettings"]["status"] == "made"
        assert "lacks org.gtk.Settings.ColorChooser" in missing[
            "/usr/share/glib-2.0/schemas/gschemas.compiled"]  # fmt: skip
    finally:
        rwp.set_host_provides(gui_project, realworld_corpus, (*HOST_SHARE, HOST_BWRAP))
