"""The build lock also holds for a doit that loads dodo.py (``doit -f path/to/dodo.py``),
which does not go through tasks/loader.py: two such builds of one project serialize,
``doit -n N`` workers work under their parent's lock, and ``list``/``info`` take none.

Real doit processes on a throwaway project (tests/pipeline_support.py) with a dodo.py
like the checkout's. A lock held by another process is held by a helper process, a
sibling of the builds (a build started by the lock's holder would work under its lock).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fexstack import buildlock
from overlays.manifest import validate_against_manifest
from testkit.factory import Factory
from tests import pipeline_support as ps

DODO = """\
from pathlib import Path

from tasks.creators import namespace

ROOT = Path(__file__).resolve().parent
(ROOT / "build").mkdir(exist_ok=True)
globals().update(namespace(ROOT))
"""
WAITING = "another build is running in this project"
STEPS = ("compat:fixture", "lock:app", "fetch:app", "stage:app", "check:app", "image:app")


@pytest.fixture(scope="module")
def fixtures(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> ps.Fixtures:
    return ps.make_fixtures(factory, tmp_path_factory.mktemp("buildlock-fixtures"))


@pytest.fixture
def project(tmp_path: Path, fixtures: ps.Fixtures) -> ps.Project:
    made = ps.new_project(tmp_path, fixtures)
    (made.root / "dodo.py").write_text(DODO)
    return made


class Doit:
    """A ``doit -f dodo.py`` process of the project, its output collected as it comes."""

    def __init__(self, project: ps.Project, *args: str) -> None:
        self.args = list(args)
        argv = [sys.executable, "-m", "doit", "-f", str(project.root / "dodo.py"), *args]
        self.proc = subprocess.Popen(
            argv, cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(self.proc.stdout)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.text:
            assert self.proc.poll() is None or what in self.text, self.text
            assert time.monotonic() < deadline, f"no {what!r} in:\n{self.text}"
            time.sleep(0.02)

    def finish(self, timeout: float = 180) -> ps.DoitRun:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return ps.DoitRun(self.args, code, self.text, "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def doits() -> Iterator[list[Doit]]:
    started: list[Doit] = []
    yield started
    for doit in started:  # a failed test leaves nothing running
        doit.kill()


def lock_holder(build: Path) -> str:
    lock = build / buildlock.LOCK_NAME
    return lock.read_text().strip() if lock.is_file() else ""


def hold_elsewhere(project: ps.Project) -> subprocess.Popen[str]:
    """The project's build lock, held by a helper process (not an ancestor of the builds)."""
    code = ("import sys; from pathlib import Path; from fexstack import buildlock; "
            f"buildlock.acquire(Path({str(project.build)!r})); print('held', flush=True); "
            "sys.stdin.read()")  # fmt: skip
    helper = subprocess.Popen([sys.executable, "-c", code], env=project.env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert helper.stdout is not None and helper.stdout.readline() == "held\n"
    return helper


@pytest.fixture
def held_elsewhere(project: ps.Project) -> Iterator[subprocess.Popen[str]]:
    helper = hold_elsewhere(project)
    yield helper
    if helper.poll() is None:
        helper.kill()
        helper.wait()


def release(helper: subprocess.Popen[str]) -> None:
    assert helper.stdin is not None
    helper.stdin.close()
    assert helper.wait(timeout=30) == 0


def test_two_dodo_builds_of_one_project_serialize(project: ps.Project, doits: list[Doit]) -> None:
    first = Doit(project, "-n", "2", "overlay:app")
    doits.append(first)
    deadline = time.monotonic() + 60
    while lock_holder(project.build) != f"pid {first.proc.pid}":
        assert first.proc.poll() is None, first.text
        assert time.monotonic() < deadline, f"the first build never took the lock:\n{first.text}"
        time.sleep(0.01)
    os.killpg(first.proc.pid, signal.SIGSTOP)  # the first build holds the lock and waits
    try:
        second = Doit(project, "overlay:app")
        doits.append(second)
        second.wait_for(WAITING)
        assert f"(pid {first.proc.pid})" in second.text  # it says who holds the lock
        time.sleep(1)
        assert second.proc.poll() is None  # still waiting
        assert ".  " not in second.text  # and it ran nothing
    finally:
        os.killpg(first.proc.pid, signal.SIGCONT)
    one = first.finish()
    two = second.finish()
    assert one.returncode == 0, one.output
    assert all(one.ran(step) for step in STEPS), one.output  # -n 2 workers did not deadlock
    assert two.returncode == 0, two.output
    assert "build lock acquired" in two.stdout
    # it read the task states after the first build ended: nothing left to do
    assert two.executed == [] and all(two.skipped(step) for step in STEPS), two.output
    validate_against_manifest(project.image("app"), project.manifest("app"))


def test_a_dodo_build_waits_for_a_held_lock(
    project: ps.Project, held_elsewhere: subprocess.Popen[str], doits: list[Doit]
) -> None:
    build = Doit(project, "overlay:app")
    doits.append(build)
    build.wait_for(WAITING)
    time.sleep(1)
    assert build.proc.poll() is None and not project.image("app").exists()
    release(held_elsewhere)
    run = build.finish()
    assert run.returncode == 0 and all(run.ran(step) for step in STEPS), run.output
    assert "build lock acquired" in run.stdout


def test_steps_take_the_lock_whatever_the_reporter(
    project: ps.Project, held_elsewhere: subprocess.Popen[str], doits: list[Doit]
) -> None:
    """Another reporter than fexstack's (which takes the lock first): each step's action
    still takes it before it changes anything."""
    build = Doit(project, "--reporter", "executed-only", "-n", "2", "overlay:app")
    doits.append(build)
    build.wait_for(WAITING)
    time.sleep(1)
    assert build.proc.poll() is None
    assert not project.lock("app").exists() and not project.image("app").exists()
    release(held_elsewhere)
    run = build.finish()
    assert run.returncode == 0, run.output
    validate_against_manifest(project.image("app"), project.manifest("app"))


def test_list_and_info_take_no_lock(
    project: ps.Project, held_elsewhere: subprocess.Popen[str], doits: list[Doit]
) -> None:
    listing = Doit(project, "list")
    doits.append(listing)
    listed = listing.finish(timeout=60)
    info = Doit(project, "info", "image:app")
    doits.append(info)
    told = info.finish(timeout=60)
    # info exits 1 for a task that is not up to date: it read the task's state all the same
    assert listed.returncode == 0 and told.returncode == 1, listed.output + told.output
    assert "targets do not exist" in told.stdout
    assert WAITING not in listed.stdout + told.stdout
    assert "image:app" in listed.stdout and "image:app" in told.stdout
    assert held_elsewhere.poll() is None  # the lock was held all along


def test_clean_waits_for_the_build_lock(project: ps.Project, doits: list[Doit]) -> None:
    """``doit -f dodo.py clean`` removes nothing while another process holds the lock (its
    clean actions take it); its dry run lists what it would remove and takes no lock."""
    built = Doit(project, "overlay:app")
    doits.append(built)
    assert built.finish().returncode == 0, built.text
    outputs = [project.image("app"), project.manifest("app"), project.build / "app",
               project.build / "compat"]
    assert all(path.exists() for path in outputs)
    helper = hold_elsewhere(project)
    try:
        dry = Doit(project, "clean", "--dry-run", "--clean-dep", "overlay:app")
        doits.append(dry)
        said = dry.finish(timeout=60)
        assert said.returncode == 0 and WAITING not in said.output, said.output
        assert f"image:app - removing file '{project.image('app')}'" in said.output
        assert all(path.exists() for path in outputs)
        clean = Doit(project, "clean", "--clean-dep", "overlay:app")
        doits.append(clean)
        clean.wait_for(WAITING)
        time.sleep(1)
        assert clean.proc.poll() is None
        assert all(path.exists() for path in outputs)  # it waits before removing anything
        release(helper)
        cleaned = clean.finish(timeout=60)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    assert cleaned.returncode == 0, cleaned.output
    assert "build lock acquired" in cleaned.output
    # as before: targets removed as doit's "clean": True does, the overlay's folders too
    assert "compat:fixture - removing file '" in cleaned.output, cleaned.output
    assert not project.image("app").exists() and not project.manifest("app").exists()
    assert not (project.build / "app").exists()
    assert not (project.build / "compat" / "fixture.json").exists()  # the compat record
    assert project.lock("app").exists()  # a source: clean leaves it


def in_a_child(expression: str) -> str:
    code = f"from pathlib import Path; from fexstack import buildlock; print({expression})"
    env = dict(os.environ, PYTHONPATH=str(ps.CHECKOUT))
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env=env)  # fmt: skip
    return child.stdout.strip()


