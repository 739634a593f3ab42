"""The base view: an EROFS image indexes like its directory; merging and symlinks."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from fexstack import command, digest, jsonio
from invariants import ldcache, view
from invariants.view import Layer, Tree, View
from testkit.factory import Factory, Library
from tests.invariants_support import fedora_base


def test_image_indexes_like_its_directory(factory: Factory, tmp_path: Path) -> None:
    base = fedora_base(factory, tmp_path / "bases")
    factory.elf(base / "usr/lib64/libextra.so.3", Library("libextra.so.3"))
    (base / "usr/lib64/libextra.so").symlink_to("libextra.so.3")
    image = tmp_path / "base.erofs"
    command.run(["mkfs.erofs", "-b", "4096", "-T0", "-U", "00000000-0000-0000-0000-000000000001",
                 image, base])
    from_dir = view.index(base)
    from_image = view.index(image)
    again = view.index(image)  # second time: from index.json
    assert (view.image_cache(image) / "index.json").exists()
    for tree in (from_image, again):
        assert {p: (n.kind, n.mode, n.target) for p, n in tree.nodes.items()} == {
            p: (n.kind, n.mode, n.target) for p, n in from_dir.nodes.items()}
        assert tree.sonames() == from_dir.sonames()
    assert from_dir.sonames()["/usr/lib64/libextra.so.3"] == "libextra.so.3"
    assert from_dir.nodes["/usr/lib64/libextra.so"].target == "libextra.so.3"
    # the index is a typed record: one that does not match its schema is made again
    index_json = view.image_cache(image) / "index.json"
    jsonio.validate(jsonio.read(index_json), view.INDEX_SCHEMA)
    index_json.write_text('{"version": 1, "nodes": {}}\n')
    rebuilt = view.index(image)
    assert rebuilt.nodes.keys() == from_dir.nodes.keys()
    jsonio.validate(jsonio.read(index_json), view.INDEX_SCHEMA)
    cache_dir = View([Layer("base", base, "base")]).ldcache()
    cache_img = View([view.layer(image, "base")]).ldcache()
    assert cache_dir is not None and cache_img == cache_dir
    assert cache_dir.format == "new"
    assert cache_dir.lookup("libc.so.6") == "/usr/lib64/libc.so.6"


def test_merge_order_and_symlink_resolution(tmp_path: Path) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    for d in ("usr/lib64", "opt/dir/sub", "etc"):
        (low / d).mkdir(parents=True)
    (low / "usr/lib64/a").write_text("low")
    (low / "opt/dir/sub/x").write_text("x")
    (low / "lib64").symlink_to("usr/lib64")
    (low / "abs").symlink_to("/usr/lib64/a")
    (low / "loop1").symlink_to("loop2")
    (low / "loop2").symlink_to("/loop1")
    (high / "usr/lib64").mkdir(parents=True)
    (high / "usr/lib64/a").write_text("high")
    (high / "usr/lib64/b").write_text("b")
    (high / "opt").mkdir()
    (high / "opt/dir").write_text("a file hides the lower directory")
    merged = View([Layer("low", low, "base"), Layer("high", high, "deps")])
    assert merged.lookup("/usr/lib64/a").layer == "high"  # the last layer wins
    assert merged.lookup("/usr/lib64/b") is not None  # directories merge
    assert merged.lookup("/opt/dir").kind == "file"
    assert merged.lookup("/opt/dir/sub/x") is None
    assert merged.resolve("/lib64/a").path == "/usr/lib64/a"  # relative link
    found = merged.resolve("/abs")  # absolute link re-rooted in the view
    assert found.path == "/usr/lib64/a" and found.node is not None
    assert found.node.source == high / "usr/lib64/a"
    # ".." applies to the link's target (/usr/lib64), as in the kernel
    assert merged.resolve("/lib64/../lib64/b").path == "/usr/lib64/b"
    assert merged.resolve("/lib64/../etc").path == "/usr/etc"
    assert merged.resolve("/../../usr/lib64/b").path == "/usr/lib64/b"
    loop = merged.resolve("/loop1/x")
    assert loop.node is None and loop.error and "symbolic links" in loop.error
    assert merged.resolve("/usr/lib64/missing").node is None


def test_ldcache_hwcaps_entries_and_old_format(tmp_path: Path, factory: Factory) -> None:
    root = tmp_path / "root"
    factory.elf(root / "usr/lib64/libq.so.1", Library("libq.so.1"))
    factory.elf(root / "usr/lib64/glibc-hwcaps/x86-64-v3/libq.so.1", Library("libq.so.1"))
    (root / "etc").mkdir()
    command.run(["ldconfig", "-X", "-r", root, "/usr/lib64"])
    cache = ldcache.read(root / "etc/ld.so.cache")
    assert {(e.path, e.hwcaps) for e in cache.entries if e.soname == "libq.so.1"} == {
        ("/usr/lib64/libq.so.1", None),
        ("/usr/lib64/glibc-hwcaps/x86-64-v3/libq.so.1", "x86-64-v3")}
    assert cache.lookup("libq.so.1", ("x86-64-v3",)) == (
        "/usr/lib64/glibc-hwcaps/x86-64-v3/libq.so.1")
    assert cache.lookup("libq.so.1", ()) == "/usr/lib64/libq.so.1"
    # the old format (ld.so-1.7.0): entries, then strings relative to their end
    strings = b"libold.so.1\0/lib64/libold.so.1\0"
    old = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + struct.pack("<iII", 0x303, 0, 12) + strings
    parsed = ldcache.parse(old)
    assert parsed.format == "old" and parsed.lookup("libold.so.1") == "/lib64/libold.so.1"
    assert os.path.getsize(root / "etc/ld.so.cache") > 0


def test_image_layer_costs_nothing_on_a_rebuild(factory: Factory, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A base image is hashed, extracted and walked once: later runs take its digest from
    the stat-keyed memo and its index from index.json; a changed image is hashed again."""
    monkeypatch.setenv("FEXSTACK_CACHE", str(tmp_path / "cache"))
    base = fedora_base(factory, tmp_path / "bases")
    image = tmp_path / "base.erofs"
    command.run(["mkfs.erofs", "-b", "4096", "-T0", "-U",
                 "00000000-0000-0000-0000-000000000001", image, base])
    first = view.layer(image, "base")
    walked = Tree.from_dir(first.root, "base")
    assert (first.root.parent / "index.json").is_file()
    assert (tmp_path / "cache/views" / view.DIGESTS).is_file()

    def refuse(*_: object) -> None:
        raise AssertionError("hashed or walked again")

    view._SHA_MEMO.clear()  # as in a new process
    with monkeypatch.context() as mp:
        mp.setattr(digest, "sha256_file", refuse)
        mp.setattr(view, "_walk", refuse)
        again = view.layer(image, "base")
        indexed = Tree.from_dir(again.root, "base")
    assert again.root == first.root
    assert {p: (n.kind, n.mode, n.target, n.source) for p, n in indexed.nodes.items()} == {
        p: (n.kind, n.mode, n.target, n.source) for p, n in walked.nodes.items()}
    assert indexed.sonames() == walked.sonames()
    os.utime(image, ns=(1, 1))  # same bytes, another mtime: hashed again, same folder
    view._SHA_MEMO.clear()
    hashed: list[Path] = []
    real = digest.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    with monkeypatch.context() as mp:
        mp.setattr(digest, "sha256_file", counting)
        assert view.layer(image, "base").root == first.root
    assert hashed == [image]
