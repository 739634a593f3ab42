"""The index of a directory base: what it tracks, what it ignores, its memo, its errors."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fexstack.errors import CheckError
from overlays import baseindex


def make_base(root: Path) -> Path:
    (root / "usr/lib64").mkdir(parents=True)
    (root / "usr/lib64/libc.so.6").write_bytes(b"\x7fELF libc")
    (root / "usr/lib64/libc.so").symlink_to("libc.so.6")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("include ld.so.conf.d/*.conf\n")
    (root / "lib64").symlink_to("usr/lib64")
    root.chmod(0o755)
    return root


def test_index_lists_kind_mode_target_and_file_digest(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base")
    (base / "etc/ld.so.conf").chmod(0o640)
    entries = {e["path"]: e for e in baseindex.index(base)}
    assert list(entries) == sorted(entries)
    assert entries["/"] == {"path": "/", "kind": "dir", "mode": "0755"}
    assert entries["/lib64"]["kind"] == "symlink" and entries["/lib64"]["target"] == "usr/lib64"
    conf = entries["/etc/ld.so.conf"]
    assert conf["kind"] == "file" and conf["mode"] == "0640"
    assert conf["sha256"] == hashlib.sha256(b"include ld.so.conf.d/*.conf\n").hexdigest()
    assert "sha256" not in entries["/usr/lib64/libc.so"] and "target" not in conf
    # A symlink is never followed (lib64 -> usr/lib64 is not walked twice).
    assert not any(p.startswith("/lib64/") for p in entries)


def test_digest_is_the_same_wherever_the_base_lives(tmp_path: Path) -> None:
    base = make_base(tmp_path / "one" / "base")
    moved = shutil.copytree(base, tmp_path / "two" / "deeper" / "base", symlinks=True)
    assert baseindex.digest(base) == baseindex.digest(moved)


def _rewrite_same_size(path: Path) -> None:
    """Change a file's bytes but not its size or mtime (only ctime can tell)."""
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


CHANGES: dict[str, Callable[[Path], object]] = {
    "file bytes": lambda b: _rewrite_same_size(b / "usr/lib64/libc.so.6"),
    "mode": lambda b: (b / "etc/ld.so.conf").chmod(0o600),
    "symlink target": lambda b: ((b / "lib64").unlink(), (b / "lib64").symlink_to("/usr/lib")),
    "new empty folder": lambda b: (b / "opt").mkdir(),
    "removed file": lambda b: (b / "etc/ld.so.conf").unlink(),
    "root mode": lambda b: b.chmod(0o700),
    "file becomes a link": lambda b: (
        (b / "etc/ld.so.conf").unlink(), (b / "etc/ld.so.conf").symlink_to("x")
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_digest_changes_with_the_content(tmp_path: Path, change: str) -> None:
    base = make_base(tmp_path / "base")
    before = baseindex.digest(base)
    assert baseindex.digest(base) == before  # stable (second call from the memo)
    CHANGES[change](base)
    assert baseindex.digest(base) != before


def test_memo_hashes_each_unchanged_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_base(tmp_path / "base")
    hashed: list[Path] = []
    real = baseindex.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(baseindex, "sha256_file", counting)
    first = baseindex.digest(base)
    assert len(hashed) == 2  # libc.so.6 and ld.so.conf
    hashed.clear()
    assert baseindex.digest(base) == first
    assert hashed == []
    _rewrite_same_size(base / "usr/lib64/libc.so.6")
    assert baseindex.digest(base) != first
    assert hashed == [base / "usr/lib64/libc.so.6"]


def test_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="missing") as info:
        baseindex.index(tmp_path / "missing")
    assert info.value.hint
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckError, match="is not a directory"):
        baseindex.index(tmp_path / "file")
