"""Build benchmark: fexstack against the dnf5 --installroot baseline and the physical floor.

Run it (from the clone, through the toolchain root)::

    ./devroot python3 -m benchmarks.build_bench --scale medium
    ./devroot python3 -m benchmarks.build_bench --scale small --cold-runs 1 --quick-runs 1

It generates (or reuses) a deterministic scale repository (:mod:`benchmarks.scale`),
sets up a throwaway project in ``--workdir`` (``stacks/repos.toml``,
``stacks/bases/bench.toml``, ``stacks/bench.toml``) and measures wall clock on this
machine, in one run:

fexstack (each a ``python3 -m tasks ...`` process: doit with fexstack's tasks):
  - ``cold``: ``doit overlay:bench`` with an empty ``FEXSTACK_CACHE``, no ``build/`` and no
    lock file;
  - ``noop``: the same command again with nothing changed;
  - ``list``: ``doit list`` on the same stacks (the floor of any no-op);
  - ``add_seed``: the build after adding one seed (a package nobody else pulls in) to
    ``stacks/bench.toml``; before each run the seed is removed again and the overlay
    rebuilt, untimed;
  - ``comment``: the build after appending a comment line to ``stacks/bench.toml``.

baseline (what a user would otherwise script):
  ``rpm --root R --initdb`` and ``rpm --root R -i --justdb --nodeps --noscripts`` of the
  base's own RPMs (so the base's packages count as installed and are not pulled in, like
  fexstack's base-aware lock), then ``dnf5 --installroot R install SEEDS`` isolated from the
  host (``--repofrompath`` of the scale repo, an empty ``reposdir``, ``--no-plugins``,
  ``--forcearch=x86_64``, ``--releasever``, ``--no-gpgchecks``, ``install_weak_deps=False``,
  ``tsflags=noscripts``, its metadata cache in a fresh folder), then pruning what dnf5 and
  rpm left that is not package payload (the rpmdb, /var/lib/dnf, /var/log/dnf5.log,
  /usr/lib/sysimage/libdnf5, /run/dnf and the folders that become empty), then
  ``mkfs.erofs`` with exactly the flags of ``overlays/image.py``. No checks, no read-back,
  no manifest, no incremental rebuilds: every rebuild costs this much again.

fedora (Fedora Asahi's documented recipe, what a user scripts today):
  ``rpm2archive -n -`` of every locked RPM (its payload as an uncompressed tar on stdout,
  two at a time, as many as there are cores), the streams concatenated in lock order (each
  stream's end-of-archive blocks dropped, so the tar reader sees one archive) and piped into
  one ``mkfs.erofs --tar=f`` with the flags of ``overlays/image.py`` that apply to a tar
  source (all but ``--hard-dereference``). No lock, no checks, no read-back.

floor (the physical limit on this machine):
  decompressing every locked RPM's payload once into one tree (``bsdtar -xf RPM``, one
  process per RPM, as many in parallel as there are cores) plus ``mkfs.erofs`` of that tree
  with the same flags. ``floor_decompress_only`` (Python's ``compression.zstd`` over every
  payload, one thread, nothing written) is recorded for reference.

Each figure is the median of ``--cold-runs`` (cold, baseline, floor) or ``--quick-runs``
(the rest) runs. ``--rss`` samples the resident memory of the whole process tree of each
fexstack build (the doit process and every process it starts, summed, every 20 ms) and
records the peak. The page cache is warm for every contender (the scale repository was just
read); "cold" means empty fexstack caches, not an empty page cache.

Printed: every figure, per-task seconds of the fexstack runs (doit's JSON reporter), the
ratios fexstack / baseline and fexstack / floor and the issue's targets. Written as JSON
(``--out``, default ``benchmarks/results-<scale>.json``) with the machine's facts. With
``--profile DIR`` it also runs one cold, add_seed, comment and noop build under cProfile
and writes ``DIR/<scenario>.prof`` and a text summary ``DIR/<scenario>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import scale as scaling
from fexstack import command
from fexstack.paths import PROJECT_ROOT

STACK = "bench"
BASE = "bench"
RELEASE = "1"
MKFS_COMPRESSION = "lz4hc"  # the stacks' default, as overlays/image.py builds it
TARGETS = {
    # name: (numerator, denominator, limit) -- ratio of medians must be <= limit
    "noop_vs_list": ("noop", "list", 1.5),
    "add_seed_vs_cold": ("add_seed", "cold", 0.3),
    "cold_vs_baseline": ("cold", "baseline", 0.8),
    "cold_vs_floor": ("cold", "floor", 2.0),
    "cold_vs_fedora": ("cold", "fedora", 0.8),
    "cold_vs_faster_baseline": ("cold", "faster_baseline", 0.8),
    "image_vs_mkfs": ("image", "mkfs_alone", 1.3),
}
PEAK_RSS_LIMIT = 1 << 30  # bytes, for the whole process tree of any fexstack build
FEXSTACK_SCENARIOS = ("cold", "noop", "list", "add_seed", "comment")


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the throwaway project ---------------------------------------------------------------------


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string for our texts


def stack_text(seeds: Sequence[str], comment: str = "") -> str:
    lines = [
        "# The benchmark stack: seeds that pull most of the scale repository.",
        "",
        "[stack]",
        'description = "benchmark stack over the generated scale repository"',
        'class = "deps"',
        f"base = {_toml_string(BASE)}",
        "",
        "[source]",
        f"release = {_toml_string(RELEASE)}",
        'arch = "x86_64"',
        'repos = ["bench"]',
        "",
        "[seeds]",
        *(f"{name} = {_toml_string(f'benchmark seed {name}')}" for name in seeds),
    ]
    if comment:
        lines += ["", f"# {comment}"]
    return "\n".join(lines) + "\n"


@dataclass
class BenchProject:
    """A throwaway fexstack project over a generated scale repository."""

    root: Path
    cache: Path  # its FEXSTACK_CACHE
    generated: scaling.Generated
    seeds: tuple[str, ...] = field(default=())

    @property
    def stack_file(self) -> Path:
        return self.root / "stacks" / f"{STACK}.toml"

    @property
    def lock_file(self) -> Path:
        return self.root / "stacks" / f"{STACK}.lock.toml"

    @property
    def image(self) -> Path:
        return self.root / "build" / "overlays" / f"{STACK}.erofs"

    def create(self) -> None:
        """(Re)create the project from nothing, with an empty cache."""
        for path in (self.root, self.cache):
            if path.exists():
                _remove_tree(path)
        stacks = self.root / "stacks"
        (stacks / "bases").mkdir(parents=True)
        self.cache.mkdir(parents=True)
        repo_url = self.generated.repo.resolve().as_uri()
        (stacks / "repos.toml").write_text(
            f"[repos.bench]\nbaseurl = [{_toml_string(repo_url)}]\ngpgcheck = false\n"
        )
        (stacks / "bases" / f"{BASE}.toml").write_text(
            "[base]\n"
            f"image = {_toml_string(str(self.generated.base_image.resolve()))}\n"
            f"packages = {_toml_string(str(self.generated.base_packages.resolve()))}\n"
            'lib_dirs = ["/lib64", "/usr/lib64"]\n'
        )
        self.seeds = self.generated.seeds
        self.write_stack(self.seeds)

    def write_stack(self, seeds: Sequence[str], comment: str = "") -> None:
        self.stack_file.write_text(stack_text(seeds, comment))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FEXSTACK_CACHE"] = str(self.cache)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def doit(self, *args: str, profile: Path | None = None) -> Run:
        """Run ``python3 -m tasks ARGS`` in the project; its wall clock and per-task times."""
        reporter = ["--reporter", "json"] if args and args[0] != "list" else []
        prefix = [sys.executable]
        if profile is not None:
            prefix += ["-m", "cProfile", "-o", str(profile)]
        argv = [*prefix, "-m", "tasks", *reporter, *args]
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sampler = MemorySampler(proc.pid) if RSS["sample"] else None
        stdout, stderr = proc.communicate()
        seconds = time.perf_counter() - started
        peak, peak_pss = sampler.stop() if sampler is not None else (0, 0)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({proc.returncode}) in {self.root}:\n"
                f"{stdout[-4000:]}\n{stderr[-4000:]}"
            )
        return Run(seconds, _task_times(stdout) if reporter else {}, peak, peak_pss)

    def build(self, profile: Path | None = None) -> Run:
        return self.doit(f"overlay:{STACK}", profile=profile)

    def lock_rpms(self) -> list[Path]:
        """The RPM files (in the scale repository) that the current lock names."""
        import tomllib

        lock = tomllib.loads(self.lock_file.read_text())
        files = []
        for pkg in lock["package"]:
            url = urllib.parse.urlparse(pkg["url"])
            if not url.scheme:  # a local repository's package: its location inside it
                files.append(self.generated.repo / urllib.parse.unquote(url.path))
                continue
            files.append(Path(urllib.parse.unquote(url.path)))
        return sorted(files)


@dataclass(frozen=True)
class Run:
    seconds: float
    tasks: Mapping[str, float] = field(default_factory=dict)  # task -> seconds (executed ones)
    peak_rss: int = 0  # bytes: peak of the summed RSS of the whole process tree (0: not sampled)
    peak_pss: int = 0  # bytes: the same with each shared page split among its sharers


RSS = {"sample": False}
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _tree_memory(root: int) -> tuple[int, int]:
    """Resident bytes of ``root`` and all its descendants: summed RSS (a page a forked
    process shares with its parent counts in each) and summed PSS (each shared page split
    among the processes sharing it: what the tree holds in memory)."""
    total = proportional = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE_SIZE
            with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Pss:"):
                        proportional += int(line.split()[1]) * 1024  # kB
                        break
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", "rb") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total, proportional


class MemorySampler:
    """Samples the summed RSS and PSS of a process tree every ``interval`` seconds in a
    thread (see :func:`_tree_memory`)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        import threading

        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.is_set():
            rss, pss = _tree_memory(self.pid)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._done.wait(self.interval)

    def stop(self) -> tuple[int, int]:
        """The peaks: summed RSS, summed PSS (bytes)."""
        self._done.set()
        self._thread.join()
        return self.peak, self.peak_pss


