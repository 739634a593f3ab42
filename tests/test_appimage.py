"""AppImage inspection and extraction, on AppImages built with the real tools."""

from __future__ import annotations

import filecmp
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from fexstack.errors import RunError
from runner import appimage
from runner.appimage import Entry, extract, inspect, parse_listing
from testkit import packer

SHT_PROGBITS, SHT_NOBITS, SHT_STRTAB = 1, 8, 3


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("appimage")


@pytest.fixture(scope="module")
def runtime(work: Path) -> Path:
    return packer.build_runtime(work / "runtime")


@pytest.fixture(scope="module")
def demo(work: Path) -> Path:
    return packer.build_demo_appimage(work / "demo.AppImage")


def _gcc(source: str, out: Path) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    src.unlink()
    return out


@pytest.fixture(scope="module")
def elf_appdir(work: Path) -> Path:
    """An AppDir whose AppRun is a symlink to an ELF, plus an absolute symlink and a subdir."""
    appdir = work / "elf-appdir"
    (appdir / "usr" / "bin").mkdir(parents=True)
    (appdir / "usr" / "share" / "empty").mkdir(parents=True)
    _gcc('#include <stdio.h>\nint main(void){puts("elf-app ok");return 0;}\n',
         appdir / "usr" / "bin" / "app")
    (appdir / "usr" / "share" / "data.txt").write_text("data\n")
    os.symlink("usr/bin/app", appdir / "AppRun")
    os.symlink("/etc/passwd", appdir / "passwd-link")
    os.symlink("../..", appdir / "usr" / "share" / "up")
    return appdir


@pytest.fixture(scope="module")
def elf_appimage(work: Path, elf_appdir: Path, runtime: Path) -> Path:
    return packer.build_appimage(elf_appdir, work / "elf.AppImage", runtime=runtime)


# --- inspect ---------------------------------------------------------------------------


def test_offset_is_end_of_runtime(work: Path, runtime: Path, elf_appdir: Path) -> None:
    image = packer.build_appimage(elf_appdir, work / "offset.AppImage", runtime=runtime)
    info = inspect(image)
    data = image.read_bytes()
    assert info.type == 2
    assert info.payload_format == "squashfs"
    assert info.size == len(data)
    # The packer appends the SquashFS right after the runtime file.
    assert info.payload_offset == runtime.stat().st_size
    assert data[info.payload_offset : info.payload_offset + 4] == b"hsqs"
    assert data[8:11] == b"AI\x02"


def test_demo_appimage_layout(demo: Path) -> None:
    info = inspect(demo)
    listed = appimage.listing(info)
    by_path = {e.path: e for e in listed}
    assert by_path["AppRun"].kind == "-"
    assert by_path["usr/bin/fexstack-demo"].kind == "-"
    # The overlay's libraries are not shipped in the AppImage.
    assert not any("libdemo" in e.path for e in listed)


def _section(cls: int, order: str, sh_type: int, offset: int, size: int) -> bytes:
    if cls == 1:
        return struct.pack(order + "10I", 0, sh_type, 0, 0, offset, size, 0, 0, 1, 0)
    return struct.pack(order + "IIQQQQIIQQ", 0, sh_type, 0, 0, offset, size, 0, 0, 1, 0)


def craft_elf(cls: int, order: str, *, section_after_table: bool) -> tuple[bytes, int]:
    """A minimal ELF (class ``cls``, byte order ``order``) with AI\\x02; and where it ends.

    Sections: a data blob before the section header table, optionally one more after it,
    and a huge .bss-like NOBITS section that occupies no file bytes.
    """
    ehsize, shentsize = (52, 40) if cls == 1 else (64, 64)
    blob_off, blob_len = ehsize, 100
    shoff = blob_off + blob_len
    shnum = 4 if section_after_table else 3
    table_end = shoff + shentsize * shnum
    tail_off, tail_len = table_end + 16, 333
    sections = [
        _section(cls, order, 0, 0, 0),
        _section(cls, order, SHT_PROGBITS, blob_off, blob_len),
        _section(cls, order, SHT_NOBITS, blob_off + blob_len, 1 << 30),
    ]
    if section_after_table:
        sections.append(_section(cls, order, SHT_PROGBITS, tail_off, tail_len))
    ident = b"\x7fELF" + bytes([cls, 1 if order == "<" else 2, 1, 0]) + b"AI\x02" + b"\0" * 5
    machine = 3 if cls == 1 else 62
    if cls == 1:
        rest = struct.pack(order + "HHIIIIIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, ehsize,
                           0, 0, shentsize, shnum, 0)
    else:
        rest = struct.pack(order + "HHIQQQIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, ehsize,
                           0, 0, shentsize, shnum, 0)
    data = ident + rest
    assert len(data) == ehsize
    data += b"\xaa" * blob_len + b"".join(sections)
    assert len(data) == table_end
    end = table_end
    if section_after_table:
        data += b"\0" * 16 + b"\xbb" * tail_len
        end = tail_off + tail_len
    return data, end


