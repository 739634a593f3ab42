"""Sanitize steps on a copy of an AppDir, never the original."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from fexstack import jsonio
from fexstack.errors import RunError
from runner import appimage
from runner.sanitize import gnu_property_remnants, sanitize
from testkit import packer

STEP = "strip-gnu-property"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def appdir(tmp_path: Path) -> Path:
    """An extracted AppDir (from the cache) with notes in its ELF files."""
    tree = tmp_path / "tree"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "lib").mkdir(parents=True)
    src = tmp_path / "app.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("app ok");return 0;}\n')
    # -z x86-64-v2 records an ISA level in .note.gnu.property (the note FEX trips over).
    subprocess.run(["gcc", "-O2", "-Wl,-z,x86-64-v2", "-o", str(tree / "usr/bin/app"), str(src)],
                   check=True)
    lib = tmp_path / "lib.c"
    lib.write_text("int answer(void){return 42;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tree / "usr/lib/libanswer.so"),
                    str(lib)], check=True)
    (tree / "AppRun").write_text('#!/bin/sh\nexec "$(dirname "$0")/usr/bin/app"\n')
    (tree / "AppRun").chmod(0o755)
    (tree / "README").write_text("not an ELF\n")
    os.symlink("/etc/passwd", tree / "passwd-link")
    image = packer.build_appimage(tree, tmp_path / "app.AppImage")
    return appimage.extract(image, cache=tmp_path / "cache").appdir


def test_strip_gnu_property_on_a_copy(tmp_path: Path, appdir: Path) -> None:
    app = appdir / "usr" / "bin" / "app"
    before = {p: _sha(appdir / p) for p in ("usr/bin/app", "usr/lib/libanswer.so", "README")}
    assert gnu_property_remnants(app)  # the original has the note
    out = tmp_path / "sanitized"
    result = sanitize(appdir, out, steps=[STEP])

    assert result.appdir == out / "squashfs-root"
    ev = result.evidence
    assert ev == jsonio.read(out / "sanitize.json")
    jsonio.validate(ev, "sanitize")
    assert ev["steps"] == [STEP] and ev["verified"] is True
    assert ev["elf_x86_64_scanned"] == 2
    listed = {m["path"]: m for m in ev["modified"]}
    # The library (linked without crt files) has no note: scanned, not rewritten.
    assert set(listed) == {"usr/bin/app"}
    assert gnu_property_remnants(appdir / "usr/lib/libanswer.so") == []
    for rel, record in listed.items():
        new = result.appdir / rel
        assert record["sha256_before"] == before[rel]
        assert record["sha256_after"] == _sha(new) != before[rel]
        assert record["gnu_property_remaining"] == []
        assert record["new_file"] and record["original_unchanged"]
        assert gnu_property_remnants(new) == []  # re-read independently
        assert not os.path.samefile(new, appdir / rel)
        assert os.stat(new).st_mode == os.stat(appdir / rel).st_mode
    # The cached original is untouched and still carries its note.
    assert {p: _sha(appdir / p) for p in before} == before
    assert gnu_property_remnants(app)
    # Untouched files are shared; symlinks copied as symlinks.
    for rel in ("README", "usr/lib/libanswer.so"):
        assert os.path.samefile(result.appdir / rel, appdir / rel)
    assert os.readlink(result.appdir / "passwd-link") == "/etc/passwd"
    # The stripped program still runs.
    run = subprocess.run([str(result.appdir / "AppRun")], capture_output=True, text=True,
                         check=True)
    assert run.stdout == "app ok\n"


def test_sanitize_is_cached(tmp_path: Path, appdir: Path) -> None:
    out = tmp_path / "sanitized"
    first = sanitize(appdir, out, steps=[STEP])
    evidence_inode = (out / "sanitize.json").stat().st_ino
    app_inode = (first.appdir / "usr/bin/app").stat().st_ino
    second = sanitize(appdir, out, steps=[STEP])
    assert second.evidence == first.evidence
    assert (out / "sanitize.json").stat().st_ino == evidence_inode
    assert (first.appdir / "usr/bin/app").stat().st_ino == app_inode


def test_a_damaged_sanitize_record_is_sanitized_again(
    tmp_path: Path, appdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sanitized"
    first = sanitize(appdir, out, steps=[STEP])
    (out / "sanitize.json").write_text(jsonio.dumps({"key": first.evidence["key"]}))
    second = sanitize(appdir, out, steps=[STEP])
    assert "does not match the sanitize schema" in capsys.readouterr().err
    assert second.evidence == first.evidence
    assert jsonio.read(out / "sanitize.json") == first.evidence  # made anew, whole


def test_sanitize_redone_when_appdir_changes(tmp_path: Path, appdir: Path) -> None:
    out = tmp_path / "sanitized"
    first = sanitize(appdir, out, steps=[STEP])
    (appdir / "README").write_text("changed\n")
    second = sanitize(appdir, out, steps=[STEP])
    assert second.evidence["key"] != first.evidence["key"]
    assert (second.appdir / "README").read_text() == "changed\n"


def test_unknown_step_is_an_error(tmp_path: Path, appdir: Path) -> None:
    with pytest.raises(RunError) as err:
        sanitize(appdir, tmp_path / "out", steps=["strip-everything"])
    assert "strip-everything" in err.value.message
    assert err.value.hint and STEP in err.value.hint
    assert not (tmp_path / "out").exists()


def test_no_steps_returns_the_original(tmp_path: Path, appdir: Path) -> None:
    result = sanitize(appdir, tmp_path / "out", steps=[])
    assert result.appdir == Path(os.path.realpath(appdir))
    assert result.evidence["modified"] == []
    assert not (tmp_path / "out").exists()