def _task_times(stdout: str) -> dict[str, float]:
    try:
        start = stdout.index("{")
        doc = json.loads(stdout[start:])
    except ValueError:
        return {}
    return {
        t["name"]: round(float(t["elapsed"]), 3)
        for t in doc.get("tasks", [])
        if t.get("result") == "success" and t.get("elapsed") is not None
    }


def _remove_tree(path: Path) -> None:
    for folder, dirs, _ in os.walk(path):
        for name in dirs:
            full = Path(folder, name)
            if not full.is_symlink():
                full.chmod(0o755)
    shutil.rmtree(path)


# -- fexstack scenarios ------------------------------------------------------------------------


@dataclass
class Series:
    """Repeated runs of one scenario."""

    seconds: list[float] = field(default_factory=list)
    tasks: list[Mapping[str, float]] = field(default_factory=list)
    parts: list[Mapping[str, float]] = field(default_factory=list)  # sub-phases (baseline, floor)
    peak_rss: list[int] = field(default_factory=list)
    peak_pss: list[int] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.seconds.append(round(run.seconds, 3))
        self.tasks.append(dict(run.tasks))
        if run.peak_rss:
            self.peak_rss.append(run.peak_rss)
            self.peak_pss.append(run.peak_pss)

    @property
    def median(self) -> float:
        return round(statistics.median(self.seconds), 3)

    def median_of(self, rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
        keys = sorted({k for row in rows for k in row})
        return {k: round(statistics.median(row.get(k, 0.0) for row in rows), 3) for k in keys}

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"median": self.median, "runs": self.seconds}
        if any(self.tasks):
            doc["tasks_median"] = self.median_of(self.tasks)
            doc["outside_tasks_median"] = round(
                statistics.median(
                    s - sum(t.values()) for s, t in zip(self.seconds, self.tasks, strict=True)
                ),
                3,
            )
        if self.parts:
            doc["parts_median"] = self.median_of(self.parts)
        if self.peak_rss:
            doc["peak_rss_bytes"] = max(self.peak_rss)
            doc["peak_pss_bytes"] = max(self.peak_pss)
        return doc


