"""build_image and the read-back, with the real mkfs.erofs and fsck.erofs."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fexstack import command
from fexstack.errors import ImageError
from overlays import readback, treescan, validator
from overlays.image import build_image, image_uuid, mkfs_flags

SEED = "sha256:0123abcd demo"
BIG_SIZE = 3 * 1024 * 1024


def big_bytes(size: int = BIG_SIZE) -> bytes:
    """Half random bytes, half random words: incompressible and compressible clusters."""
    rng = random.Random(7)
    half = size // 2
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(400)]
    text = b" ".join(rng.choice(words) for _ in range(half // 5))
    return rng.randbytes(half) + text[: size - half].ljust(size - half, b".")


def make_tree(root: Path, *, reverse: bool = False, hardlink: bool = True) -> Path:
    """A small staged tree. ``reverse`` creates everything in the opposite order."""
    files: list[tuple[str, bytes, int]] = [
        ("usr/lib64/libfoo.so.1.2", b"\x7fELF fake library\n" * 50, 0o755),
        ("usr/lib64/big.bin", big_bytes(), 0o644),
        ("usr/libexec/foo/helper", b"#!/bin/sh\necho helper\n", 0o755),
        ("usr/libexec/foo/suid-helper", b"#!/bin/sh\nid\n", 0o4755),
        ("usr/share/doc/foo/empty", b"", 0o644),
        ("usr/share/doc/foo/README", b"read me\n", 0o644),
        ("etc/foo.conf", b"key = value\n", 0o640),
    ]
    links = [
        ("usr/lib64/libfoo.so.1", "libfoo.so.1.2"),
        ("usr/lib64/libdangling.so", "/usr/lib64/not-there.so"),
    ]
    dirs = ["usr/lib64", "usr/libexec/foo", "usr/share/doc/foo", "etc", "var/lib/foo"]
    if reverse:
        files.reverse()
        links.reverse()
        dirs.reverse()
    root.mkdir(parents=True)
    root.chmod(0o755)
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for rel, data, mode in files:
        (root / rel).write_bytes(data)
        (root / rel).chmod(mode)
    for rel, target in links:
        (root / rel).symlink_to(target)
    readme = root / "usr/share/doc/foo/README"
    copy = root / "usr/share/doc/foo/README.copy"
    if hardlink:
        os.link(readme, copy)
    else:
        shutil.copy2(readme, copy)
    (root / "var/lib/foo").chmod(0o700)
    return root


def set_times(root: Path, when: float) -> None:
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(folder, name), (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_same_content_gives_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_tree(tmp_path / "one" / "staging")
    b = make_tree(tmp_path / "elsewhere" / "deeper" / "tree", reverse=True, hardlink=False)
    set_times(a, 1_000_000_000)
    set_times(b, time.time() - 12345)
    first = build_image(a, tmp_path / "out1" / "demo.erofs", uuid_seed=SEED)
    # Another "day": a different SOURCE_DATE_EPOCH must not matter either.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    second = build_image(b, tmp_path / "out2" / "demo.erofs", uuid_seed=SEED)
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.size == first.path.stat().st_size
    assert first.block_size == 4096
    assert first.compression == "lz4hc"
    assert first.erofs_utils_version[0].isdigit()
    assert first.uuid == image_uuid(SEED)
    assert first.mkfs_flags == mkfs_flags("lz4hc", SEED)
    assert "-b4096" in first.mkfs_flags and "-T0" in first.mkfs_flags
    assert not any(str(tmp_path) in flag for flag in first.mkfs_flags)
    assert first.mkfs_argv[-2:] == ("IMAGE", "TREE")
    assert first.entries["/usr/libexec/foo/suid-helper"].mode == 0o4755
    assert first.entries["/var/lib/foo"].mode == 0o700
    assert leftovers(tmp_path / "out1") == []
    # Compressed: the repetitive half of big.bin shrinks.
    assert first.size < BIG_SIZE


def test_image_holds_no_host_times(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    info = build_image(tree, tmp_path / "x.erofs", uuid_seed=SEED, compression="none")
    extracted = tmp_path / "x"
    command.run(["fsck.erofs", f"--extract={extracted}", info.path])
    for folder, dirnames, filenames in os.walk(extracted):
        for name in dirnames + filenames:
            assert os.lstat(Path(folder, name)).st_mtime == 0, name
    assert validator.read_superblock(info.path).uuid == image_uuid(SEED)


def test_inputs_that_must_change_the_bytes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    base = build_image(tree, tmp_path / "a.erofs", uuid_seed=SEED)
    other_seed = build_image(tree, tmp_path / "b.erofs", uuid_seed=SEED + "x")
    uncompressed = build_image(tree, tmp_path / "c.erofs", uuid_seed=SEED, compression="none")
    lz4 = build_image(tree, tmp_path / "d.erofs", uuid_seed=SEED, compression="lz4")
    (tree / "etc/foo.conf").chmod(0o644)
    other_mode = build_image(tree, tmp_path / "e.erofs", uuid_seed=SEED)
    digests = {base.sha256, other_seed.sha256, uncompressed.sha256, lz4.sha256, other_mode.sha256}
    assert len(digests) == 5
    assert uncompressed.size > base.size


def test_readback_failure_leaves_no_image(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    out = tmp_path / "out" / "demo.erofs"

    def tamper(_tmp: Path) -> None:
        (tree / "usr/lib64/libfoo.so.1.2").write_bytes(b"\x7fELF changed\n")

    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed=SEED, before_readback=tamper)
    assert "/usr/lib64/libfoo.so.1.2: size" in err.value.message
    assert not out.exists()
    assert leftovers(out.parent) == []


def test_readback_failure_keeps_the_previous_image(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    out = tmp_path / "demo.erofs"
    good = build_image(tree, out, uuid_seed=SEED)

    def tamper(_tmp: Path) -> None:
        (tree / "usr/share/doc/foo/new-file").write_bytes(b"appeared late\n")

    (tree / "etc/foo.conf").write_bytes(b"key = other\n")  # same size, other content
    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed=SEED, before_readback=tamper)
    assert "/usr/share/doc/foo/new-file: in the tree, missing from the image" in err.value.message
    assert validator.validate_image(out).sha256 == good.sha256
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("method", ["mount", "extract"])
def test_verify_image_reports_each_kind_of_difference(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if method == "mount" and os.geteuid() != 0:
        pytest.skip("the kernel read-back needs root")
    monkeypatch.setenv(readback.METHOD_ENV, method)
    tree = make_tree(tmp_path / "t")
    info = build_image(tree, tmp_path / "demo.erofs", uuid_seed=SEED)
    readback.verify_image(info.path, tree)  # unchanged: passes
    (tree / "etc/foo.conf").write_bytes(b"key = VALUE\n")
    (tree / "usr/libexec/foo/helper").chmod(0o700)
    (tree / "usr/lib64/libfoo.so.1").unlink()
    (tree / "usr/lib64/libfoo.so.1").symlink_to("libfoo.so.1.3")
    (tree / "usr/share/doc/foo/empty").unlink()
    with pytest.raises(ImageError) as err:
        readback.verify_image(info.path, tree)
    text = err.value.message
    assert "/etc/foo.conf: sha256 is" in text
    assert "/usr/libexec/foo/helper: mode is 0755 in the image, 0700 in the tree" in text
    assert "/usr/lib64/libfoo.so.1: target is libfoo.so.1.2 in the image" in text
    assert "/usr/share/doc/foo/empty: in the image, not in the tree" in text
    assert leftovers(tmp_path) == []


def test_killed_mkfs_leaves_no_image(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    tree.chmod(0o755)
    rng = random.Random(1)
    for i in range(6):
        (tree / f"blob{i}").write_bytes(rng.randbytes(8 * 1024 * 1024))
    out = tmp_path / "out" / "big.erofs"
    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed=SEED, timeout=0.05)
    assert "mkfs.erofs failed" in err.value.message
    assert "did not finish within 0.05 seconds" in err.value.message
    assert not out.exists()
    assert leftovers(out.parent) == []
    # No mkfs.erofs left running on our output.
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out.parent) not in procs


def test_mkfs_out_of_space_leaves_no_image(tmp_path: Path, privileged: None) -> None:
    tree = make_tree(tmp_path / "t")
    small = tmp_path / "small"
    small.mkdir()
    command.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", small])
    try:
        out = small / "demo.erofs"
        with pytest.raises(ImageError):
            build_image(tree, out, uuid_seed=SEED, compression="none")
        assert not out.exists()
        assert leftovers(small) == []
    finally:
        command.run(["umount", small])


def test_compat_symlink_image(tmp_path: Path) -> None:
    tree = tmp_path / "compat"
    (tree / "lib64").mkdir(parents=True)
    tree.chmod(0o755)
    target = "/usr/lib64/ld-linux-x86-64.so.2"
    (tree / "lib64/ld-linux-x86-64.so.2").symlink_to(target)
    info = build_image(tree, tmp_path / "compat.erofs", uuid_seed="compat base-sha")
    validator.validate_image(info.path, expected_sha256=info.sha256)
    listing = readback.list_image(info.path)
    assert sorted(listing) == ["/", "/lib64", "/lib64/ld-linux-x86-64.so.2"]
    link = listing["/lib64/ld-linux-x86-64.so.2"]
    assert (link.kind, link.target) == ("symlink", target)

    def retarget(_tmp: Path) -> None:
        (tree / "lib64/ld-linux-x86-64.so.2").unlink()
        (tree / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib64/elsewhere.so")

    out = tmp_path / "compat2.erofs"
    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed="compat base-sha", before_readback=retarget)
    assert f"target is {target} in the image, /lib64/elsewhere.so in the tree" in err.value.message
    assert not out.exists()


def test_refuses_bad_inputs(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    out = tmp_path / "x.erofs"
    with pytest.raises(ImageError, match="compression 'zstd'"):
        build_image(tree, out, uuid_seed=SEED, compression="zstd")
    with pytest.raises(ImageError, match="seed is empty"):
        build_image(tree, out, uuid_seed="")
    tree.chmod(0o700)
    with pytest.raises(ImageError, match="mode 0700"):
        build_image(tree, out, uuid_seed=SEED)
    with pytest.raises(ImageError, match="no staging tree"):
        build_image(tmp_path / "missing", out, uuid_seed=SEED)
    assert not out.exists()


def test_readback_catches_a_same_size_change_with_the_old_mtime(tmp_path: Path) -> None:
    # The tree is hashed while mkfs.erofs runs; a change after that (same size, mtime put
    # back) must still be seen by the re-scan after mkfs.
    tree = make_tree(tmp_path / "t")
    conf = tree / "etc/foo.conf"
    old = conf.stat()

    def tamper(_tmp: Path) -> None:
        conf.write_bytes(b"key = VALUE\n")
        os.utime(conf, ns=(old.st_atime_ns, old.st_mtime_ns))

    out = tmp_path / "demo.erofs"
    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed=SEED, before_readback=tamper)
    assert "/etc/foo.conf: sha256 is" in err.value.message
    assert not out.exists()


def damage_at(marker: bytes) -> Callable[[Path], None]:
    def damage(tmp: Path) -> None:
        data = bytearray(tmp.read_bytes())
        at = data.find(marker)
        assert at > 0 and data.find(marker, at + 1) < 0  # stored once
        data[at] ^= 0x20  # same size
        tmp.write_bytes(bytes(data))

    return damage


def test_readback_catches_a_damaged_file_in_the_image(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    out = tmp_path / "demo.erofs"
    # big.bin's random half is stored in data blocks, which no checksum covers.
    damage = damage_at(big_bytes()[100_000:100_064])
    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed=SEED, compression="none", before_readback=damage)
    assert "/usr/lib64/big.bin: sha256 is" in err.value.message
    assert not out.exists()
    # foo.conf's bytes are inline in the first block, under the superblock checksum:
    # fsck.erofs then exits 0 but extracts nothing.
    with pytest.raises(ImageError) as err:
        build_image(
            tree,
            out,
            uuid_seed=SEED,
            compression="none",
            before_readback=damage_at(b"key = value\n"),
        )
    assert "fsck.erofs extracted nothing" in err.value.message
    assert "checksum" in err.value.message
    assert not out.exists()
    assert leftovers(tmp_path) == []


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files treescan reads to hash them, in order."""
    read: list[str] = []
    real = treescan.hash_file

    def counting(full: str, size: int) -> str:
        read.append(full)
        return real(full, size)

    monkeypatch.setattr(treescan, "hash_file", counting)
    return read