@pytest.mark.parametrize("cls", [1, 2], ids=["32bit", "64bit"])
@pytest.mark.parametrize("order", ["<", ">"], ids=["lsb", "msb"])
@pytest.mark.parametrize("after", [False, True], ids=["table-last", "section-last"])
def test_offset_formula_on_crafted_elf(
    tmp_path: Path, elf_appdir: Path, cls: int, order: str, after: bool
) -> None:
    header, end = craft_elf(cls, order, section_after_table=after)
    sqfs = packer.squashfs(elf_appdir, tmp_path / "payload.sqfs")
    image = tmp_path / "crafted.AppImage"
    image.write_bytes(header + sqfs.read_bytes())
    info = inspect(image)
    assert info.payload_offset == end == len(header)
    # And the payload really is extractable from there.
    result = extract(image, cache=tmp_path / "cache")
    assert (result.appdir / "usr" / "share" / "data.txt").read_text() == "data\n"


# --- bad AppImages ---------------------------------------------------------------------


def test_type1_is_refused(work: Path) -> None:
    image = packer.build_type1_like(work / "type1.AppImage")
    with pytest.raises(RunError) as err:
        inspect(image)
    assert "Type 1" in err.value.message and str(image) in err.value.message
    assert err.value.hint and "appimagetool" in err.value.hint


def test_dwarfs_is_refused(work: Path, runtime: Path) -> None:
    image = packer.build_dwarfs_like(work / "dwarfs.AppImage")
    with pytest.raises(RunError) as err:
        inspect(image)
    assert "DwarFS" in err.value.message and str(image) in err.value.message
    assert err.value.hint and "dwarfsextract" in err.value.hint
    assert f"at byte {runtime.stat().st_size}" in err.value.message


def test_not_elf_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.AppImage"
    text.write_text("#!/bin/sh\necho I am a script\n")
    with pytest.raises(RunError) as err:
        inspect(text)
    assert "is not an AppImage" in err.value.message and "not an ELF" in err.value.message
    assert str(text) in err.value.message


def test_elf_without_magic_is_refused(tmp_path: Path) -> None:
    binary = _gcc("int main(void){return 0;}\n", tmp_path / "plain")
    with pytest.raises(RunError) as err:
        inspect(binary)
    assert "without the AppImage magic" in err.value.message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError) as err:
        inspect(tmp_path / "nope.AppImage")
    assert "cannot read AppImage" in err.value.message


def test_truncated_is_refused(tmp_path: Path, elf_appimage: Path) -> None:
    info = inspect(elf_appimage)
    data = elf_appimage.read_bytes()
    bytes_used = struct.unpack_from("<Q", data, info.payload_offset + 40)[0]
    cases = {
        "inside-runtime": info.payload_offset - 8,  # the section header table is cut
        "at-offset": info.payload_offset,  # nothing after the runtime
        "in-superblock": info.payload_offset + 50,
        "in-payload": info.payload_offset + bytes_used - 1,
    }
    for name, keep in cases.items():
        cut = packer.build_truncated(elf_appimage, tmp_path / f"{name}.AppImage", keep=keep)
        with pytest.raises(RunError) as err:
            inspect(cut)
        assert "truncated" in err.value.message, name
        assert str(cut) in err.value.message
    # Exactly bytes_used is enough (mksquashfs pads to 4 KiB; the padding is optional).
    whole = packer.build_truncated(
        elf_appimage, tmp_path / "whole.AppImage", keep=info.payload_offset + bytes_used
    )
    assert inspect(whole).payload_offset == info.payload_offset


# --- extraction ------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = (f"file {stat.S_IMODE(full.stat().st_mode):o}", None)
    return out