def unjournaled_ext4(path: Path) -> bool:
    """Whether ``path`` is on an ext4 file system without a journal.

    There, creating a file within ``vm.dirty_expire_centisecs`` (30 s) of deleting many
    others is slow: the inode allocator skips every recently deleted inode it finds
    (``recently_deleted()`` in fs/ext4/ialloc.c, checked only without a journal). A
    benchmark that deletes a 30,000-file tree and builds a new one at once measures that
    scan, so :func:`settle` waits it out before each timed run.
    """
    st = os.stat(path)
    block = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    try:
        name = block.resolve().name
        journal = Path("/sys/fs/ext4") / name / "journal_task"
        return journal.exists() and journal.read_text().strip() in ("", "<none>")
    except OSError:
        return False


SETTLE = {"seconds": 0.0}


def settle() -> None:
    """Write back what earlier (untimed) work left dirty, so a timed run pays only for
    its own writes; then, on an ext4 without a journal, wait until deletions made so far
    no longer slow file creation (see above)."""
    os.sync()
    if SETTLE["seconds"] > 0:
        time.sleep(SETTLE["seconds"])


def measure_fexstack(project: BenchProject, cold_runs: int, quick_runs: int) -> dict[str, Series]:
    found = {name: Series() for name in FEXSTACK_SCENARIOS}
    for number in range(cold_runs):
        project.create()
        settle()
        _say(f"fexstack cold build {number + 1}/{cold_runs}")
        found["cold"].add(project.build())
    for number in range(quick_runs):
        _say(f"fexstack no-op rebuild {number + 1}/{quick_runs}")
        found["noop"].add(project.build())
        found["list"].add(project.doit("list"))
    extra = project.generated.extra_seed
    for number in range(quick_runs):
        _say(f"fexstack rebuild after adding seed {extra} {number + 1}/{quick_runs}")
        project.write_stack(project.seeds)
        project.build()
        project.write_stack([*project.seeds, extra])
        settle()
        found["add_seed"].add(project.build())
    project.write_stack(project.seeds)
    project.build()
    for number in range(quick_runs):
        _say(f"fexstack rebuild after a comment edit {number + 1}/{quick_runs}")
        project.write_stack(project.seeds, comment=f"comment edit {number + 1}")
        found["comment"].add(project.build())
    project.write_stack(project.seeds)
    project.build()
    return found


