"""The image validator the runner calls before launching, on real mkfs.erofs images."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from fexstack import command
from fexstack.errors import ImageError, ToolError
from overlays import manifest, validator
from overlays.image import ImageInfo, build_image
from overlays.manifest import validate_against_manifest
from overlays.validator import validate_image
from tests.test_image import SEED, make_tree
from tests.test_manifest import bare_content, bare_manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ImageInfo]:
    root = tmp_path_factory.mktemp("validator")
    tree = make_tree(root / "tree")
    return tree, build_image(tree, root / "good.erofs", uuid_seed=bare_content().digest)


@pytest.fixture
def good(built: tuple[Path, ImageInfo], tmp_path: Path) -> Path:
    """A private copy of the good image (tests damage it)."""
    copy = tmp_path / "copy.erofs"
    shutil.copyfile(built[1].path, copy)
    return copy


def test_accepts_a_good_image(built: tuple[Path, ImageInfo]) -> None:
    info = built[1]
    checked = validate_image(info.path, expected_sha256=info.sha256)
    assert checked.sha256 == info.sha256
    assert checked.size == info.size == os.path.getsize(info.path)
    assert checked.block_size == 4096
    assert checked.blocks * 4096 == info.size
    assert checked.uuid == info.uuid
    # Upper-case hex from elsewhere is the same digest.
    assert validate_image(info.path, expected_sha256=info.sha256.upper()).sha256 == info.sha256


def make_16k_image(tree: Path, good: Path, image: Path) -> None:
    """An image with 16K blocks, as mkfs.erofs makes by default on Asahi (16K pages).

    mkfs.erofs refuses blocks larger than the host's page size, so on a 4K-page host
    the good image's superblock is rewritten to say 16K blocks (checksum recomputed).
    """
    try:
        command.run(["mkfs.erofs", "-b16384", "-zlz4hc", "--quiet", image, tree])
        return
    except ToolError as exc:
        assert "invalid block size" in exc.message
    data = bytearray(good.read_bytes())
    data[1024 + 12] = 14
    struct.pack_into("<I", data, 1024 + 4, 0)
    data += b"\0" * (16384 - len(data) % 16384)
    struct.pack_into("<I", data, 1024 + 4, validator.crc32c(bytes(data[1024:16384])))
    image.write_bytes(bytes(data))


def test_rejects_16k_blocks(built: tuple[Path, ImageInfo], good: Path, tmp_path: Path) -> None:
    image = tmp_path / "16k.erofs"
    make_16k_image(built[0], good, image)
    with pytest.raises(ImageError) as err:
        validate_image(image)
    assert str(image) in err.value.message
    assert "16384" in err.value.message and "blkszbits 14" in err.value.message
    assert err.value.hint is not None and "-b 4096" in err.value.hint


def test_rejects_a_truncated_image(good: Path) -> None:
    size = good.stat().st_size
    os.truncate(good, size - 4096)
    with pytest.raises(ImageError, match="truncated") as err:
        validate_image(good)
    assert str(good) in err.value.message
    os.truncate(good, 1100)
    with pytest.raises(ImageError, match="too short"):
        validate_image(good)


def test_rejects_a_hash_mismatch(good: Path, built: tuple[Path, ImageInfo]) -> None:
    with pytest.raises(ImageError, match="its manifest says"):
        validate_image(good, expected_sha256="0" * 64)
    # One changed byte in the data area: superblock fine, hash not.
    data = bytearray(good.read_bytes())
    data[-5000] ^= 0xFF
    good.write_bytes(bytes(data))
    validate_image(good)  # structurally still fine
    with pytest.raises(ImageError, match="sha256 is"):
        validate_image(good, expected_sha256=built[1].sha256)


def test_rejects_a_damaged_superblock(good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[1024 + 64] ^= 0x01  # a byte of the volume name, covered by the checksum
    good.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="checksum"):
        validate_image(good)


def test_rejects_what_is_not_erofs(tmp_path: Path) -> None:
    junk = tmp_path / "junk.erofs"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(ImageError, match="not an EROFS image"):
        validate_image(junk)
    with pytest.raises(ImageError, match="no image file"):
        validate_image(tmp_path / "missing.erofs")


def test_validate_against_manifest(built: tuple[Path, ImageInfo], good: Path) -> None:
    tree, info = built
    doc = bare_manifest(info, "demo")
    path = good.parent / "demo.manifest.json"
    manifest.write_manifest(path, doc)
    assert validate_against_manifest(good, path).sha256 == info.sha256
    other = good.parent / "other.erofs"
    build_image(tree, other, uuid_seed=SEED + " other")
    with pytest.raises(ImageError) as err:
        validate_against_manifest(other, path)
    assert str(other) in err.value.message


def test_crc32c_matches_the_standard_check_value() -> None:
    # The standard CRC-32C check value is for the finally inverted form.
    assert validator.crc32c(b"123456789") ^ 0xFFFFFFFF == 0xE3069283


def test_a_remembered_digest_never_replaces_the_manifest_check(
    good: Path, built: tuple[Path, ImageInfo]
) -> None:
    _, info = built
    stale = "0" * 64
    # Only recorded: the caller's digest function is used.
    assert validate_image(good, sha256_of=lambda _: stale).sha256 == stale
    # Checked against a manifest: always hashed afresh, whatever the caller remembers.
    assert validate_image(good, expected_sha256=info.sha256, sha256_of=lambda _: stale).sha256 \
        == info.sha256
    with pytest.raises(ImageError, match="its manifest says"):
        validate_image(good, expected_sha256=stale, sha256_of=lambda _: stale)
