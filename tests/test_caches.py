"""Install-time caches (overlays/caches): which kinds the stage step makes, with which
tool, and what it refuses; the real tools (the host's update-mime-database, the corpus
view's glib-compile-schemas) and their error messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fexstack.errors import StageError
from invariants.cachekinds import KINDS, gsettings, mime
from invariants.view import Layer, View
from overlays.caches import generate
from tests.realworld.corpus import Corpus

SCHEMA = """<schemalist>
  <schema id="org.fexstack.Test" path="/org/fexstack/test/">
    <key name="greeting" type="s"><default>'hello'</default></key>
  </schema>
</schemalist>
"""
MIME_XML = """<?xml version="1.0" encoding="UTF-8"?>
<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">
  <mime-type type="application/x-fexstack"><comment>fexstack test</comment>
    <glob pattern="*.fexstack"/></mime-type>
</mime-info>
"""


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    disk = root / path.lstrip("/")
    disk.parent.mkdir(parents=True, exist_ok=True)
    disk.write_text(text)
    disk.chmod(mode)


def _view(*roots: Path) -> View:
    return View([Layer(f"l{i}", r, "base") for i, r in enumerate(roots)])


def test_kinds_table_and_input_patterns() -> None:
    assert set(KINDS) == {"gsettings", "mime", "gdk-pixbuf", "gio-modules", "gtk3-immodules",
                          "fontconfig"}  # fmt: skip
    g = KINDS["gsettings"]
    assert g.is_input("/usr/share/glib-2.0/schemas/org.x.gschema.xml")
    assert g.is_input("/usr/share/glib-2.0/schemas/10_x.gschema.override")
    assert not g.is_input("/usr/share/glib-2.0/schemas/gschemas.compiled")
    assert not g.is_input("/usr/share/glib-2.0/schemas/sub/org.x.gschema.xml")
    assert KINDS["fontconfig"].is_input("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    assert not KINDS["fontconfig"].generate  # fc-cache's files record folder mtimes


def test_plan_decides_per_kind(tmp_path: Path) -> None:
    staging, base = tmp_path / "staging", tmp_path / "base"
    _write(staging, "/usr/share/glib-2.0/schemas/org.fexstack.Test.gschema.xml", SCHEMA)
    _write(staging, "/usr/share/mime/packages/fexstack.xml", MIME_XML)
    _write(staging, "/usr/share/fonts/truetype/x/X.ttf", "font")
    # the base has gdk-pixbuf loaders and their cache: an added loader finds it stale
    pixbuf = KINDS["gdk-pixbuf"]
    _write(base, pixbuf.cache, "# cache\n")
    _write(staging, pixbuf.inputs + "/libpixbufloader-x.so", "elf")
    # the view's own glib-compile-schemas (any executable file at a candidate path)
    _write(base, gsettings.KIND.tools[0], "#!/bin/sh\n", 0o755)
    jobs, skipped = generate.plan(staging, _view(base), host_provides=("/usr/share/mime",))
    by_kind = {j["kind"]: j for j in jobs}
    assert by_kind["gsettings"]["argv"] == [gsettings.KIND.tools[0],
                                            "/usr/share/glib-2.0/schemas"]  # fmt: skip
    assert by_kind["gsettings"]["where"] == "view" and by_kind["gsettings"]["chroot"]
    assert by_kind["gsettings"]["inputs_added"] == [
        "/usr/share/glib-2.0/schemas/org.fexstack.Test.gschema.xml"]
    why = {s["kind"]: s["reason"] for s in skipped}
    assert why == {"mime": "host-provided", "gdk-pixbuf": "stale-below",
                   "fontconfig": "not-generated"}  # fmt: skip
    # no host fallback for mime: the host's update-mime-database (arch-independent format)
    jobs, _ = generate.plan(staging, _view(base))
    [m] = [j for j in jobs if j["kind"] == "mime"]
    assert m["where"] == "host" and not m["chroot"]
    assert Path(m["argv"][0]).name == "update-mime-database"
    assert m["argv"][1:] == ["-n", mime.MIME]


def test_normalizers_sort_what_follows_readdir() -> None:
    loaders = (b'# header\n# more\n"/b.so"\n"b" 1\n\n"/a.so"\n"a" 1\n\n')
    assert generate.NORMALIZERS["blocks"](loaders) == (
        b'# header\n# more\n"/a.so"\n"a" 1\n\n"/b.so"\n"b" 1\n\n')
    assert generate.NORMALIZERS["lines"](b"z.so: x\na.so: y\n") == b"a.so: y\nz.so: x\n"


def _digests(root: Path, files: list[str]) -> dict[str, str]:
    return {f: hashlib.sha256((root / f.lstrip("/")).read_bytes()).hexdigest() for f in files}


def test_host_mime_tool_makes_the_same_bytes_twice(privileged: None, tmp_path: Path) -> None:
    """The real host update-mime-database through the merged view; reproducible."""
    made = []
    for run in ("one", "two"):
        staging, base = tmp_path / run / "staging", tmp_path / run / "base"
        _write(staging, "/usr/share/mime/packages/fexstack.xml", MIME_XML)
        base.mkdir(parents=True)
        [rec] = [r for r in generate.generate(staging, _view(base)) if r["kind"] == "mime"]
        assert rec["status"] == "made" and rec["where"] == "host"
        assert "/usr/share/mime/mime.cache" in rec["files"]
        assert "/usr/share/mime/application/x-fexstack.xml" in rec["files"]
        made.append((rec, _digests(staging, rec["files"])))
    assert made[0][1] == made[1][1]
    assert made[0][0]["inputs_sha256"] == made[1][0]["inputs_sha256"]


@pytest.mark.realworld
def test_view_tool_on_the_corpus_base_and_its_error(
    privileged: None, realworld_corpus: Corpus, tmp_path: Path
) -> None:
    """The corpus base's own x86_64 glib-compile-schemas, run in a chroot of the view;
    a broken schema fails the stage with the tool's message."""
    base = realworld_corpus.base_tree
    staging = tmp_path / "staging"
    _write(staging, "/usr/share/glib-2.0/schemas/org.fexstack.Test.gschema.xml", SCHEMA)
    records = {r["kind"]: r for r in generate.generate(staging, _view(base))}
    rec = records["gsettings"]
    assert rec["status"] == "made" and rec["where"] == "view"
    assert rec["tool"] == "/usr/lib/x86_64-linux-gnu/glib-2.0/glib-compile-schemas"
    compiled = (staging / gsettings.KIND.cache.lstrip("/")).read_bytes()
    assert compiled.startswith(b"GVariant") and b"org.fexstack.Test" in compiled
    broken = tmp_path / "broken"
    for name in ("a", "b"):  # one schema id twice: the tool ignores the second file
        _write(broken, f"/usr/share/glib-2.0/schemas/{name}.gschema.xml", SCHEMA)
    records = {r["kind"]: r for r in generate.generate(broken, _view(base))}
    assert "b.gschema.xml" in records["gsettings"]["messages"]
    assert "already specified" in records["gsettings"]["messages"]


