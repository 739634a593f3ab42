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
