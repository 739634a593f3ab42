"""The image step's parts and the alternatives for its read-back, timed on one staged tree.

Run it (from the clone, through the toolchain root) on a staged tree of a benchmark project
(``build_bench --keep`` leaves one under ``<workdir>/project/build/staging/bench``)::

    ./devroot python3 -m benchmarks.image_options TREE --runs 3 \
        --out benchmarks/image-options-medium.json

Each figure is the median of ``--runs`` runs, in seconds, all in one run of this script:

- ``mkfs_workers_N``: ``mkfs.erofs`` with the flags of ``overlays/image.py`` and
  ``--workers=N`` (erofs-utils 1.9 defaults to one worker per core);
- ``mkfs_from_tar``: ``mkfs.erofs --tar=f`` reading a tar of the tree from stdin (the tar
  made beforehand, untimed: what building from the per-RPM cache's streams would cost);
- ``scan_tree``: listing and hashing the staged tree (:func:`overlays.treescan.scan`);
- ``scan_tree_known``: listing it with the stage step's digests (nothing read: mtimes are 0);
- ``readback_extract``: ``fsck.erofs --extract`` into a tmpfs, then listing and hashing the
  copy (the read-back before this change);
- ``readback_mount``: the image mounted in a private namespace and listed and hashed
  through the kernel (:mod:`overlays.imagemount`);
- ``fsck_only``: ``fsck.erofs`` without extracting (decodes every file, hashes nothing);
- ``image_sha256``: the sha256 of the image file;
- ``build_image``: the whole step (mkfs, scan while mkfs runs, read-back, image sha256),
  with each read-back method and the tree hashed; ``build_image_mount_known``: as the
  pipeline runs it, with the kernel read-back and the stage step's digests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fexstack import command
from fexstack.digest import sha256_file
from overlays import imagemount, readback, treescan
from overlays.image import MKFS, MKFS_ENV, build_image, mkfs_flags

SEED = "benchmark image options"


def timed(
    action: Callable[[], Any], runs: int, before: Callable[[], Any] | None = None
) -> dict[str, Any]:
    seconds = []
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        action()
        seconds.append(round(time.perf_counter() - started, 3))
    return {"median": round(statistics.median(seconds), 3), "runs": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="time the image step's parts and alternatives")
    parser.add_argument("tree", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"))
    args = parser.parse_args(argv)
    tree: Path = args.tree.absolute()
    work = Path(tempfile.mkdtemp(prefix="fexstack-image-options.", dir=args.scratch))
    image = work / "tree.erofs"
    flags = list(mkfs_flags("lz4hc", SEED))
    env = dict(MKFS_ENV)
    found: dict[str, Any] = {}

    def unlink() -> None:
        image.unlink(missing_ok=True)

    try:
        for workers in (1, 2):
            found[f"mkfs_workers_{workers}"] = timed(
                lambda w=workers: command.run(  # type: ignore[misc]
                    [MKFS, *flags, f"--workers={w}", image, tree], env=env
                ),
                args.runs,
                unlink,
            )
        tar = work / "tree.tar"
        command.run(["bsdtar", "--format=pax", "-cf", tar, "-C", tree, "."])
        tar_flags = [f for f in flags if f != "--hard-dereference"]

        def from_tar() -> None:
            with tar.open("rb") as fh:
                subprocess.run(
                    [MKFS, *tar_flags, "--tar=f", image],
                    stdin=fh,
                    check=True,
                    env={**os.environ, **env},
                )

        found["mkfs_from_tar"] = timed(from_tar, args.runs, unlink)
        tar.unlink()
        command.run([MKFS, *flags, image, tree], env=env)
        found["scan_tree"] = timed(lambda: treescan.scan(tree), args.runs)
        # What the stage step knows of the tree: each file's (sha256, size). The staged
        # tree's mtimes are 0, so the scan takes these instead of reading the files.
        known = {
            path: (entry.sha256, entry.size)
            for path, entry in treescan.scan(tree).entries.items()
            if entry.sha256 is not None
        }
        found["scan_tree_known"] = timed(lambda: treescan.scan(tree, known=known), args.runs)
        found["readback_extract"] = timed(
            lambda: readback.list_image(image, method="extract", room=(1 << 30, 200_000)), args.runs
        )
        found["readback_mount"] = timed(lambda: imagemount.list_mounted(image), args.runs)
        found["fsck_only"] = timed(lambda: command.run(["fsck.erofs", image]), args.runs)
        found["image_sha256"] = timed(lambda: sha256_file(image), args.runs)
        for method in ("extract", "mount"):
            os.environ[readback.METHOD_ENV] = method
            found[f"build_image_{method}"] = timed(
                lambda: build_image(tree, work / "built.erofs", uuid_seed=SEED), args.runs
            )
        found["build_image_mount_known"] = timed(
            lambda: build_image(tree, work / "built.erofs", uuid_seed=SEED, known=known), args.runs
        )
        os.environ.pop(readback.METHOD_ENV, None)
    finally:
        command.run(["rm", "-rf", work])
    doc = {
        "tree": str(tree),
        "files": sum(len(f) for _, _, f in os.walk(tree)),
        "loadavg": os.getloadavg(),
        "figures": found,
    }
    mkfs = found["mkfs_workers_2"]["median"]
    doc["ratios_to_mkfs_workers_2"] = {k: round(v["median"] / mkfs, 3) for k, v in found.items()}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