def test_a_failing_tool_fails_the_stage_with_its_message(privileged: None, tmp_path: Path) -> None:
    """A view tool that exits non-zero: the stage fails naming the tool, the cache and
    what the tool printed."""
    staging, base = tmp_path / "staging", tmp_path / "base"
    _write(staging, "/usr/share/glib-2.0/schemas/org.fexstack.Test.gschema.xml", SCHEMA)
    for sub in ("usr/bin", "usr/lib64"):
        (base / sub).mkdir(parents=True)
    import shutil
    import subprocess

    bash = shutil.which("bash")
    assert bash is not None
    # the host's bash and its libraries in the view, a script at the tool's path
    _write(base, gsettings.KIND.tools[-1], "#!/bin/bash\necho 'no space left' >&2\nexit 3\n",
           0o755)
    (base / "bin").symlink_to("usr/bin")
    shutil.copy2(bash, base / "usr/bin/bash")
    ldd = subprocess.run(["ldd", bash], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        parts = line.split()
        lib = parts[2] if len(parts) >= 3 and parts[1] == "=>" else parts[0]
        if lib.startswith("/"):
            dest = base / lib.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, dest)
    with pytest.raises(StageError, match=r"glib-compile-schemas failed \(3\) writing "
                       r"/usr/share/glib-2.0/schemas/gschemas.compiled: no space left"):
        generate.generate(staging, _view(base))


def test_caches_record_round_trips_and_refuses_a_malformed_file(tmp_path: Path) -> None:
    import jsonschema

    from fexstack import jsonio
    from overlays.caches import step

    made = {"kind": "mime", "cache": "/usr/share/mime/mime.cache", "status": "made",
            "inputs_added": ["/usr/share/mime/packages/x.xml"], "tool": "update-mime-database",
            "tool_sha256": "ab" * 32, "where": "host", "version": "2.4",
            "inputs_sha256": "cd" * 32, "files": ["/usr/share/mime/mime.cache"]}
    skipped = {"kind": "gsettings", "cache": "/usr/share/glib-2.0/schemas/gschemas.compiled",
               "status": "skipped", "inputs_added": [], "reason": "no-tool"}
    record = step.CachesRecord(generate.RECIPE, (made, skipped))
    path = step.record_path(tmp_path / "app")
    record.write(path)
    assert step.CachesRecord.read(path) == record
    assert step.read(tmp_path / "app") == [made, skipped]
    assert jsonio.read(path) == {"recipe": generate.RECIPE, "caches": [made, skipped]}
    assert step.read(tmp_path / "none") == []  # a stage from before caches were made
    path.write_text(jsonio.dumps({"recipe": 1, "caches": [{**skipped, "status": "maybe"}]}))
    with pytest.raises(StageError) as err:
        step.read(tmp_path / "app")
    assert str(path) in err.value.message and "caches schema at caches/0/status" in \
        err.value.message
    assert err.value.hint == "stage the tree again: doit stage:app"
    path.write_text("")
    with pytest.raises(StageError, match="not valid JSON"):
        step.read(tmp_path / "app")
    with pytest.raises(jsonschema.ValidationError):  # the writer validates too
        step.CachesRecord(1, ({**made, "cache": "relative"},)).write(path)
