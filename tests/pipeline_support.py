"""Helpers of tests/test_pipeline.py and tests/test_build_command.py.

A throwaway fexstack project: ``stacks/`` pointing at a fixture repository (a soname
chain and glibc built by the fixture factory) and a fixture base (a directory tree with
a kiwi package list). ``python3 -m tasks`` (doit with fexstack's tasks) runs as a
subprocess in it, with its own cache, and its output is parsed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testkit.factory import (
    Factory,
    File,
    Library,
    Package,
    base_tree,
    glibc_package,
    write_kiwi_packages,
)

CHECKOUT = Path(__file__).resolve().parent.parent

A_LIB = Library("libpipe-a.so.1", path="/usr/lib64/libpipe-a.so.1.0")
B_LIB = Library("libpipe-b.so.1", path="/usr/lib64/libpipe-b.so.1.0", needs=("libpipe-a.so.1",))
C_LIB = Library("libpipe-c.so.1", path="/usr/lib64/libpipe-c.so.1.0", needs=("libpipe-b.so.1",))
EXTRA_LIB = Library("libpipe-extra.so.1", needs=("libpipe-a.so.1",))
OTHER_LIB = Library("libpipe-other.so.1")

PIPE_A = Package("pipe-a", summary="bottom of the chain", contents=(A_LIB,))
PIPE_B = Package("pipe-b", summary="middle of the chain", contents=(B_LIB,))
PIPE_C = Package("pipe-c", summary="top of the chain", contents=(C_LIB,))
PIPE_EXTRA = Package("pipe-extra", summary="a seed added later", contents=(EXTRA_LIB,))
PIPE_OTHER = Package("pipe-other", summary="the second stack's seed", contents=(OTHER_LIB,))
# An executable: a deps overlay leaves it out (the FEX RootFS's rule), or keeps it on request.
PIPE_TOOL = Package(
    "pipe-tool",
    summary="a command",
    contents=(File("/usr/bin/pipe-tool", b"#!/bin/sh\necho tool\n", 0o755),),
    autoreq=False,
)

# A file over one of the base's (invariant C, precedence): its check fails.
PIPE_CLASH = Package(
    "pipe-clash",
    summary="a configuration file the base owns",
    contents=(File("/etc/ld.so.conf", b"include pipe.d/*.conf\n"),),
    autoreq=False,
)

# An old third-party package: its library in /lib64, its tool in /bin.
PIPE_OLD = Package(
    "pipe-old",
    summary="a vendor RPM from before the /usr merge",
    contents=(
        Library("libpipe-old.so.1", path="/lib64/libpipe-old.so.1"),
        File("/bin/pipe-old-tool", b"an old tool\n", 0o755),
    ),
)

OVERLAY_PACKAGES = (
    PIPE_A, PIPE_B, PIPE_C, PIPE_EXTRA, PIPE_OTHER, PIPE_TOOL, PIPE_CLASH, PIPE_OLD
)


@dataclass(frozen=True)
class Fixtures:
    """What every project of a test module shares (built once)."""

    repo: Path
    base_dir: Path  # a directory base: glibc only, no /lib64 (a compat overlay is needed)
    other_base_dir: Path  # the same packages with a /lib64 symlink (no compat needed)
    packages: Path  # kiwi list of the base


def make_fixtures(factory: Factory, where: Path) -> Fixtures:
    glibc = glibc_package()
    factory.register(A_LIB, B_LIB)
    repo = factory.repo(where / "repo", [glibc, *OVERLAY_PACKAGES])
    base = base_tree(where / "base", [glibc], factory=factory)
    other = base_tree(where / "base-lib64", [glibc], lib64_symlink=True, factory=factory)
    for tree in (base, other):
        tree.chmod(0o755)
    packages = write_kiwi_packages(where / "base.packages", [glibc])
    return Fixtures(repo=repo, base_dir=base, other_base_dir=other, packages=packages)


def stack_toml(
    *, description: str = "fixture stack", seeds: Mapping[str, str], base: str = "fixture",
    comment: str = "",
) -> str:
    lines = [f"# {comment}"] if comment else []
    lines += [
        "[stack]",
        f'description = "{description}"',
        'class = "deps"',
        f'base = "{base}"',
        "",
        "[source]",
        'release = "1"',
        'repos = ["fixture"]',
        "",
        "[seeds]",
        *(f'{name} = "{reason}"' for name, reason in seeds.items()),
        "",
    ]
    return "\n".join(lines)


def base_toml(image: Path, packages: Path, *, comment: str = "") -> str:
    head = f"# {comment}\n" if comment else ""
    return f'{head}[base]\nimage = "{image}"\npackages = "{packages}"\n'


@dataclass
class Project:
    """A throwaway fexstack project and the environment its doit runs in."""

    root: Path
    cache: Path
    fixtures: Fixtures

    @property
    def stacks(self) -> Path:
        return self.root / "stacks"

    @property
    def build(self) -> Path:
        return self.root / "build"

    def image(self, name: str) -> Path:
        return self.build / "overlays" / f"{name}.erofs"

    def manifest(self, name: str) -> Path:
        return self.build / "overlays" / f"{name}.manifest.json"

    def lock(self, name: str) -> Path:
        return self.stacks / f"{name}.lock.toml"

    def write_stack(self, name: str, **kwargs: object) -> Path:
        path = self.stacks / f"{name}.toml"
        path.write_text(stack_toml(**kwargs))  # type: ignore[arg-type]
        return path

    def write_base(self, image: Path | None = None, *, comment: str = "") -> Path:
        path = self.stacks / "bases" / "fixture.toml"
        path.write_text(
            base_toml(image or self.fixtures.base_dir, self.fixtures.packages, comment=comment)
        )
        return path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FEXSTACK_CACHE"] = str(self.cache)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(CHECKOUT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tasks", *args]

    def doit(self, *args: str, check: bool = True, timeout: float = 180) -> DoitRun:
        proc = subprocess.run(
            self.argv(*args),
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        run = DoitRun(list(args), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed:\n{run.output}")
        return run

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start doit in its own process group (so a test can kill all of it)."""
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def new_project(where: Path, fixtures: Fixtures, *, stacks: Sequence[str] = ("app",)) -> Project:
    """A project with one stack per name (seed pipe-c, or pipe-other for a second stack)."""
    root = where / "project"
    (root / "stacks" / "bases").mkdir(parents=True)
    (root / "stacks" / "repos.toml").write_text(
        f'[repos.fixture]\nbaseurl = ["{fixtures.repo}"]\ngpgcheck = false\n'
    )
    project = Project(root, where / "cache", fixtures)
    project.write_base()
    for index, name in enumerate(stacks):
        seed = {"pipe-c": "the app links libpipe-c.so.1"} if index == 0 else {
            "pipe-other": "the other app links libpipe-other.so.1"
        }
        project.write_stack(name, seeds=seed)
    return project


@dataclass
class DoitRun:
    """A finished doit process and the tasks its output says it ran or skipped."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    executed: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for line in self.stdout.splitlines():
            if line.startswith(".  "):
                self.executed.append(line[3:].strip())
            elif line.startswith("-- "):
                self.up_to_date.append(line[3:].strip())

    @property
    def output(self) -> str:
        return f"$ doit {' '.join(self.args)} (exit {self.returncode})\n{self.stdout}{self.stderr}"

    def ran(self, task: str) -> bool:
        return task in self.executed

    def skipped(self, task: str) -> bool:
        return task in self.up_to_date


def kill_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], *, timeout: float = 120
) -> bool:
    """SIGKILL ``proc``'s whole process group as soon as ``ready()``; False if it never was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return False


def temp_entries(folder: Path, prefix: str) -> list[Path]:
    """``.tmp-<prefix>...`` entries in ``folder`` (what an interrupted atomic write leaves)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".tmp-{prefix}"))
