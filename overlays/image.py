"""Building a byte-reproducible EROFS image from a staged tree.

The image depends only on the tree's content (names, types, permission bits, file bytes,
symlink targets), the compression, the UUID seed and the erofs-utils version; never on
where the tree lives, its inode numbers, timestamps, owners, extended attributes, hard
link structure or the order its folders were filled. The flags (see :func:`mkfs_flags`):

- ``-b4096``: the muvm guest kernel mounts only 4096-byte blocks; mkfs.erofs would default
  to the page size, 16K on Asahi.
- ``-T0 --all-time``: build time and every inode's mtime are 0 (``--all-time`` is the
  default with ``-T`` in erofs-utils 1.9, spelled out so a changed default cannot leak
  the tree's mtimes into the image).
- ``-U<uuid>``: a UUIDv5 of the caller's seed (the lock digest and stack name) instead of
  a random one.
- ``--all-root``: every file owned by 0:0, whoever staged it.
- ``-x-1``: no extended attributes, so SELinux labels of the build host's folders
  (which differ between home, /tmp and build trees) do not end up in the image.
- ``--hard-dereference``: hard links become separate inodes; otherwise the image depends
  on whether the extractor preserved hard links.
- ``-zlz4hc,level=9`` / ``-zlz4`` / nothing: the compressors every EROFS kernel mounts
  (LZ4 since Linux 5.3). zstd and lzma need kernel options the muvm guest kernel may not
  have, so stacks cannot choose them. The lz4hc level is pinned, not left to a default.
- ``--quiet``.

mkfs.erofs 1.9.4 lets ``SOURCE_DATE_EPOCH`` override ``-T`` and then keeps each file's own
mtime (clamped), so it runs with ``SOURCE_DATE_EPOCH=0`` (:data:`MKFS_ENV`) whatever the
caller's environment says.

Folder entries are sorted by mkfs.erofs itself, and its worker threads do not change
the output (checked with 1, 2 and 8 workers on erofs-utils 1.9.4).

The image is written under a temp name beside ``out``, checked (superblock, then a full
read-back compared with the tree: see :mod:`overlays.readback`) and only then renamed onto
``out``. Files whose digests the stage step gives are not read from the tree (the image's
bytes are compared with those digests), others are hashed while mkfs.erofs runs; the
image's sha256 is taken while it is read back.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fexstack import atomic, command
from fexstack.digest import sha256_file
from fexstack.errors import FexstackError, ImageError
from overlays import readback, treescan, validator
from overlays.treescan import Entry

MKFS = "mkfs.erofs"
BLOCK_SIZE = validator.BLOCK_SIZE
COMPRESSIONS = ("lz4hc", "lz4", "none")
LZ4HC_LEVEL = 9
ROOT_MODE = 0o755
# Environment for mkfs.erofs: SOURCE_DATE_EPOCH would otherwise override -T0.
MKFS_ENV: Mapping[str, str] = {"SOURCE_DATE_EPOCH": "0"}
# Fixed namespace for image UUIDs: uuid5(NAMESPACE_URL, "fexstack:erofs-image").
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "fexstack:erofs-image")


@dataclass(frozen=True)
class ImageInfo:
    """A finished, read-back-verified image."""

    path: Path
    sha256: str
    size: int
    block_size: int
    compression: str
    erofs_utils_version: str
    mkfs_flags: tuple[str, ...]  # the exact flags; mkfs.erofs is run as MKFS FLAGS IMAGE TREE
    uuid: str
    mkfs_env: Mapping[str, str] = field(default_factory=lambda: dict(MKFS_ENV))
    # The listing of the image's contents as read back from it (equal to the tree's).
    entries: Mapping[str, Entry] = field(default_factory=dict, repr=False, compare=False)

    @property
    def mkfs_argv(self) -> tuple[str, ...]:
        """The command line with placeholders for the (host-specific) image and tree paths."""
        return (MKFS, *self.mkfs_flags, "IMAGE", "TREE")


def image_uuid(seed: str) -> str:
    """The filesystem UUID for ``seed`` (a UUIDv5, stable across hosts and days)."""
    if not seed:
        raise ImageError("the image UUID seed is empty", "pass the lock digest and stack name")
    return str(uuid.uuid5(UUID_NAMESPACE, seed))


def mkfs_flags(compression: str, uuid_seed: str) -> tuple[str, ...]:
    """The mkfs.erofs flags for a reproducible image (see the module docstring)."""
    if compression not in COMPRESSIONS:
        raise ImageError(
            f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}",
            "set [image] compression in the stack to lz4hc (default), lz4 or none",
        )
    flags = [f"-b{BLOCK_SIZE}"]
    if compression == "lz4hc":
        flags.append(f"-zlz4hc,level={LZ4HC_LEVEL}")
    elif compression == "lz4":
        flags.append("-zlz4")
    flags += [
        "-T0",
        "--all-time",
        f"-U{image_uuid(uuid_seed)}",
        "--all-root",
        "-x-1",
        "--hard-dereference",
        "--quiet",
    ]
    return tuple(flags)


@functools.cache
def erofs_utils_version() -> str:
    """The erofs-utils version of the mkfs.erofs on PATH (e.g. ``1.9.4``)."""
    try:
        text = command.output([MKFS, "--version"])
    except FexstackError as exc:
        raise ImageError(
            f"cannot run {MKFS}: {exc.message}",
            "install erofs-utils, or run through ./devroot",
        ) from exc
    match = re.search(r"erofs-utils\)\s+(\S+)", text)
    if not match:
        raise ImageError(f"{MKFS} --version printed no version: {text.strip()!r}")
    return match.group(1)


def check_tree(tree: Path) -> None:
    """Refuse trees that would make a bad overlay root."""
    try:
        st = tree.lstat()
    except FileNotFoundError as exc:
        raise ImageError(f"{tree}: no staging tree", "run the stage step first") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{tree}: not a directory", "run the stage step first")
    mode = stat.S_IMODE(st.st_mode)
    if mode != ROOT_MODE:
        raise ImageError(
            f"{tree}: the tree's root has mode {mode:04o}; it becomes / in the merged view "
            f"and must be {ROOT_MODE:04o}",
            f"chmod {ROOT_MODE:o} the staging tree's root when staging (temp folders are 0700)",
        )


def build_image(
    tree: Path,
    out: Path,
    *,
    compression: str = "lz4hc",
    uuid_seed: str,
    timeout: float | None = None,
    before_readback: Callable[[Path], None] | None = None,
    known: Mapping[str, tuple[str, int]] | None = None,
) -> ImageInfo:
    """Make ``out`` from ``tree``, read it back, and return what was made.

    ``timeout`` (seconds) bounds mkfs.erofs. ``before_readback`` is called with the
    unverified temp image just before the read-back (tests use it to change the tree
    under a build). ``known`` maps staged files to the (sha256, size) the stage step
    meant them to hold (:func:`overlays.treescan.scan`): those are not read from the tree,
    and the read-back compares the image's bytes with them. On any failure nothing is left
    at ``out``'s temp name, and an existing ``out`` is left as it was.
    """
    check_tree(tree)
    flags = mkfs_flags(compression, uuid_seed)
    version = erofs_utils_version()
    with atomic.temp_path(out) as tmp:
        argv = [MKFS, *flags, os.fspath(tmp), os.fspath(tree)]
        # Without the stage step's digests the tree is listed and hashed while mkfs.erofs
        # (another process) reads it, and the read-back re-scans it afterwards, re-hashing
        # only what changed meanwhile. With them nothing is hashed: the one scan, after
        # mkfs.erofs, runs beside the read-back and leaves mkfs.erofs both cores.
        with ThreadPoolExecutor(1, thread_name_prefix="fexstack-scan") as pool:
            scanning = pool.submit(treescan.scan, tree) if known is None else None
            try:
                command.run(argv, env=MKFS_ENV, timeout=timeout)
            except FexstackError as exc:
                if scanning is not None:
                    scanning.cancel()
                raise ImageError(
                    f"{out}: mkfs.erofs failed: {exc.message}",
                    "check free space beside the output and that the staging tree is readable",
                ) from exc
            staged = scanning.result() if scanning is not None else None
        sb = validator.read_superblock(tmp)
        if before_readback is not None:
            before_readback(tmp)
        with ThreadPoolExecutor(1, thread_name_prefix="fexstack-digest") as pool:
            digesting = pool.submit(sha256_file, tmp)
            entries = readback.verify_image(tmp, tree, staged=staged, name=out, known=known)
            digest = digesting.result()
        size = tmp.stat().st_size
    return ImageInfo(
        path=out,
        sha256=digest,
        size=size,
        block_size=sb.block_size,
        compression=compression,
        erofs_utils_version=version,
        mkfs_flags=flags,
        uuid=sb.uuid,
        entries=entries,
    )