def profile_fexstack(project: BenchProject, folder: Path) -> dict[str, str]:
    """One cold, add_seed, comment and noop build under cProfile; the summaries' paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def profiled(name: str) -> None:
        prof = folder / f"{name}.prof"
        _say(f"profiling {name}")
        project.build(profile=prof)
        (folder / f"{name}.txt").write_text(profile_summary(prof))
        written[name] = str(folder / f"{name}.txt")

    project.create()
    settle()
    profiled("cold")
    profiled("noop")
    project.write_stack([*project.seeds, project.generated.extra_seed])
    settle()
    profiled("add_seed")
    project.write_stack(project.seeds)
    project.build()
    project.write_stack(project.seeds, comment="profiled comment edit")
    profiled("comment")
    return written


def profile_summary(prof: Path, top: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(prof), stream=out)
    stats.strip_dirs()
    out.write("== by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(top)
    out.write("\n== by own time ==\n")
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- the baseline: dnf5 --installroot, prune, mkfs.erofs -------------------------------------------

STATE_PATHS = (
    "var/lib/dnf",
    "var/log/dnf5.log",
    "var/cache/libdnf5",
    "usr/lib/sysimage/libdnf5",
    "usr/lib/sysimage/rpm",
    "run/dnf",
)


def _timed(parts: dict[str, float], name: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        return action()
    finally:
        parts[name] = round(parts.get(name, 0.0) + time.perf_counter() - started, 3)


def _mkfs(tree: Path, image: Path) -> None:
    from overlays.image import MKFS, MKFS_ENV, mkfs_flags

    if image.exists():
        image.unlink()
    flags = mkfs_flags(MKFS_COMPRESSION, f"benchmark {tree.name}")
    os.chmod(tree, 0o755)
    command.run([MKFS, *flags, image, tree], env=dict(MKFS_ENV))


def rpm_dbpath() -> str:
    return command.output(["rpm", "--eval", "%{_dbpath}"]).strip()


def prune(root: Path) -> None:
    """Remove what dnf5 and rpm left that is not package payload, and emptied folders."""
    for rel in (*STATE_PATHS, rpm_dbpath().lstrip("/")):
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for top in ("var", "run", "usr/lib/sysimage", "usr/lib", "usr/share", "etc"):
        _remove_empty_dirs(root / top)


def _remove_empty_dirs(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for child in list(path.iterdir()):
        _remove_empty_dirs(child)
    if not any(path.iterdir()):
        path.rmdir()


def baseline_once(generated: scaling.Generated, seeds: Sequence[str], work: Path) -> Run:
    """One cold baseline build; its parts are in :attr:`Run.tasks`."""
    if work.exists():
        _remove_tree(work)
    root = work / "root"
    dnfcache = work / "dnfcache"
    empty = work / "reposdir"
    for folder in (root, dnfcache, empty):
        folder.mkdir(parents=True)
    parts: dict[str, float] = {}
    started = time.perf_counter()

    def base_rpmdb() -> None:
        command.run(["rpm", "--root", root, "--initdb"])
        command.run(
            [
                "rpm",
                "--root",
                root,
                "-i",
                "--justdb",
                "--nodeps",
                "--noscripts",
                "--notriggers",
                "--ignorearch",
                "--ignoreos",
                "--ignoresize",
                *generated.base_rpms,
            ]
        )

    def install() -> None:
        command.run(
            [
                "dnf5",
                f"--installroot={root}",
                "--forcearch=x86_64",
                f"--releasever={RELEASE}",
                f"--setopt=reposdir={empty}",
                "--no-plugins",
                f"--repofrompath=bench,{generated.repo.resolve().as_uri()}",
                "--repo=bench",
                "--no-gpgchecks",
                "--setopt=install_weak_deps=False",
                "--setopt=tsflags=noscripts",
                f"--setopt=cachedir={dnfcache}",
                f"--setopt=system_cachedir={dnfcache}",
                "--assumeyes",
                "--quiet",
                "install",
                *seeds,
            ],
            hint="dnf5 could not install the benchmark seeds",
        )

    _timed(parts, "rpmdb_base", base_rpmdb)
    _timed(parts, "dnf5_install", install)
    _timed(parts, "prune", lambda: prune(root))
    _timed(parts, "mkfs", lambda: _mkfs(root, work / "baseline.erofs"))
    return Run(time.perf_counter() - started, parts)


def measure(
    label: str, once: Callable[[], Any], work: Path, runs: int, tree: str
) -> tuple[Series, dict[str, int]]:
    """``runs`` timed runs of ``once`` (the baseline's or the floor's), each from an empty
    ``work`` folder; the counts of ``work/tree`` after the last run."""
    series = Series()
    for number in range(runs):
        if work.exists():
            _remove_tree(work)
        settle()
        _say(f"{label} {number + 1}/{runs}")
        run = once()
        series.seconds.append(round(run.seconds, 3))
        series.parts.append(dict(run.tasks))
    return series, tree_counts(work / tree)


# -- the floor: decompress every payload once, mkfs.erofs ------------------------------------------


def floor_once(rpms: Sequence[Path], work: Path, workers: int) -> Run:
    if work.exists():
        _remove_tree(work)
    tree = work / "tree"
    tree.mkdir(parents=True)
    parts: dict[str, float] = {}
    started = time.perf_counter()

    def extract_all() -> None:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda r: command.run(["bsdtar", "-xf", r, "-C", tree]), rpms))

    _timed(parts, "extract", extract_all)
    _timed(parts, "mkfs", lambda: _mkfs(tree, work / "floor.erofs"))
    return Run(time.perf_counter() - started, parts)


# -- the Fedora recipe: rpm2archive of every RPM, one mkfs.erofs --tar=f ---------------------------

TAR_BLOCK = 512
NO_DATA_TYPES = frozenset(b"123456")  # links, devices, folders, fifos: no data blocks


def tar_members(stream: bytes) -> memoryview:
    """``stream`` (one tar archive) without its end-of-archive blocks and record padding.

    Walks the headers (each followed by its size rounded up to whole blocks; pax and GNU
    long-name headers carry their data the same way) up to the first all-zero header.
    """
    view = memoryview(stream)
    offset = 0
    while offset + TAR_BLOCK <= len(view):
        header = view[offset : offset + TAR_BLOCK]
        if not any(header):
            break
        field = bytes(header[124:136])
        if field[0] & 0x80:  # base-256
            size = int.from_bytes(field[1:], "big")
        else:
            size = int(field.rstrip(b"\0 ").decode() or "0", 8)
        if header[156] in NO_DATA_TYPES:
            size = 0
        offset += TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK
    return view[:offset]


def fedora_once(rpms: Sequence[Path], work: Path, workers: int, uuid_seed: str) -> Run:
    """rpm2archive every RPM (``workers`` at a time), one mkfs.erofs --tar=f over the lot."""
    from overlays.image import MKFS, MKFS_ENV, mkfs_flags

    if work.exists():
        _remove_tree(work)
    work.mkdir(parents=True)
    image = work / "fedora.erofs"
    flags = [f for f in mkfs_flags(MKFS_COMPRESSION, uuid_seed) if f != "--hard-dereference"]
    parts: dict[str, float] = {}
    started = time.perf_counter()

    def archive(rpm: Path) -> bytes:
        with rpm.open("rb") as fh:
            proc = subprocess.run(["rpm2archive", "-n", "-"], stdin=fh, capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"rpm2archive {rpm} failed: {proc.stderr.decode()[-2000:]}")
        return proc.stdout

    env = {**os.environ, **MKFS_ENV}
    mkfs = subprocess.Popen([MKFS, *flags, "--tar=f", str(image)], stdin=subprocess.PIPE, env=env)
    assert mkfs.stdin is not None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for stream in pool.map(archive, rpms):
            mkfs.stdin.write(tar_members(stream))
    mkfs.stdin.write(bytes(2 * TAR_BLOCK))
    mkfs.stdin.close()
    if mkfs.wait() != 0:
        raise RuntimeError(f"mkfs.erofs --tar=f failed ({mkfs.returncode})")
    seconds = time.perf_counter() - started
    parts["rpm2archive_and_mkfs"] = round(seconds, 3)
    # Untimed: unpack the image so that its counts can be compared with the others'.
    command.run(["fsck.erofs", f"--extract={work / 'tree'}", "--no-preserve-owner", image])
    return Run(seconds, parts)


def payload(path: Path) -> bytes:
    """The compressed payload of an RPM (after the lead, signature and main headers)."""
    data = path.read_bytes()
    offset = 96
    for padded in (True, False):
        if data[offset : offset + 3] != b"\x8e\xad\xe8":
            raise ValueError(f"{path}: no RPM header at {offset}")
        count, size = struct.unpack(">II", data[offset + 8 : offset + 16])
        offset += 16 + 16 * count + size
        if padded:
            offset += -offset % 8
    return data[offset:]


def decompress_only(rpms: Sequence[Path]) -> dict[str, float]:
    """Seconds to zstd-decompress every payload once in one thread (nothing written)."""
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]

    blobs = [payload(p) for p in rpms]
    started = time.perf_counter()
    total = 0
    for blob in blobs:
        total += len(zstd.decompress(blob))
    return {"seconds": round(time.perf_counter() - started, 3), "cpio_bytes": total}


def tree_counts(root: Path) -> dict[str, int]:
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "file_bytes": 0}
    for folder, dirs, files in os.walk(root):
        counts["dirs"] += len(dirs)
        for name in files:
            full = Path(folder, name)
            if full.is_symlink():
                counts["symlinks"] += 1
            else:
                counts["files"] += 1
                counts["file_bytes"] += full.lstat().st_size
        for name in dirs:
            if Path(folder, name).is_symlink():
                counts["symlinks"] += 1
                counts["dirs"] -= 1
    return counts


# -- machine facts, ratios, report -----------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import libdnf5

        version = libdnf5.utils.get_library_version()
        libdnf5_version = f"{version.get_major()}.{version.get_minor()}.{version.get_micro()}"
    except Exception:  # a fact, not a requirement
        libdnf5_version = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tools": {
            "dnf5": command.tool_version(["dnf5", "--version"]),
            "libdnf5": libdnf5_version,
            "rpm": command.tool_version(["rpm", "--version"]),
            "mkfs.erofs": command.tool_version(["mkfs.erofs", "--version"]),
            "bsdtar": command.tool_version(["bsdtar", "--version"]),
            "doit": command.tool_version([sys.executable, "-m", "doit", "--version"]),
        },
    }


def revision() -> str:
    """The clone's commit (``git describe --always --dirty`` when git is there)."""
    if command.which("git") is not None:
        proc = command.run(
            ["git", "-C", PROJECT_ROOT, "describe", "--always", "--dirty"], check=False
        )
        text = (proc.stdout or b"").decode().strip()
        if proc.returncode == 0 and text:
            return text
    try:
        head = (PROJECT_ROOT / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            return (PROJECT_ROOT / ".git" / head[5:]).read_text().strip()[:12] + " (dirty unknown)"
        return head[:12]
    except OSError:
        return "unknown"


def ratios(medians: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (num, den, limit) in TARGETS.items():
        if num in medians and den in medians and medians[den] > 0:
            value = round(medians[num] / medians[den], 3)
            out[name] = {"ratio": value, "limit": limit, "met": value <= limit}
    return out


def render(doc: Mapping[str, Any]) -> str:
    lines = [
        f"scale {doc['scale']['name']}: {doc['scale_stats']['packages']} packages "
        f"({doc['fexstack_tree'].get('files', '?')} files in the overlay, "
        f"{doc['scale_stats']['unpacked_bytes'] / 1e6:.0f} MB unpacked in the repo)",
        f"machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
        f"{doc['machine']['memory_bytes'] / 2**30:.1f} GiB, kernel {doc['machine']['kernel']}",
        "",
        f"{'figure':<28}{'median s':>10}   runs",
    ]
    for name, figure in doc["figures"].items():
        runs = ", ".join(f"{s:.2f}" for s in figure["runs"])
        lines.append(f"{name:<28}{figure['median']:>10.2f}   {runs}")
        for label in ("tasks_median", "parts_median"):
            for part, seconds in figure.get(label, {}).items():
                lines.append(f"    {part:<24}{seconds:>10.2f}")
        if "peak_rss_bytes" in figure:
            lines.append(f"    {'(peak RSS, MiB)':<24}{figure['peak_rss_bytes'] / 2**20:>10.0f}")
            lines.append(f"    {'(peak PSS, MiB)':<24}{figure['peak_pss_bytes'] / 2**20:>10.0f}")
        if "outside_tasks_median" in figure:
            lines.append(f"    {'(outside tasks)':<24}{figure['outside_tasks_median']:>10.2f}")
    if "floor_decompress_only" in doc:
        d = doc["floor_decompress_only"]
        lines.append(f"{'floor_decompress_only':<28}{d['seconds']:>10.2f}   (1 thread, no writes)")
    lines += ["", f"{'ratio':<28}{'value':>10}{'target':>10}   met"]
    for name, r in doc["ratios"].items():
        lines.append(f"{name:<28}{r['ratio']:>10.3f}{'<= ' + str(r['limit']):>10}   {r['met']}")
    if "peak_rss" in doc:
        peak = doc["peak_rss"]
        lines.append(
            f"{'peak_rss_MiB':<28}{peak['bytes'] / 2**20:>10.0f}{'< 1024':>10}   {peak['met']}"
        )
        lines.append(f"{'peak_pss_MiB':<28}{peak['pss_bytes'] / 2**20:>10.0f}")
    extra = doc.get("other_ratios", {})
    for name, value in extra.items():
        lines.append(f"{name:<28}{value:>10.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="fexstack build benchmark against dnf5 --installroot and the floor"
    )
    parser.add_argument("--scale", choices=sorted(scaling.SCALES), default="medium")
    parser.add_argument("--cold-runs", type=int, default=3, help="runs of cold, baseline, floor")
    parser.add_argument("--quick-runs", type=int, default=5, help="runs of the other figures")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch folder (default /tmp/fexstack-bench/<scale>)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where scale repositories are kept (default <fexstack cache>/bench)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default benchmarks/results-<scale>.json)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also profile one build of each kind into this folder",
    )
    parser.add_argument(
        "--only",
        choices=("fexstack", "baseline", "fedora", "floor"),
        action="append",
        help="measure only these contenders (repeatable; default all)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir afterwards")
    parser.add_argument(
        "--rss",
        action="store_true",
        help="sample the peak RSS of each fexstack build's whole process tree (every 20 ms)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds to wait before each cold/add_seed/baseline/floor run (default: 35 on an "
        "ext4 without a journal, where recent mass deletions slow file creation; else 0)",
    )
    args = parser.parse_args(argv)
    results = run_benchmark(
        scaling.SCALES[args.scale],
        cold_runs=args.cold_runs,
        quick_runs=args.quick_runs,
        workdir=args.workdir or Path("/tmp/fexstack-bench") / args.scale,
        cache_dir=args.cache_dir,
        profile=args.profile,
        only=tuple(args.only or ("fexstack", "baseline", "fedora", "floor")),
        rss=args.rss,
        keep=args.keep,
        settle_seconds=args.settle,
        command_line=" ".join(["python3 -m benchmarks.build_bench", *(argv or sys.argv[1:])]),
    )
    out = args.out or PROJECT_ROOT / "benchmarks" / f"results-{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    print(render(results))
    print(f"\nwritten: {out}")
    return 0