def holder_is_ancestor_in_a_child(build: Path) -> bool:
    said = in_a_child(f"buildlock.holder_is_ancestor(Path({str(build)!r}))")
    return {"True": True, "False": False}[said]


def test_a_child_of_the_holder_works_under_its_lock(tmp_path: Path) -> None:
    mine = buildlock.ancestors()
    assert mine == ([os.getppid(), *buildlock.ancestors(os.getppid())] if os.getppid() else [])
    assert in_a_child("buildlock.ancestors()") == str([os.getpid(), *mine])
    assert not buildlock.holder_is_ancestor(tmp_path)  # no lock file yet
    assert buildlock.acquire(tmp_path, wait=False)
    try:
        assert holder_is_ancestor_in_a_child(tmp_path)
        assert not buildlock.holder_is_ancestor(tmp_path)  # not an ancestor of itself
    finally:
        buildlock.release()
    assert not holder_is_ancestor_in_a_child(tmp_path)  # released: nobody holds it


def test_hold_takes_the_lock_for_the_block_only(tmp_path: Path) -> None:
    with buildlock.hold(tmp_path):
        assert buildlock.held()
    assert not buildlock.held()
    assert buildlock.acquire(tmp_path, wait=False)
    try:
        with buildlock.hold(tmp_path):
            assert buildlock.held()
        assert buildlock.held()  # held before: still held
    finally:
        buildlock.release()