def test_rescan_rehashes_only_changed_files(tmp_path: Path, hashed: list[str]) -> None:
    tree = make_tree(tmp_path / "t")
    set_times(tree, 1_000_000_000)
    # ctimes are "now": pretend the first scan began well after them.
    first = treescan.scan(tree)
    first = dataclasses.replace(first, started_ns=first.started_ns + 10 * treescan.RACY_NS)
    hashed.clear()
    again = treescan.scan(tree, previous=first)
    assert hashed == [] and again.entries == first.entries
    (tree / "etc/foo.conf").write_bytes(b"key = VALUE\n")
    again = treescan.scan(tree, previous=first)
    assert hashed == [str(tree / "etc/foo.conf")]
    assert again.entries["/etc/foo.conf"].sha256 != first.entries["/etc/foo.conf"].sha256
    # Without the margin (ctime close to the first scan's start) everything is re-read.
    recent = treescan.scan(tree)
    hashed.clear()
    treescan.scan(tree, previous=recent)
    assert len(hashed) == 8


def meant_digests(tree: Path) -> dict[str, tuple[str, int]]:
    """(sha256, size) of every regular file of ``tree``, as the stage step records them."""
    return {
        path: (entry.sha256, entry.size)
        for path, entry in treescan.scan(tree).entries.items()
        if entry.sha256 is not None
    }