def run_benchmark(
    scale: scaling.Scale,
    *,
    cold_runs: int,
    quick_runs: int,
    workdir: Path,
    cache_dir: Path | None = None,
    profile: Path | None = None,
    only: Sequence[str] = ("fexstack", "baseline", "fedora", "floor"),
    keep: bool = False,
    rss: bool = False,
    settle_seconds: float | None = None,
    command_line: str | None = None,
) -> dict[str, Any]:
    """Generate (or reuse) the scale repository and measure; the results document."""
    generated = scaling.generate(scale, cache=cache_dir)
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    unjournaled = unjournaled_ext4(workdir)
    if settle_seconds is None:
        settle_seconds = 35.0 if unjournaled else 0.0
    SETTLE["seconds"] = settle_seconds
    RSS["sample"] = rss
    project = BenchProject(workdir / "project", workdir / "fexstack-cache", generated)
    figures: dict[str, Series] = {}
    started = datetime.datetime.now(datetime.UTC)
    # Every contender needs the lock's package set: one fexstack build makes it.
    if "fexstack" in only:
        figures.update(measure_fexstack(project, cold_runs, quick_runs))
    else:
        project.create()
        project.build()
    rpms = project.lock_rpms()
    fexstack_tree = _manifest_counts(project)
    doc: dict[str, Any] = {
        "format": 1,
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line,
        "fexstack_revision": revision(),
        "workdir": str(workdir),
        "workdir_unjournaled_ext4": unjournaled,
        "settle_seconds": settle_seconds,
        "scale": asdict(scale),
        "scale_stats": generated.stats,
        "seeds": len(generated.seeds),
        "extra_seed": generated.extra_seed,
        "locked_packages": len(rpms),
        "locked_rpm_bytes": sum(p.stat().st_size for p in rpms),
        "fexstack_tree": fexstack_tree,
        "machine": machine_facts(),
    }
    if "baseline" in only:
        work = workdir / "baseline"
        series, counts = measure(
            "baseline (dnf5 --installroot + mkfs.erofs)",
            lambda: baseline_once(generated, project.seeds, work),
            work,
            cold_runs,
            "root",
        )
        figures["baseline"] = series
        doc["baseline_tree"] = counts
    if "fedora" in only:
        work = workdir / "fedora"
        series, counts = measure(
            "fedora recipe (rpm2archive + mkfs.erofs --tar=f)",
            lambda: fedora_once(rpms, work, os.cpu_count() or 1, "benchmark fedora"),
            work,
            cold_runs,
            "tree",
        )
        figures["fedora"] = series
        doc["fedora_tree"] = counts
    if "floor" in only:
        workers = os.cpu_count() or 1
        work = workdir / "floor"
        series, counts = measure(
            "floor (decompress every payload + mkfs.erofs)",
            lambda: floor_once(rpms, work, workers),
            work,
            cold_runs,
            "tree",
        )
        figures["floor"] = series
        doc["floor_tree"] = counts
        doc["floor_decompress_only"] = decompress_only(rpms)
    doc["figures"] = {name: s.summary() for name, s in figures.items() if s.seconds}
    medians = {name: s.median for name, s in figures.items() if s.seconds}
    if "baseline" in medians and "fedora" in medians:
        medians["faster_baseline"] = min(medians["baseline"], medians["fedora"])
        doc["faster_baseline"] = (
            "baseline" if medians["baseline"] <= medians["fedora"] else "fedora"
        )
    if "cold" in figures and figures["cold"].seconds and "floor" in figures:
        # The image step against mkfs.erofs alone on the same tree (the floor's mkfs part).
        medians["image"] = (
            figures["cold"].median_of(figures["cold"].tasks).get(f"image:{STACK}", 0.0)
        )
        medians["mkfs_alone"] = figures["floor"].median_of(figures["floor"].parts).get("mkfs", 0.0)
    doc["ratios"] = ratios(medians)
    other = {}
    if "comment" in medians and "cold" in medians:
        other["comment_vs_cold"] = round(medians["comment"] / medians["cold"], 3)
    if "floor" in medians and "baseline" in medians:
        other["baseline_vs_floor"] = round(medians["baseline"] / medians["floor"], 3)
    doc["other_ratios"] = other
    peaks = [p for s in figures.values() for p in s.peak_rss]
    if peaks:
        doc["peak_rss"] = {
            "bytes": max(peaks),
            "pss_bytes": max(p for s in figures.values() for p in s.peak_pss),
            "limit": PEAK_RSS_LIMIT,
            "met": max(peaks) < PEAK_RSS_LIMIT,
        }
    if profile is not None and "fexstack" in only:
        doc["profiles"] = profile_fexstack(project, profile.absolute())
    if not keep:
        for sub in ("baseline", "fedora", "floor"):
            if (workdir / sub).exists():
                _remove_tree(workdir / sub)
    return doc


def _manifest_counts(project: BenchProject) -> dict[str, Any]:
    from fexstack.errors import ImageError
    from overlays.manifest import read_manifest

    try:
        counts: dict[str, Any] = asdict(
            read_manifest(project.image.with_suffix(".manifest.json")).counts
        )
    except ImageError:  # not built (or not by this fexstack): no counts to report
        return {}
    counts["image_bytes"] = project.image.stat().st_size
    return counts


if __name__ == "__main__":
    sys.exit(main())
