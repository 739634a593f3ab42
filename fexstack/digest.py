"""Streaming sha256 digests of files and byte strings (hex, lower case)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The sha256 of the file at ``path`` (read in chunks, never whole into memory).

    Follows symlinks like :func:`open`; hash a symlink's target text with
    :func:`sha256_bytes` instead.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
