"""A deterministic scale repository for the build benchmarks, made with the fixture factory.

``generate(scale)`` returns a :class:`Generated`: a createrepo_c repository of
``scale.packages`` library packages (plus the base's glibc), a base (EROFS image and kiwi
package list holding glibc) and the seeds of a stack that pulls most of the repository.

Every package ``benchNNNN`` holds one real x86_64 shared library ``libbenchNNNN.so.1``
(compiled and linked by the factory, so rpm's generators give it real soname Requires and
Provides) and many data files. The libraries form a DAG of soname chains in five levels:
level 0 libraries need only libc; a level-n library needs one library of level n-1 and up
to two more of lower levels, chosen with a bias towards a few "hub" libraries (the way
most of a desktop stack needs glib). Chains are at most five deep, which keeps the
factory's (unmemoized) recursive cache keys cheap.

Data files have a log-normal size distribution and realistic compressibility: lines of
words drawn from a seeded vocabulary mixed with runs of random bytes, which zstd and lz4hc
compress about 2.5-3x (not all zeros, not all noise).

Everything comes from ``random.Random`` seeded by the scale's parameters, so the same
scale always gives the same RPMs (the factory is byte-reproducible too). The result is
cached under ``<cache>/scale/<name>-<key>/`` where the key is a digest of the scale's
parameters and :data:`RECIPE`; a second run reuses it without building anything.

Seeds: the packages nobody requires ("leaves"), minus every twentieth of them (at least
one), which are kept aside as ``spare_seeds``: the benchmark adds one of them to measure
a rebuild after adding one seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fexstack import atomic, paths
from testkit.factory import (
    Factory,
    File,
    Library,
    Package,
    Symlink,
    base_tree,
    glibc_package,
    write_kiwi_packages,
)

RECIPE = 1
LEVELS = (0.40, 0.25, 0.15, 0.12, 0.08)  # share of libraries at each DAG level
RANDOM_SHARE = 0.15  # share of data bytes that are random (incompressible) runs
VOCABULARY = 4096
BASE_UUID_SEED = "fexstack benchmark base"


@dataclass(frozen=True)
class Scale:
    """The parameters of a scale repository (all of them go into its cache key)."""

    name: str
    packages: int  # library packages (the base's glibc comes on top)
    files: int  # data files in all, about (each package also has its library and a symlink)
    bytes: int  # unpacked data bytes in all, about
    seed: int = 1

    def __post_init__(self) -> None:
        if self.packages < 2 or self.files < self.packages or self.bytes < self.files:
            raise ValueError(f"scale {self.name}: needs 2+ packages, 1+ file each, 1+ byte each")

    @property
    def key(self) -> str:
        text = json.dumps({"recipe": RECIPE, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SCALES = {
    "small": Scale("small", packages=12, files=240, bytes=3 * 10**6),
    "medium": Scale("medium", packages=300, files=30_000, bytes=300 * 10**6),
    "large": Scale("large", packages=1000, files=100_000, bytes=1000 * 10**6),
}


@dataclass(frozen=True)
class Generated:
    """A generated scale repository with its base and seeds (see the module docstring)."""

    scale: Scale
    folder: Path
    repo: Path  # createrepo_c repository (file:// baseurl)
    base_image: Path
    base_packages: Path  # kiwi .packages list
    base_rpms: tuple[Path, ...]  # the base's packages' RPMs, inside ``repo``
    seeds: tuple[str, ...]
    spare_seeds: tuple[str, ...]
    stats: dict[str, Any]

    @property
    def extra_seed(self) -> str:
        """The seed the benchmark adds to measure a rebuild after adding one seed."""
        return self.spare_seeds[0]


# -- the deterministic plan -------------------------------------------------------------------


def package_name(index: int) -> str:
    return f"bench{index:04d}"


def soname(index: int) -> str:
    return f"libbench{index:04d}.so.1"


def _rng(scale: Scale, *what: object) -> random.Random:
    text = json.dumps([RECIPE, asdict(scale), *map(str, what)])
    return random.Random(hashlib.sha256(text.encode()).digest())


def plan_dag(scale: Scale) -> list[tuple[int, ...]]:
    """For each library index, the indexes of the libraries it needs (a DAG by level)."""
    rng = _rng(scale, "dag")
    counts = [max(1, round(share * scale.packages)) for share in LEVELS]
    counts[0] += scale.packages - sum(counts)
    level_of: list[int] = []
    for level, count in enumerate(counts):
        level_of += [level] * count
    by_level: list[list[int]] = [[] for _ in LEVELS]
    for index, level in enumerate(level_of):
        by_level[level].append(index)
    needs: list[tuple[int, ...]] = []
    for level in level_of:
        if level == 0:
            needs.append(())
            continue
        below = [i for lv in range(level) for i in by_level[lv]]
        # Hubs: the first libraries of each level are chosen far more often.
        direct = by_level[level - 1]
        chosen = {rng.choices(direct, weights=[1 / (r + 1) for r in range(len(direct))])[0]}
        for _ in range(rng.choice((0, 1, 1, 2))):
            chosen.add(
                rng.choices(below, weights=[1 / (r + 1) ** 0.5 for r in range(len(below))])[0]
            )
        needs.append(tuple(sorted(chosen)))
    return needs


def _vocabulary(scale: Scale) -> list[bytes]:
    rng = _rng(scale, "vocabulary")
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 11)))
        if rng.random() < 0.1:
            word += f"_{rng.randint(0, 999)}"
        words.add(word)
    return sorted(w.encode() for w in words)


def data_bytes(rng: random.Random, size: int, vocabulary: Sequence[bytes]) -> bytes:
    """``size`` bytes of text lines mixed with random runs (see the module docstring)."""
    out = bytearray()
    while len(out) < size:
        if rng.random() < RANDOM_SHARE:
            out += rng.randbytes(rng.randint(256, 2048))
        else:
            words = rng.choices(vocabulary, k=rng.randint(64, 512))
            out += b" ".join(words) + b"\n"
    return bytes(out[:size])


def _file_sizes(rng: random.Random, count: int, total: int) -> list[int]:
    raw = [rng.lognormvariate(0.0, 1.2) for _ in range(count)]
    factor = total / sum(raw)
    return [max(16, round(r * factor)) for r in raw]


def make_package(
    scale: Scale, index: int, needs: Sequence[int], vocabulary: Sequence[bytes]
) -> Package:
    """Package ``index`` of ``scale``: its library and its data files."""
    rng = _rng(scale, "package", index)
    name = package_name(index)
    mean_files = scale.files / scale.packages
    mean_bytes = scale.bytes / scale.packages
    spread = rng.uniform(0.5, 1.5)
    count = max(1, round(mean_files * spread))
    sizes = _file_sizes(rng, count, max(count * 16, round(mean_bytes * spread)))
    folders = max(1, count // 12)
    lib = Library(
        soname(index),
        path=f"/usr/lib64/{soname(index)}.0",
        needs=tuple(soname(n) for n in needs),
    )
    share = f"/usr/share/bench/{name}"
    contents: list[Library | File | Symlink] = [lib, Symlink(f"{share}/current", "d0")]
    for number, size in enumerate(sizes):
        folder = number % folders
        contents.append(
            File(f"{share}/d{folder}/f{number:04d}.dat", data_bytes(rng, size, vocabulary))
        )
    return Package(
        name,
        version="1.0",
        release="1",
        summary=f"benchmark library {index} and its data",
        contents=tuple(contents),
    )


def plan_seeds(needs: Sequence[Sequence[int]]) -> tuple[list[str], list[str]]:
    """(seeds, spare seeds): the leaves of the DAG, every twentieth kept aside."""
    needed = {n for deps in needs for n in deps}
    leaves = [i for i in range(len(needs)) if i not in needed]
    spare = leaves[::20] if len(leaves) > 1 else []
    seeds = [i for i in leaves if i not in spare]
    if not spare:  # a one-leaf DAG cannot happen with 2+ packages at level 0, but be safe
        spare = [seeds.pop()] if len(seeds) > 1 else []
    return [package_name(i) for i in seeds], [package_name(i) for i in spare]


def closure(seeds: Sequence[str], needs: Sequence[Sequence[int]]) -> set[int]:
    todo = [int(s.removeprefix("bench")) for s in seeds]
    seen: set[int] = set()
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo += needs[i]
    return seen


# -- building -----------------------------------------------------------------------------


def default_cache() -> Path:
    """``<fexstack cache>/bench`` (``$FEXSTACK_BENCH_CACHE`` overrides)."""
    explicit = os.environ.get("FEXSTACK_BENCH_CACHE")
    return Path(explicit).expanduser() if explicit else paths.cache_dir() / "bench"


def _say(message: str) -> None:
    print(f"scale: {message}", file=sys.stderr, flush=True)


def generate(
    scale: Scale,
    *,
    cache: Path | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] = _say,
) -> Generated:
    """The scale repository, built once under ``cache`` and reused afterwards."""
    cache = cache or default_cache()
    folder = cache / "scale" / f"{scale.name}-{scale.key}"
    if (folder / "generated.json").exists():
        return _load(scale, folder)
    started = time.monotonic()
    workers = workers or os.cpu_count() or 1
    factory = Factory(cache / "factory")
    try:
        needs = plan_dag(scale)
        vocabulary = _vocabulary(scale)
        libs = [
            Library(
                soname(i), path=f"/usr/lib64/{soname(i)}.0", needs=tuple(soname(n) for n in deps)
            )
            for i, deps in enumerate(needs)
        ]
        factory.register(*libs)
        progress(f"{scale.name}: compiling {len(libs)} libraries")
        depth = _depths(needs)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for level in range(max(depth) + 1):
                list(
                    pool.map(
                        factory.compiler.build,
                        [lib for lib, d in zip(libs, depth, strict=True) if d == level],
                    )
                )
        progress(f"{scale.name}: building {scale.packages} RPMs with {workers} workers")
        done = [0]

        def one(index: int) -> Path:
            rpm = factory.rpm(make_package(scale, index, needs[index], vocabulary))
            done[0] += 1
            if done[0] % 50 == 0:
                progress(f"{scale.name}: {done[0]}/{scale.packages} RPMs")
            return rpm

        with ThreadPoolExecutor(max_workers=workers) as pool:
            rpms = list(pool.map(one, range(scale.packages)))
        base_pkgs = [glibc_package()]
        base_rpms = [factory.rpm(p) for p in base_pkgs]
        seeds, spare = plan_seeds(needs)
        with atomic.temp_dir(folder) as tmp:
            progress(f"{scale.name}: createrepo_c")
            factory.repo(tmp / "repo", [*rpms, *base_rpms])
            progress(f"{scale.name}: base image")
            tree = tmp / "base-tree"
            base_tree(tree, base_pkgs, factory=factory)
            tree.chmod(0o755)
            from overlays.image import build_image

            build_image(tree, tmp / "base.erofs", uuid_seed=BASE_UUID_SEED)
            shutil.rmtree(tree)
            write_kiwi_packages(tmp / "base.packages", base_pkgs)
            pulled = closure(seeds, needs)
            stats = _stats(scale, rpms, base_rpms, needs, seeds, pulled)
            stats["generate_seconds"] = round(time.monotonic() - started, 1)
            doc = {
                "scale": asdict(scale),
                "key": scale.key,
                "seeds": seeds,
                "spare_seeds": spare,
                "base_rpms": [r.name for r in base_rpms],
                "stats": stats,
            }
            (tmp / "generated.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    finally:
        factory.close()
    progress(f"{scale.name}: ready in {folder} ({stats['generate_seconds']} s)")
    return _load(scale, folder)


def _depths(needs: Sequence[Sequence[int]]) -> list[int]:
    depth: list[int] = []
    for deps in needs:  # dependencies always have lower indexes
        depth.append(1 + max((depth[d] for d in deps), default=-1))
    return depth


def _stats(
    scale: Scale,
    rpms: Sequence[Path],
    base_rpms: Sequence[Path],
    needs: Sequence[Sequence[int]],
    seeds: Sequence[str],
    pulled: set[int],
) -> dict[str, Any]:
    import rpm

    files = 0
    unpacked = 0
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    for path in rpms:
        with open(path, "rb") as fh:
            header = ts.hdrFromFdno(fh.fileno())
        files += len(header[rpm.RPMTAG_FILENAMES])
        unpacked += int(header[rpm.RPMTAG_LONGSIZE])
    depth = _depths(needs)
    return {
        "packages": len(rpms),
        "base_packages": len(base_rpms),
        "payload_paths": files,
        "unpacked_bytes": unpacked,
        "rpm_bytes": sum(p.stat().st_size for p in rpms),
        "soname_edges": sum(len(n) for n in needs),
        "max_chain": max(depth) + 1,
        "seeds": len(seeds),
        "packages_pulled_by_seeds": len(pulled),
    }


def _load(scale: Scale, folder: Path) -> Generated:
    doc = json.loads((folder / "generated.json").read_text())
    return Generated(
        scale=scale,
        folder=folder,
        repo=folder / "repo",
        base_image=folder / "base.erofs",
        base_packages=folder / "base.packages",
        base_rpms=tuple(folder / "repo" / name for name in doc["base_rpms"]),
        seeds=tuple(doc["seeds"]),
        spare_seeds=tuple(doc["spare_seeds"]),
        stats=doc["stats"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="generate (or show) a benchmark scale repository")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    generated = generate(SCALES[args.scale], cache=args.cache_dir, workers=args.workers)
    print(json.dumps({"folder": str(generated.folder), **generated.stats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