def test_extract_elf_apprun_keeps_symlinks(tmp_path: Path, elf_appimage: Path,
                                           elf_appdir: Path) -> None:
    result = extract(elf_appimage, cache=tmp_path / "cache")
    appdir = result.appdir
    assert not result.cache_hit
    assert appdir.name == "squashfs-root"
    assert _tree(appdir) == _tree(elf_appdir)
    assert filecmp.cmp(appdir / "usr" / "bin" / "app", elf_appdir / "usr" / "bin" / "app",
                       shallow=False)
    # Symlinks stay symlinks, absolute ones included; nothing was followed.
    assert (appdir / "AppRun").is_symlink()
    assert os.readlink(appdir / "AppRun") == "usr/bin/app"
    assert (appdir / "passwd-link").is_symlink()
    assert os.readlink(appdir / "passwd-link") == "/etc/passwd"
    assert os.readlink(appdir / "usr" / "share" / "up") == "../.."
    out = subprocess.run([str(appdir / "AppRun")], capture_output=True, text=True, check=True)
    assert out.stdout == "elf-app ok\n"


def test_extract_script_apprun(tmp_path: Path, demo: Path) -> None:
    result = extract(demo, cache=tmp_path / "cache")
    apprun = result.appdir / "AppRun"
    assert apprun.read_text().startswith("#!/bin/bash\n")
    assert apprun.stat().st_mode & 0o111
    program = result.appdir / "usr" / "bin" / "fexstack-demo"
    needed = subprocess.run(["readelf", "-dW", str(program)], capture_output=True, text=True,
                            check=True).stdout
    assert "[libdemo-greet.so.1]" in needed
    assert "RPATH" not in needed and "RUNPATH" not in needed


def test_cache_hit_then_miss_after_touch(tmp_path: Path, runtime: Path,
                                         elf_appdir: Path) -> None:
    image = packer.build_appimage(elf_appdir, tmp_path / "cached.AppImage", runtime=runtime)
    cache = tmp_path / "cache"
    first = extract(image, cache=cache)
    marker = first.appdir / "usr" / "share" / "data.txt"
    inode = marker.stat().st_ino
    second = extract(image, cache=cache)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.appdir == first.appdir
    assert marker.stat().st_ino == inode  # not re-extracted
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = extract(image, cache=cache)
    assert not third.cache_hit
    assert third.appdir != first.appdir
    assert third.seconds > 0 and first.seconds > 0  # each extraction timed


def test_default_cache_is_under_cache_dir(tmp_path: Path, elf_appimage: Path) -> None:
    result = extract(elf_appimage)
    cache_root = Path(os.environ["FEXSTACK_CACHE"]) / "appimages"
    assert result.appdir.parent.parent == cache_root


def test_interrupted_extraction_is_not_reused(tmp_path: Path, elf_appimage: Path) -> None:
    cache = tmp_path / "cache"
    key = appimage.cache_key(elf_appimage.absolute())
    # What a killed extraction leaves: a temp dir (and, worse, a key dir without the AppDir).
    (cache / f".tmp-{key}.dead" / "squashfs-root").mkdir(parents=True)
    (cache / key).mkdir()
    result = extract(elf_appimage, cache=cache)
    assert not result.cache_hit
    assert (result.appdir / "usr" / "bin" / "app").is_file()


def test_setuid_bits_are_cleared(tmp_path: Path, runtime: Path) -> None:
    appdir = tmp_path / "suid"
    appdir.mkdir()
    tool = appdir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    image = packer.build_appimage(appdir, tmp_path / "suid.AppImage", runtime=runtime)
    result = extract(image, cache=tmp_path / "cache")
    assert stat.S_IMODE((result.appdir / "tool").stat().st_mode) == 0o755


