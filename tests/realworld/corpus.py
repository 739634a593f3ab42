"""The real-world corpus as a cache entry: built once, verified on every reuse.

Layout: ``${FEXSTACK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/fexstack}/realworld/``

- ``apt-<suite>/``: the private apt folder (index lists persist between builds);
- ``<key>/``: one corpus, ``key`` = digest of the seeds, suite, arch and recipe versions:
  - ``debs/``: the downloaded .debs (apt's file names);
  - ``repo/``: one RPM per .deb and ``repodata/`` (createrepo_c);
  - ``base/tree/``: the installed and stripped base; ``base/base.erofs`` its image;
    ``base/base.packages`` its kiwi list;
  - ``stacks/repos.toml`` (repo id ``realworld``) and ``stacks/bases/realworld.toml``
    (base id ``realworld``), with absolute paths;
  - ``corpus.json``: package versions (Debian and RPM), sizes, timings, lib_dirs, and
    what a reuse verifies (every RPM's size and sha256, repomd.xml's size and sha256, the
    base image's size and sha256: about a second).

An entry is built in ``.tmp-<key>.<pid>`` and renamed into place when complete, under a
lock file, so a killed build never leaves an entry that a later run takes as complete
(its temp folder is removed by the next build).
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import command, paths
from fexstack.digest import sha256_bytes, sha256_file
from overlays import image
from tests.realworld import base, convert, packages
from tests.realworld.apt import CorpusError, DebRef, PrivateApt

RECIPE_VERSION = 3  # bump when the layout or the base recipe changes
REPO_ID = "realworld"
BASE_ID = "realworld"
WORKERS = 2

Progress = Callable[[str], None]


def say(line: str) -> None:
    print(f"realworld: {line}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """``<fexstack cache>/realworld``."""
    return paths.cache_dir() / "realworld"


def mirror() -> str:
    return os.environ.get("FEXSTACK_DEVROOT_MIRROR") or packages.DEFAULT_MIRROR


def suite(name: str = packages.SUITE) -> packages.Suite:
    if name not in packages.SUITES:
        raise CorpusError(f"no corpus suite {name!r}", f"use one of {', '.join(packages.SUITES)}")
    return packages.SUITES[name]


def key(of: packages.Suite | None = None) -> str:
    """The cache key: digest of the package lists, suite, arch and recipe versions."""
    of = of or suite()
    doc = {
        "suite": of.name,
        "arch": packages.ARCH,
        "base": sorted(of.base_seeds),
        "corpus": sorted(of.corpus_seeds),
        "converter": convert.CONVERTER_VERSION,
        "recipe": RECIPE_VERSION,
    }
    return sha256_bytes(json.dumps(doc, sort_keys=True).encode())[:16]


@dataclass(frozen=True)
class Package:
    """One package of the corpus: its Debian and RPM identities."""

    name: str
    deb_version: str
    deb_arch: str
    deb: str  # file name in debs/
    rpm: str  # file name in repo/
    epoch: int | None
    version: str
    release: str
    arch: str  # rpm arch
    in_base: bool

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch is not None else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


@dataclass(frozen=True)
class Corpus:
    """A complete, verified corpus entry (what the ``realworld_corpus`` fixture returns)."""

    root: Path
    key: str
    suite: str  # trixie (the default) or bookworm
    release: str  # for a stack's [source].release: 13, 12
    packages: Mapping[str, Package]  # by Debian (= RPM) name
    lib_dirs: tuple[str, ...]
    info: Mapping[str, Any]  # corpus.json

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def repo_url(self) -> str:
        return self.repo.as_uri()

    @property
    def debs(self) -> Path:
        return self.root / "debs"

    @property
    def base_tree(self) -> Path:
        return self.root / "base" / "tree"

    @property
    def base_image(self) -> Path:
        return self.root / "base" / "base.erofs"

    @property
    def base_packages(self) -> Path:
        return self.root / "base" / "base.packages"

    @property
    def stacks_dir(self) -> Path:
        return self.root / "stacks"

    @property
    def base_toml(self) -> Path:
        return self.stacks_dir / "bases" / f"{BASE_ID}.toml"

    @property
    def repos_toml(self) -> Path:
        return self.stacks_dir / "repos.toml"

    def rpm(self, name: str) -> Path:
        return self.repo / self.packages[name].rpm

    def deb(self, name: str) -> Path:
        return self.debs / self.packages[name].deb

    @property
    def base_names(self) -> frozenset[str]:
        return frozenset(n for n, p in self.packages.items() if p.in_base)

    def write_stacks_dir(self, dest: Path) -> Path:
        """Put ``repos.toml`` (repo ``realworld``) and ``bases/realworld.toml`` in ``dest``.

        Stacks written there then name ``base = "realworld"`` and
        ``repos = ["realworld"]``, ``[source] release = corpus.release``.
        """
        (dest / "bases").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.repos_toml, dest / "repos.toml")
        shutil.copyfile(self.base_toml, dest / "bases" / f"{BASE_ID}.toml")
        return dest


# --- building ----------------------------------------------------------------------------


def _convert_all(
    refs: Sequence[DebRef], debs: Path, repo: Path, work: Path, progress: Progress
) -> dict[str, convert.Converted]:
    fileattrs = convert.elf_only_fileattrs(work / "fileattrs")
    done: dict[str, convert.Converted] = {}
    lock = threading.Lock()
    started = time.monotonic()

    def one(index: int, ref: DebRef) -> convert.Converted:
        return convert.convert(debs / ref.filename, repo, work / f"w{index}", fileattrs)

    slots = list(range(WORKERS))
    slot_lock = threading.Lock()

    def job(ref: DebRef) -> convert.Converted:
        with slot_lock:
            slot = slots.pop()
        try:
            return one(slot, ref)
        finally:
            with slot_lock:
                slots.append(slot)

    # Largest first, so the big libraries do not end up alone at the end.
    ordered = sorted(refs, key=lambda r: -(debs / r.filename).stat().st_size)
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {pool.submit(job, ref): ref for ref in ordered}
        for future in concurrent.futures.as_completed(futures):
            ref = futures[future]
            result = future.result()
            with lock:
                done[ref.name] = result
                size = (repo / result.rpm).stat().st_size / 1e6
                progress(
                    f"[{len(done):3d}/{len(refs)}] {result.rpm} ({size:.1f} MB, "
                    f"{time.monotonic() - started:.0f} s)"
                )
    return done


def _mb(folder: Path, pattern: str) -> float:
    return round(sum(p.stat().st_size for p in folder.glob(pattern)) / 1e6, 1)


def _verification(root: Path) -> dict[str, Any]:
    repo = root / "repo"
    repomd = repo / "repodata" / "repomd.xml"
    image_path = root / "base" / "base.erofs"
    return {
        "rpms": {p.name: [p.stat().st_size, sha256_file(p)] for p in sorted(repo.glob("*.rpm"))},
        "repomd": {"size": repomd.stat().st_size, "sha256": sha256_file(repomd)},
        "image": {"size": image_path.stat().st_size, "sha256": sha256_file(image_path)},
    }


def _write_tomls(final: Path, tmp: Path, lib_dirs: Sequence[str]) -> None:
    stacks = tmp / "stacks"
    (stacks / "bases").mkdir(parents=True)
    (stacks / "repos.toml").write_text(
        "# The real-world corpus: Debian trixie amd64 packages converted 1:1 to RPMs.\n"
        f"[repos.{REPO_ID}]\n"
        f"baseurl = [{json.dumps((final / 'repo').as_uri())}]\n"
        "gpgcheck = false\n"
    )
    dirs = ", ".join(json.dumps(d) for d in lib_dirs)
    (stacks / "bases" / f"{BASE_ID}.toml").write_text(
        "# A base like Fedora's FEX RootFS, from the real-world corpus's Debian packages:\n"
        "# merged /usr with /lib64 -> usr/lib64, stripped as the kiwi config.sh strips.\n"
        "# lib_dirs: the system search path of the base's own (Debian) loader.\n"
        "[base]\n"
        f"image = {json.dumps(str(final / 'base' / 'base.erofs'))}\n"
        f"packages = {json.dumps(str(final / 'base' / 'base.packages'))}\n"
        f"lib_dirs = [{dirs}]\n"
    )


def check_closed(repo: Path, scratch: Path) -> None:
    """Every Requires of every RPM is met inside the repository (``rpm -i --test``)."""
    scratch.mkdir()
    proc = command.run(
        ["rpm", "-i", "--test", "--root", str(scratch), "--dbpath", base.DBPATH,
         "--nosignature", "--noscripts", "--ignoresize", *map(str, sorted(repo.glob("*.rpm")))],
        check=False,
    )
    shutil.rmtree(scratch)
    if proc.returncode != 0:
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        unmet = [line.strip() for line in text.splitlines() if " is needed by " in line]
        raise CorpusError(
            "the corpus is not closed for rpm: " + ("; ".join(unmet) or text.strip()[-2000:]),
            "add the Debian package that ships the missing library to CORPUS_SEEDS in "
            "tests/realworld/packages.py (its Depends do not name it)",
        )


def build(of: packages.Suite, final: Path, tmp: Path, progress: Progress) -> None:
    """Build a complete corpus into ``tmp`` whose paths name ``final`` (renamed after)."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    apt = PrivateApt(final.parent / f"apt-{of.name}", mirror(), of.name, packages.ARCH)
    progress(f"apt update ({apt.mirror} {of.name})")
    apt.update()
    base_refs = apt.closure(of.base_seeds)
    all_refs = sorted(set(apt.closure(of.base_seeds + of.corpus_seeds)) | set(base_refs))
    leaked = sorted({r.name for r in base_refs} & set(packages.NOT_IN_BASE))
    if leaked:
        raise CorpusError(
            f"the base's closure pulls {', '.join(leaked)}, which Fedora's RootFS lacks",
            "drop the base seed that pulls it (tests/realworld/packages.py)",
        )
    names = [r.name for r in all_refs]
    if len(set(names)) != len(names):
        raise CorpusError("two versions of one package in the closure", None)
    progress(f"closure: {len(all_refs)} packages, {len(base_refs)} in the base")
    debs = tmp / "debs"
    apt.download(all_refs, debs, progress)
    timings["download"] = time.monotonic() - t0

    t1 = time.monotonic()
    repo = tmp / "repo"
    repo.mkdir()
    converted = _convert_all(all_refs, debs, repo, tmp / "work", progress)
    shutil.rmtree(tmp / "work")
    timings["convert"] = time.monotonic() - t1

    t2 = time.monotonic()
    progress("createrepo_c")
    command.run(
        ["createrepo_c", "--quiet", "--no-database", "--revision", "1",
         "--set-timestamp-to-revision", "--workers", str(WORKERS), str(repo)],
        hint="createrepo_c failed over the converted RPMs",
    )
    check_closed(repo, tmp / "closed")
    timings["createrepo"] = time.monotonic() - t2

    t3 = time.monotonic()
    base_names = {r.name for r in base_refs}
    tree = tmp / "base" / "tree"
    progress(f"base: rpm -i {len(base_names)} packages into a merged-/usr tree")
    base.install_tree(tree, [repo / converted[n].rpm for n in sorted(base_names)])
    stripped = base.strip(tree)
    base.ld_cache(tree)
    lib_dirs = base.loader_dirs(tree)
    lines = sorted(
        base.kiwi_line(c.name, c.evr.epoch, c.evr.version, c.evr.release or "0", c.arch)
        for n, c in converted.items()
        if n in base_names
    )
    (tmp / "base" / "base.packages").write_text("".join(line + "\n" for line in lines))
    progress("base: mkfs.erofs")
    flags = image.mkfs_flags("lz4", f"fexstack-realworld-base-{final.name}")
    command.run([image.MKFS, *flags, str(tmp / "base" / "base.erofs"), str(tree)],
                env={"SOURCE_DATE_EPOCH": ""}, hint="mkfs.erofs failed on the base tree")
    timings["base"] = time.monotonic() - t3
    _write_tomls(final, tmp, lib_dirs)

    pkgs = {}
    for ref in all_refs:
        c = converted[ref.name]
        pkgs[ref.name] = {
            "deb_version": ref.version, "deb_arch": ref.arch, "deb": ref.filename,
            "rpm": c.rpm, "epoch": c.evr.epoch, "version": c.evr.version,
            "release": c.evr.release, "arch": c.arch, "in_base": ref.name in base_names,
            "files": c.files, "dropped": c.dropped,
        }
    info = {
        "key": final.name,
        "suite": of.name,
        "release": of.release,
        "mirror": apt.mirror,
        "converter": convert.CONVERTER_VERSION,
        "recipe": RECIPE_VERSION,
        "base_seeds": list(of.base_seeds),
        "corpus_seeds": list(of.corpus_seeds),
        "packages": pkgs,
        "lib_dirs": lib_dirs,
        "stripped": stripped,
        "sizes_mb": {"debs": _mb(debs, "*.deb"), "rpms": _mb(repo, "*.rpm"),
                     "base_image": _mb(tmp / "base", "base.erofs")},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "verify": _verification(tmp),
    }
    (tmp / "corpus.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def _load(root: Path) -> Corpus:
    info = json.loads((root / "corpus.json").read_text())
    found = _verification(root)
    if found != info["verify"]:
        wrong = sorted(k for k in found if found[k] != info["verify"].get(k))
        raise CorpusError(
            f"{root}: the cached corpus does not match its record ({', '.join(wrong)} differ)",
            f"delete {root} and build it again",
        )
    pkgs = {
        name: Package(
            name=name, deb_version=p["deb_version"], deb_arch=p["deb_arch"], deb=p["deb"],
            rpm=p["rpm"], epoch=p["epoch"], version=p["version"], release=p["release"],
            arch=p["arch"], in_base=p["in_base"],
        )
        for name, p in info["packages"].items()
    }
    return Corpus(root=root, key=info["key"], suite=info["suite"], release=info["release"],
                  packages=pkgs,
                  lib_dirs=tuple(info["lib_dirs"]), info=info)


def _verified(final: Path, progress: Progress) -> Corpus | None:
    """The complete entry at ``final`` if it verifies; None (said why) otherwise."""
    if not (final / "corpus.json").is_file():
        return None
    started = time.monotonic()
    try:
        found = _load(final)
    except (CorpusError, OSError, KeyError, ValueError) as exc:
        progress(f"{final} does not verify ({exc}); building it again")
        return None
    progress(f"using {final} ({len(found.packages)} packages, verified in "
             f"{time.monotonic() - started:.1f} s)")
    return found


def ensure(
    cache: Path | None = None, suite_name: str = packages.SUITE, progress: Progress = say
) -> Corpus:
    """The corpus of ``suite_name``, from the cache when complete and intact, else built now.

    An entry that does not verify (a changed or missing RPM, repodata or image) is built
    again. Concurrent callers wait for one build (a lock file beside the entry).
    """
    of = suite(suite_name)
    root = (cache or cache_root()).absolute()
    entry_key = key(of)
    final = root / entry_key
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".lock-{entry_key}", "a+") as lock:
        if (found := _verified(final, progress)) is not None:
            return found
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another process builds {final}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (found := _verified(final, progress)) is not None:
                return found
        for stale in root.glob(f".tmp-{entry_key}.*"):
            progress(f"removing {stale.name} (left by an interrupted build)")
            shutil.rmtree(stale)
        if final.exists():
            shutil.rmtree(final)  # incomplete or changed: never taken as complete
        tmp = root / f".tmp-{entry_key}.{os.getpid()}"
        tmp.mkdir()
        started = time.monotonic()
        progress(f"building {final} (once; later runs reuse it)")
        try:
            build(of, final, tmp, progress)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        corpus = _load(final)
        progress(f"built {final} in {time.monotonic() - started:.0f} s")
        return corpus