def test_known_digests_are_not_read_again(tmp_path: Path, hashed: list[str]) -> None:
    tree = make_tree(tmp_path / "t")
    known = meant_digests(tree)
    set_times(tree, 0)  # what the stage step leaves: every mtime 0
    hashed.clear()
    listing = treescan.scan(tree, known=known)
    assert hashed == []
    assert {p: (e.sha256, e.size) for p, e in listing.entries.items() if e.sha256} == known
    # A file written since (its mtime is no longer 0) or of another size is read.
    (tree / "etc/foo.conf").write_bytes(b"key = VALUE\n")
    (tree / "usr/share/doc/foo/README").write_bytes(b"read me again\n")
    os.utime(tree / "usr/share/doc/foo/README", ns=(0, 0))
    listing = treescan.scan(tree, known=known)
    assert sorted(hashed) == [
        str(tree / "etc/foo.conf"),
        str(tree / "usr/share/doc/foo/README"),
        str(tree / "usr/share/doc/foo/README.copy"),  # the same inode
    ]
    assert listing.entries["/etc/foo.conf"].sha256 == hashlib.sha256(b"key = VALUE\n").hexdigest()


def test_image_is_compared_with_the_known_digests(tmp_path: Path) -> None:
    # A staged file replaced after the stage step (same size, mtime put back to 0) holds
    # bytes no package meant: the image would hold them too, and the read-back says so.
    tree = make_tree(tmp_path / "t")
    known = meant_digests(tree)
    set_times(tree, 0)
    out = tmp_path / "demo.erofs"
    info = build_image(tree, out, uuid_seed=SEED, known=known)
    assert info.entries["/etc/foo.conf"].sha256 == known["/etc/foo.conf"][0]
    conf = tree / "etc/foo.conf"
    replaced = tree / "etc/.foo.conf.new"
    replaced.write_bytes(b"key = VALUE\n")
    replaced.chmod(0o640)
    os.utime(replaced, ns=(0, 0))
    os.replace(replaced, conf)
    with pytest.raises(ImageError) as err:
        build_image(tree, out, uuid_seed=SEED, known=known)
    assert "/etc/foo.conf: sha256 is" in err.value.message
    assert validator.validate_image(out).sha256 == info.sha256  # the good image stays
    # Without the stage step's digests the image is compared with the tree as it is.
    build_image(tree, tmp_path / "other.erofs", uuid_seed=SEED)
    # With them, the tree is still listed after mkfs.erofs: what changed meanwhile shows.
    known = meant_digests(tree)

    def tamper(_tmp: Path) -> None:
        (tree / "usr/share/doc/foo/late").write_bytes(b"appeared late\n")
        (tree / "usr/libexec/foo/helper").chmod(0o700)

    with pytest.raises(ImageError) as err:
        build_image(tree, tmp_path / "third.erofs", uuid_seed=SEED, known=known,
                    before_readback=tamper)
    assert "/usr/share/doc/foo/late: in the tree, missing from the image" in err.value.message
    assert "/usr/libexec/foo/helper: mode is 0755 in the image, 0700 in the tree" in (
        err.value.message)


