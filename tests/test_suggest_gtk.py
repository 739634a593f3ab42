"""The suggestion loop for a GTK 3 app whose stack lacks a package shipping a cache's input.

A thin AppImage of tests/data/tlswindow.c (a GTK 3 window that needs GLib's TLS first,
linked against the corpus's real libraries) on the corpus base, the host providing the
MIME database and GTK's schemas (HOST_SHARE, as FEX's fallback on Asahi). GLib's TLS is
a GIO module listed in giomodule.cache; the package that ships it (glib-networking) is
not in the base. Seeded with an unrelated library only, ``doit run:`` fails with GLib's
"TLS support is not available"; ``doit suggest:`` names glib-networking in a seed line;
pasted into the stack, the overlay carries the module and the stage step's
giomodule.cache lists it, and the window is seen.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fexstack import jsonio
from tests.pipeline_support import Project
from tests.realworld import apps
from tests.realworld import project as rwp
from tests.realworld.corpus import Corpus
from tests.test_gui import xvfb  # noqa: F401  (the fixture)
from tests.test_realworld_gui import HOST_SHARE, LIBDIR

DATA = Path(__file__).parent / "data"
NAME = "tlswin"
TITLE = "fexstack-tls-window"
GNUTLS_MODULE = f"/{LIBDIR}/gio/modules/libgiognutls.so"


@pytest.fixture(scope="module")
def tls_project(
    realworld_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Path]]:
    work = tmp_path_factory.mktemp("suggest-gtk")
    base_libs = realworld_corpus.base_tree / LIBDIR
    image = apps.from_c(
        DATA / "tlswindow.c", work / "tlswindow.AppImage", name=TITLE,
        libs=[str(base_libs / f"lib{lib}.so.0") for lib in ("gtk-3", "gio-2.0", "gobject-2.0",
                                                          "glib-2.0")]
        + ["-Wl,--allow-shlib-undefined", "-Wl,--unresolved-symbols=ignore-in-shared-libs"],
    )  # fmt: skip
    project = rwp.new_project(work, realworld_corpus, host_provides=HOST_SHARE)
    yield project, image


def _write(project: Project, found: Corpus, image: Path, seeds: dict[str, str]) -> None:
    rwp.write_stack(project, found, NAME, seeds, appimage=image, timeout_seconds=10)


def _report(project: Project) -> dict[str, object]:
    bundle = rwp.bundles(project, NAME)[-1]
    doc = jsonio.read(bundle / "run.report.json")
    jsonio.validate(doc, "run-report")
    assert isinstance(doc, dict)
    return doc


_SEED_LINE = re.compile(r'^("[^"]+"|[A-Za-z0-9_-]+) = ".*"$')


@pytest.mark.realworld
def test_suggest_loop_names_the_gio_module_package_then_the_window_is_seen(
    privileged: None, xvfb: dict[str, str],  # noqa: F811
    realworld_corpus: Corpus, tls_project: tuple[Project, Path],
) -> None:  # fmt: skip
    project, image = tls_project
    found = realworld_corpus
    assert not found.packages["glib-networking"].in_base
    seeds = {"libogg0": "an unrelated library: the stack lacks GLib's TLS module"}
    _write(project, found, image, seeds)
    # 1. without a TLS module the app exits 1 with GLib's own message, no window
    failed = project.doit("run:" + NAME, "--backend", "native", check=False, timeout=900)
    assert failed.returncode != 0
    before = _report(project)
    log = (rwp.bundles(project, NAME)[-1] / "run.log").read_text()
    assert before["outcome"] == "FAIL", failed.output + log
    assert "TLS support is not available" in log
    shown = before.get("display") or {}
    assert isinstance(shown, dict) and TITLE not in shown.get("windows", []), shown
    # 2. suggest names the package that ships the module (an input of giomodule.cache)
    proc = project.doit("suggest:" + NAME, "--backend", "native", check=False, timeout=900)
    assert proc.returncode == 0, proc.output
    lines = [line for line in proc.stdout.splitlines() if _SEED_LINE.match(line)]
    suggested = tomllib.loads("\n".join(lines))
    assert "glib-networking" in suggested, proc.output
    assert "TLS" in suggested["glib-networking"] and "gio/modules" in suggested["glib-networking"]
    match = re.search(r"\(trace: (\S+)/run\.log; ", proc.stdout)
    assert match, proc.stdout
    doc = jsonio.read(Path(match[1]) / "suggest.json")
    [finding] = [f for f in doc["findings"] if f["packages"][:1] == ["glib-networking"]
                 and f["source"] == "app-error"]  # fmt: skip
    assert finding["question"] == "/usr/lib*/gio/modules/libgio*tls*.so"
    # 3. the printed line pasted into the stack: the overlay carries the module, the stage
    #    step lists it in giomodule.cache, and the window is seen
    _write(project, found, image, {**seeds, "glib-networking": suggested["glib-networking"]})
    passed = project.doit("run:" + NAME, "--backend", "native", check=False, timeout=900)
    after = _report(project)
    log = (rwp.bundles(project, NAME)[-1] / "run.log").read_text()
    assert after["outcome"] == "WINDOW_SEEN", passed.output + log
    assert "TLS backend: supported" in log
    display = after["display"]
    assert isinstance(display, dict) and display["windows"] == [TITLE], display
    manifest = jsonio.read(project.manifest(NAME))
    caches = {c["kind"]: c for c in manifest["install"].get("caches", [])}
    assert caches["gio-modules"]["status"] == "made"
    assert GNUTLS_MODULE in caches["gio-modules"]["inputs_added"]