def _escaping_appimage(tmp_path: Path, runtime: Path, name: bytes) -> Path:
    """An AppImage whose SquashFS names an entry ``name`` (patched in the directory table)."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    placeholder = b"Q" * len(name)
    (tree / "d" / placeholder.decode()).write_text("escaped\n")
    sqfs = tmp_path / "raw.sqfs"
    subprocess.run(
        ["mksquashfs", str(tree), str(sqfs), "-noappend", "-root-owned", "-quiet",
         "-noI", "-noD", "-noF", "-noX"],
        check=True,
    )
    raw = sqfs.read_bytes()
    assert raw.count(placeholder) == 1  # only the directory entry (tables uncompressed)
    image = tmp_path / "escape.AppImage"
    image.write_bytes(runtime.read_bytes() + raw.replace(placeholder, name))
    return image


@pytest.mark.parametrize("name", [b"../../../x", b".."], ids=["dotdot-path", "dotdot"])
def test_escaping_name_is_refused(tmp_path: Path, runtime: Path, name: bytes) -> None:
    image = _escaping_appimage(tmp_path, runtime, name)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(RunError) as err:
        extract(image, cache=cache)
    assert "refusing to extract" in err.value.message
    # Nothing was written: no cache entry, no leftover temp dir, no escaped file.
    assert not cache.exists() or list(cache.iterdir()) == []
    for parent in (tmp_path, tmp_path / "deep", cache):
        assert not (parent / "x").exists()


def test_listing_parser_refuses_unsafe_names(tmp_path: Path) -> None:
    src = tmp_path / "a.AppImage"
    head = "drwxr-xr-x 0/0                      24 1970-01-01 00:00 \n"
    line = "-rw-r--r-- 0/0                       2 1970-01-01 00:00 {}\n"
    for bad in ("/d/../../x", "/..", "/./x", "relative", "/a//b"):
        with pytest.raises(RunError) as err:
            parse_listing(head + line.format(bad), src)
        assert repr(bad) in err.value.message
    with pytest.raises(RunError, match="twice"):
        parse_listing(head + line.format("/a") + line.format("/a"), src)
    with pytest.raises(RunError, match="device node"):
        parse_listing(head + "crw-r--r-- 0/0    1,  3 1970-01-01 00:00 /null\n", src)


def test_listing_parser_reads_odd_names(tmp_path: Path) -> None:
    text = (
        "drwxr-xr-x 0/0                      24 1970-01-01 00:00 \n"
        "lrwxrwxrwx 0/0                       6 1970-01-01 00:00 /a -> b -> c -> d\n"
        "-rw-r--r-- 0/0                       1 1970-01-01 00:00 /we ird\n"
        "name\n"
    )
    entries = parse_listing(text, tmp_path / "x")
    assert entries == [
        Entry(path="a -> b", kind="l", mode="rwxrwxrwx", target="c -> d"),
        Entry(path="we ird\nname", kind="-", mode="rw-r--r--"),
    ]


def test_listing_parser_on_real_listing(tmp_path: Path, runtime: Path) -> None:
    tree = tmp_path / "odd"
    tree.mkdir()
    (tree / "sp ace").write_text("1")
    (tree / "new\nline").write_text("2")
    os.symlink("tar -> get", tree / "li -> nk")
    image = packer.build_appimage(tree, tmp_path / "odd.AppImage", runtime=runtime)
    entries = {e.path: e for e in appimage.listing(inspect(image))}
    assert set(entries) == {"sp ace", "new\nline", "li -> nk"}
    assert entries["li -> nk"].target == "tar -> get"
    result = extract(image, cache=tmp_path / "cache")
    assert os.readlink(result.appdir / "li -> nk") == "tar -> get"


def test_concurrent_extraction_keeps_the_first(tmp_path: Path, elf_appimage: Path) -> None:
    """A late finisher never swaps the tree under an app already running from the cache."""
    cache = tmp_path / "cache"
    first = extract(elf_appimage, cache=cache)
    inode = (first.appdir / "usr" / "bin" / "app").stat().st_ino
    late = tmp_path / "late"
    (late / "squashfs-root").mkdir(parents=True)
    appimage._publish(late, first.appdir.parent)
    assert (first.appdir / "usr" / "bin" / "app").stat().st_ino == inode
    assert late.is_dir()  # left for the caller to remove
    assert [p.name for p in cache.iterdir()] == [first.appdir.parent.name]


def test_duplicate_name_through_symlink_is_refused(tmp_path: Path, runtime: Path) -> None:
    """The classic escape: a symlink ``aa`` to outside, then a directory also named ``aa``."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    (tree / "ab").mkdir(parents=True)
    (tree / "ab" / "f").write_text("evil\n")
    os.symlink(outside, tree / "aa")
    sqfs = tmp_path / "raw.sqfs"
    subprocess.run(["mksquashfs", str(tree), str(sqfs), "-noappend", "-root-owned", "-quiet",
                    "-noI", "-noD", "-noF", "-noX"], check=True)
    raw = sqfs.read_bytes()
    assert raw.count(b"ab") == 1
    image = tmp_path / "dup.AppImage"
    image.write_bytes(runtime.read_bytes() + raw.replace(b"ab", b"aa"))
    with pytest.raises(RunError, match="refusing to extract"):
        extract(image, cache=tmp_path / "cache")
    assert list(outside.iterdir()) == []