def test_parallel_hashing_matches_one_thread(tmp_path: Path) -> None:
    tree = tmp_path / "many"
    tree.mkdir()
    rng = random.Random(3)
    for i in range(300):
        (tree / f"f{i}").write_bytes(rng.randbytes(rng.randint(0, 70_000)))
    (tree / "big").write_bytes(big_bytes(treescan.SMALL_FILE + 5))
    one = treescan.scan(tree, jobs=1).entries
    assert treescan.scan(tree, jobs=4).entries == one
    assert one["/big"].sha256 == hashlib.sha256(big_bytes(treescan.SMALL_FILE + 5)).hexdigest()
    assert one["/f7"].sha256 == hashlib.sha256((tree / "f7").read_bytes()).hexdigest()


def test_hashing_in_forked_processes_matches_one_thread(tmp_path: Path) -> None:
    tree = tmp_path / "many"
    tree.mkdir()
    rng = random.Random(4)
    for i in range(400):  # several batches of HASH_BATCH files: the workers start
        (tree / f"d{i % 7}").mkdir(exist_ok=True)
        (tree / f"d{i % 7}" / f"f{i}").write_bytes(rng.randbytes(rng.randint(0, 20_000)))
    (tree / "big").write_bytes(big_bytes(treescan.HASH_BATCH_BYTES + 5))  # a batch by itself
    (tree / "link").symlink_to("d1/f1")
    one = treescan.scan(tree, jobs=1).entries
    assert treescan.scan(tree, jobs=2, processes=True).entries == one
    assert treescan.scan(tree, jobs=2).entries == one
    big = big_bytes(treescan.HASH_BATCH_BYTES + 5)
    assert one["/big"].sha256 == hashlib.sha256(big).hexdigest()
    assert one["/link"].target == "d1/f1"


