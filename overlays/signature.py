"""RPM signature verification against a repository's own keys, never the host's keyring.

A repo's ``gpgkey`` entries (file:// URLs or paths) are imported into a private rpm root
(``rpmkeys --root <keyring> --import``), one per key set: the folder is named after the
digest of the keys' bytes (``<cache>/keyrings/<digest>/``) and built in a temp folder that
is renamed into place, so a half-imported keyring is never used. A package is then checked
with ``rpmkeys --root <keyring> --checksig`` under ``%_pkgverify_level signature``, which
makes rpm itself refuse a package that carries no signature at all (plain ``--checksig``
accepts an unsigned package whose digests are intact).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fexstack import atomic, command
from fexstack.errors import FetchError, ToolError

KEYRINGS = "keyrings"


@dataclass(frozen=True)
class KeySet:
    """The keys of one repo: their files, the digest of their bytes, their fingerprints."""

    repo: str
    files: tuple[Path, ...]
    digest: str  # "sha256:<hex>" over the sorted key files' bytes
    fingerprints: tuple[str, ...]  # filled in once the keyring is built (lower-case hex)


def key_path(ref: str) -> Path:
    """A ``gpgkey`` entry (file:// URL or path) as a local path."""
    if ref.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(ref).path))
    if "://" in ref:
        raise FetchError(
            f"gpgkey {ref!r} is not a file:// URL or a path",
            "download the key once, check its fingerprint, and name the local file",
        )
    return Path(ref)


def keyset_digest(repo: str, refs: Sequence[str]) -> tuple[str, tuple[Path, ...]]:
    """The digest of the keys named by ``refs`` (order does not matter) and their paths."""
    if not refs:
        raise FetchError(
            f"repo {repo} has gpgcheck on but names no gpgkey",
            f'add gpgkey = ["file:///..."] to [repos.{repo}] in stacks/repos.toml',
        )
    paths = tuple(key_path(r) for r in refs)
    blobs = []
    for path in paths:
        try:
            blobs.append(path.read_bytes())
        except OSError as exc:
            raise FetchError(
                f"repo {repo}: cannot read gpgkey {path}: {exc.strerror}",
                f"fix gpgkey of [repos.{repo}] in stacks/repos.toml",
            ) from exc
    outer = hashlib.sha256()
    for blob in sorted(hashlib.sha256(b).digest() for b in blobs):
        outer.update(blob)
    return "sha256:" + outer.hexdigest(), paths


def keyring(repo: str, refs: Sequence[str], cache: Path) -> tuple[Path, KeySet]:
    """The private rpm root holding exactly the keys ``refs`` (built once per key set)."""
    digest, paths = keyset_digest(repo, refs)
    root = cache / KEYRINGS / digest.removeprefix("sha256:")
    if not (root / "fingerprints").exists():
        with atomic.temp_dir(root) as tmp:
            for path in paths:
                try:
                    command.run(["rpmkeys", "--root", tmp, "--import", path])
                except ToolError as exc:
                    raise FetchError(
                        f"repo {repo}: rpmkeys cannot import gpgkey {path}: {exc.stderr_tail}",
                        "the file must be an ASCII-armored OpenPGP public key",
                    ) from exc
            listing = command.output(["rpmkeys", "--root", tmp, "--list"])
            found = sorted({ln.split()[0].lower() for ln in listing.splitlines() if ln})
            atomic.write_text(tmp / "fingerprints", "".join(f + "\n" for f in found))
    fingerprints = tuple((root / "fingerprints").read_text().split())
    return root, KeySet(repo=repo, files=paths, digest=digest, fingerprints=fingerprints)


def verify(rpm: Path, *, package: str, url: str, root: Path, keys: KeySet) -> None:
    """Refuse ``rpm`` unless rpm finds a valid signature by one of ``keys``.

    The error names the package, where it came from, what rpm said, and the fingerprints
    of the keys that were expected.
    """
    proc = command.run(
        [
            "rpmkeys",
            "--root",
            root,
            "--define",
            "_pkgverify_level signature",
            "--checksig",
            "-v",
            rpm,
        ],
        check=False,
    )
    text = ((proc.stdout or b"") + (proc.stderr or b"")).decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
    signatures = [ln for ln in lines if "signature" in ln.lower()]
    if proc.returncode == 0 and any(ln.endswith(": OK") for ln in signatures):
        return
    said = "; ".join(lines) or text.strip()
    if any("NOKEY" in ln for ln in signatures):
        what = "is signed by a key that is not among the repo's keys"
    elif all(ln.endswith("NOTFOUND") for ln in signatures):
        what = "is not signed"
    else:
        what = "has a signature that does not verify"
    expected = ", ".join(keys.fingerprints) or "(none)"
    raise FetchError(
        f"package {package} ({url}) {what} (repo {keys.repo} has gpgcheck on; "
        f"expected a signature by {expected}); rpmkeys said: {said}",
        f"check that the lock's URL for {package} points into repo {keys.repo} and that "
        f"its gpgkey ({', '.join(map(str, keys.files))}) is the repo's signing key",
    )
