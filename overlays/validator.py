"""Checks an EROFS image before it is handed to muvm.

What the muvm guest needs: the EROFS magic at offset 1024, 4096-byte blocks (the guest
kernel cannot mount the 16K blocks mkfs.erofs defaults to on Asahi), a superblock whose
checksum holds, no truncation (the block count the superblock claims fits in the file),
and, when a manifest exists, the exact bytes the manifest describes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fexstack.digest import sha256_file
from fexstack.errors import ImageError

MAGIC = 0xE0F5E1E2
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 128
BLOCK_SIZE = 4096
BLOCK_SIZE_BITS = 12
FEATURE_COMPAT_SB_CSUM = 0x1
FEATURE_INCOMPAT_48BIT = 0x80

REBUILD_HINT = "rebuild it with fexstack (doit overlay:<name>), which runs mkfs.erofs -b 4096"


@dataclass(frozen=True)
class Superblock:
    """The fields of an EROFS superblock that fexstack looks at."""

    magic: int
    checksum: int
    feature_compat: int
    blkszbits: int
    blocks: int
    feature_incompat: int
    uuid: str

    @property
    def block_size(self) -> int:
        return 1 << self.blkszbits


@dataclass(frozen=True)
class ValidatedImage:
    """An image that passed :func:`validate_image`."""

    path: Path
    sha256: str
    size: int
    block_size: int
    blocks: int
    uuid: str


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC32C as the kernel's ``crc32c(seed, ...)`` computes it (no final inversion)."""
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def parse_superblock(data: bytes) -> Superblock:
    """Parse the superblock from the first bytes of an image (at least 1152 of them)."""
    sb = data[SUPERBLOCK_OFFSET : SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE]
    if len(sb) < SUPERBLOCK_SIZE:
        raise ValueError("too short for an EROFS superblock")
    magic, checksum, compat, blkszbits, _extslots, blocks_hi = struct.unpack_from("<IIIBBH", sb, 0)
    (blocks_lo,) = struct.unpack_from("<I", sb, 36)
    (incompat,) = struct.unpack_from("<I", sb, 80)
    blocks = blocks_lo
    if incompat & FEATURE_INCOMPAT_48BIT:
        blocks |= blocks_hi << 32
    return Superblock(
        magic=magic,
        checksum=checksum,
        feature_compat=compat,
        blkszbits=blkszbits,
        blocks=blocks,
        feature_incompat=incompat,
        uuid=str(uuid.UUID(bytes=bytes(sb[48:64]))),
    )


def read_superblock(path: Path) -> Superblock:
    """The superblock of the image at ``path``; :class:`ImageError` if it has none."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(BLOCK_SIZE)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the image: {exc.strerror}", REBUILD_HINT) from exc
    try:
        sb = parse_superblock(head)
    except ValueError as exc:
        raise ImageError(
            f"{path}: {len(head)} bytes, too short to hold an EROFS superblock "
            f"(needs {SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE})",
            REBUILD_HINT,
        ) from exc
    if sb.magic != MAGIC:
        raise ImageError(
            f"{path}: not an EROFS image (magic at offset {SUPERBLOCK_OFFSET} is "
            f"0x{sb.magic:08X}, expected 0x{MAGIC:08X})",
            REBUILD_HINT,
        )
    if sb.blkszbits != BLOCK_SIZE_BITS:
        raise ImageError(
            f"{path}: EROFS block size is {1 << sb.blkszbits if sb.blkszbits < 64 else '?'} "
            f"bytes (blkszbits {sb.blkszbits}), the muvm guest needs {BLOCK_SIZE}",
            "rebuild with mkfs.erofs -b 4096; the muvm guest kernel cannot mount 16K blocks "
            "(fexstack's image step always passes -b 4096)",
        )
    if sb.feature_compat & FEATURE_COMPAT_SB_CSUM:
        block = bytearray(head)
        struct.pack_into("<I", block, SUPERBLOCK_OFFSET + 4, 0)
        if len(block) < BLOCK_SIZE or crc32c(bytes(block[SUPERBLOCK_OFFSET:])) != sb.checksum:
            raise ImageError(
                f"{path}: the EROFS superblock checksum does not match (the image is damaged)",
                REBUILD_HINT,
            )
    return sb


def validate_image(
    path: Path,
    *,
    expected_sha256: str | None = None,
    sha256_of: Callable[[Path], str] = sha256_file,
) -> ValidatedImage:
    """Check that ``path`` is an EROFS image the muvm guest can mount, untruncated.

    With ``expected_sha256`` (from the image's manifest) the bytes must match it too, and
    are always hashed afresh. ``sha256_of`` computes the digest otherwise: a caller that
    only records it (a system base of a gigabyte) may pass a remembered one.
    """
    if not path.is_file():
        raise ImageError(f"{path}: no image file", "build it with doit overlay:<name>")
    sb = read_superblock(path)
    size = path.stat().st_size
    if sb.blocks == 0 or sb.blocks * sb.block_size > size:
        raise ImageError(
            f"{path}: truncated: the superblock claims {sb.blocks} blocks of {sb.block_size} "
            f"bytes ({sb.blocks * sb.block_size} bytes) but the file has {size}",
            REBUILD_HINT,
        )
    digest = sha256_file(path) if expected_sha256 is not None else sha256_of(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ImageError(
            f"{path}: sha256 is {digest}, its manifest says {expected_sha256}",
            "the image changed after it was built, or the manifest belongs to another "
            "build; rebuild with doit overlay:<name>",
        )
    return ValidatedImage(
        path=path,
        sha256=digest,
        size=size,
        block_size=sb.block_size,
        blocks=sb.blocks,
        uuid=sb.uuid,
    )