def test_a_hashing_process_names_the_file_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    tree = tmp_path / "many"
    tree.mkdir()
    for i in range(300):
        (tree / f"f{i:03}").write_bytes(b"x" * i)
    real = treescan.hash_file

    def refusing(full: str, size: int) -> str:  # runs in the forked workers
        if full.endswith("/f150"):
            raise PermissionError(13, "Permission denied")
        return real(full, size)

    monkeypatch.setattr(treescan, "hash_file", refusing)
    with pytest.raises(ImageError) as err:
        treescan.scan(tree, jobs=2, processes=True)
    assert err.value.message == f"{tree}/f150: cannot read it to hash it: Permission denied"
    assert err.value.hint == "the tree changed while it was read; re-run the step"

    def dying(full: str, size: int) -> str:
        os._exit(3)

    monkeypatch.setattr(treescan, "hash_file", dying)
    with pytest.raises(ImageError, match="a process hashing files died"):
        treescan.scan(tree, jobs=2, processes=True)
    assert multiprocessing.active_children() == []


def test_a_failed_walk_stops_the_hashing_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    tree = tmp_path / "many"
    (tree / "a" / "z").mkdir(parents=True)
    for i in range(300):
        (tree / "a" / f"f{i}").write_bytes(b"y" * i)
    (tree / "a" / "z" / os.fsdecode(b"bad\xff")).write_bytes(b"")  # met after a/'s files
    started: list[object] = []
    real = treescan._Hashing._start

    def start(self: treescan._Hashing) -> object:
        started.append(real(self))
        return started[-1]

    monkeypatch.setattr(treescan._Hashing, "_start", start)
    with pytest.raises(ImageError, match="file name is not valid UTF-8"):
        treescan.scan(tree, jobs=2, processes=True)
    assert len(started) == 1  # the workers were busy when the walk failed
    assert multiprocessing.active_children() == []


def test_the_listing_child_lists_a_tree(tmp_path: Path) -> None:
    from overlays import imagemount

    tree = make_tree(tmp_path / "t")
    assert imagemount.list_in_child(tree, jobs=2) == treescan.list_tree(tree)
    gone = tmp_path / "gone"
    with pytest.raises(ImageError) as err:
        imagemount.list_in_child(gone)
    assert err.value.message == f"{gone}: cannot list the extracted image: {gone}: not a directory"


def mounted_anywhere(needle: str) -> list[str]:
    """Lines of any process's mountinfo naming ``needle`` (every mount namespace)."""
    found: list[str] = []
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            text = info.read_text()
        except OSError:  # the process ended meanwhile
            continue
        found += [line for line in text.splitlines() if needle in line]
    return found


def test_the_kernel_readback_mount_ends_soon_after(tmp_path: Path, privileged: None) -> None:
    from overlays import imagemount

    tree = make_tree(tmp_path / "t")
    info = build_image(tree, tmp_path / "demo.erofs", uuid_seed=SEED)
    assert imagemount.list_mounted(info.path) == treescan.list_tree(tree)
    # The answer came while a copy of the child still held the mount; it lets go at once.
    deadline = time.monotonic() + 10
    while mounted_anywhere(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounted_anywhere(str(tmp_path)) == []


def mounts_under(folder: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if str(folder) in line]


def test_mount_and_extract_readbacks_agree(tmp_path: Path, privileged: None) -> None:
    tree = make_tree(tmp_path / "t")
    info = build_image(tree, tmp_path / "out" / "demo.erofs", uuid_seed=SEED)
    mounted = readback.list_image(info.path, method="mount")
    assert mounted == readback.list_image(info.path, method="extract")
    assert mounted == treescan.list_tree(tree)
    assert mounted["/usr/libexec/foo/suid-helper"].mode == 0o4755
    assert mounted["/usr/lib64/big.bin"].sha256 == hashlib.sha256(big_bytes()).hexdigest()
    # The mount lived in the child's namespace only; its mount point is gone too.
    assert mounts_under(tmp_path) == []
    assert leftovers(tmp_path / "out") == []


def test_mount_readback_of_a_damaged_image_fails(tmp_path: Path, privileged: None) -> None:
    tree = make_tree(tmp_path / "t")
    info = build_image(tree, tmp_path / "demo.erofs", uuid_seed=SEED, compression="none")
    data = bytearray(info.path.read_bytes())
    at = data.find(big_bytes()[:4096])  # the first block of big.bin, stored as it is
    assert at > 0
    data[at + 100 : at + 108] = b"DAMAGED!"
    info.path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as err:
        readback.verify_image(info.path, tree)
    assert "/usr/lib64/big.bin: sha256 is" in err.value.message
    assert mounts_under(tmp_path) == []
    # A superblock the kernel refuses: the read-back falls back to fsck.erofs, which says why.
    data[1024:1028] = b"\0\0\0\0"  # the EROFS magic
    info.path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as err:
        readback.list_image(info.path)
    assert "fsck.erofs" in err.value.message
    assert leftovers(tmp_path) == []


def test_image_on_tmpfs_is_extracted_not_mounted(
    tmp_path: Path, privileged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overlays import imagemount

    tree = make_tree(tmp_path / "t")
    ram = tmp_path / "ram"
    ram.mkdir()
    command.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", ram])
    try:
        info = build_image(tree, ram / "demo.erofs", uuid_seed=SEED)
        # No loop device: the kernel mounts only a file it can read pages of.
        with pytest.raises(imagemount.Unavailable, match="Block device required"):
            readback.list_image(info.path, method="mount")
        seen = extraction_dirs(monkeypatch)
        assert readback.list_image(info.path) == treescan.list_tree(tree)
        assert len(seen) == 1
        assert leftovers(ram) == []
    finally:
        command.run(["umount", ram])


def test_readback_without_root_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from overlays import imagemount

    tree = make_tree(tmp_path / "t")
    info = build_image(tree, tmp_path / "demo.erofs", uuid_seed=SEED)
    monkeypatch.setattr(imagemount.os, "geteuid", lambda: 1000)
    seen = extraction_dirs(monkeypatch)
    assert readback.list_image(info.path) == treescan.list_tree(tree)
    assert len(seen) == 1
    with pytest.raises(imagemount.Unavailable, match="needs root"):
        readback.list_image(info.path, method="mount")
    monkeypatch.setenv(readback.METHOD_ENV, "kernel")
    with pytest.raises(ImageError) as err:
        readback.list_image(info.path)
    assert "FEXSTACK_READBACK='kernel' is not one of auto, mount, extract" in err.value.message


def extraction_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = readback.extract

    def recording(image: Path, dest: Path) -> None:
        seen.append(dest)
        real(image, dest)

    monkeypatch.setattr(readback, "extract", recording)
    return seen


def test_readback_uses_a_tmpfs_with_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ram = tmp_path / "ram"
    ram.mkdir()
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv(readback.METHOD_ENV, "extract")
    monkeypatch.setattr(readback, "TMPFS_DIRS", (str(ram),))
    monkeypatch.setattr(readback, "TMPFS_RESERVE", 0)
    seen = extraction_dirs(monkeypatch)
    tree = make_tree(tmp_path / "t")
    build_image(tree, tmp_path / "out" / "demo.erofs", uuid_seed=SEED)
    assert len(seen) == 1 and seen[0].parent.parent == ram
    assert seen[0].parent.name.startswith(readback.SCRATCH_PREFIX)
    assert list(ram.iterdir()) == []  # scratch and lock removed
    # No room: beside the image, as before.
    monkeypatch.setattr(readback, "TMPFS_RESERVE", 1 << 62)
    build_image(tree, tmp_path / "out" / "demo.erofs", uuid_seed=SEED)
    assert seen[1].parent.parent == tmp_path / "out"
    assert leftovers(tmp_path / "out") == []


def test_abandoned_tmpfs_scratch_is_swept(tmp_path: Path) -> None:
    ram = tmp_path / "ram"
    ram.mkdir()
    dead = ram / f"{readback.SCRATCH_PREFIX}dead"
    (dead / "root/usr").mkdir(parents=True)
    (dead / "root/usr").chmod(0o555)
    dead.with_name(dead.name + ".lock").touch()
    alive = ram / f"{readback.SCRATCH_PREFIX}alive"
    (alive / "root").mkdir(parents=True)
    alive.with_name(alive.name + ".lock").touch()
    old = time.time() - 2 * readback.SWEEP_AFTER
    for lock in ram.glob("*.lock"):
        os.utime(lock, (old, old))
    with open(alive.with_name(alive.name + ".lock"), "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with readback._tmpfs_scratch(ram) as tmp:
            assert tmp.is_dir()
            assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
            assert alive.is_dir()
    assert sorted(p.name for p in ram.iterdir()) == [alive.name, alive.name + ".lock"]
