"""The embedded demo end to end, through doit, in a throwaway copy of the project.

The copy holds stacks/ (``python3 -m tasks`` runs doit with fexstack's tasks there); the
demo's sources (demo/) are read from this repository through
fexstack.paths.PROJECT_ROOT, and everything generated (repo, base, AppImage, overlays,
evidence) lands in the copy. The copy's stacks have no demo.lock.toml: the lock is made
afresh from the copy's own demo repository (a lock names locations inside its local
repository, so a committed one would fetch there too). One project is built per module;
each run gets its own FEXSTACK_CACHE."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from fexstack.paths import PROJECT_ROOT
from overlays import lockfile
from overlays.validator import validate_image
from tests.test_muvm import FAKE_DIR, FAKE_MUVM, launches

DOIT_TIMEOUT = 600
EVIDENCE_LINE = re.compile(r"^evidence: (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Doit:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def evidence_dir(self) -> Path:
        found = EVIDENCE_LINE.findall(self.stdout)
        assert len(found) == 1, self.output
        return Path(found[0].strip())


def doit(project: Path, *args: str, cache: Path, **env: str) -> Doit:
    full = dict(os.environ)
    full["PYTHONPATH"] = str(PROJECT_ROOT)
    full["FEXSTACK_CACHE"] = str(cache)
    for key in ("FEXSTACK_MUVM", "FAKE_MUVM_ARGV_LOG", "DISPLAY", "WAYLAND_DISPLAY"):
        full.pop(key, None)
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "tasks", *args],
        cwd=project,
        env=full,
        capture_output=True,
        text=True,
        timeout=DOIT_TIMEOUT,
        check=False,
    )
    return Doit(proc.returncode, proc.stdout, proc.stderr)


def copy_project(dest: Path, *, keep_lock: bool = False) -> Path:
    dest.mkdir(parents=True)
    shutil.copytree(PROJECT_ROOT / "stacks", dest / "stacks", symlinks=True)
    if not keep_lock:
        (dest / "stacks" / "demo.lock.toml").unlink(missing_ok=True)
    return dest


@dataclass(frozen=True)
class Built:
    project: Path
    first: Doit  # the first `doit overlay:demo`
    cache: Path


@pytest.fixture(scope="module")
def built(privileged: None, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("demo")
    project = copy_project(work / "project")
    cache = work / "cache"
    first = doit(project, "overlay:demo", cache=cache)
    assert first.returncode == 0, first.output
    return Built(project, first, cache)


@pytest.fixture(scope="module")
def privileged() -> None:  # module-scoped: the shared build needs root (mounts, chroot)
    if os.geteuid() != 0:
        from tests.conftest import in_ci

        message = "needs root for mounts and chroot (run the tests through ./devroot as root)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def image_and_manifest(project: Path) -> tuple[Path, Path]:
    overlays = project / "build" / "overlays"
    return overlays / "demo.erofs", overlays / "demo.manifest.json"


# --- doit overlay:demo ---------------------------------------------------------------------


def test_overlay_demo_builds_and_says_where(built: Built) -> None:
    image, manifest = image_and_manifest(built.project)
    assert str(image) in built.first.output
    assert str(manifest) in built.first.output
    checked = validate_image(image)
    assert checked.block_size == 4096
    doc = jsonio.read(manifest)
    jsonio.validate(doc, "manifest")
    assert doc["image"]["sha256"] == checked.sha256
    lock = built.project / "stacks" / "demo.lock.toml"
    assert lock.is_file()
    # the lock names locations inside the demo repository, no path of any clone
    text = lock.read_text()
    assert str(built.project) not in text and str(PROJECT_ROOT) not in text
    urls = [pkg.url for pkg in lockfile.read(lock).packages]
    assert urls and all(u.endswith(".rpm") and ":" not in u for u in urls), urls


def check_evidence(folder: Path) -> dict[str, Any]:
    """The evidence files of a run, schema-valid; returns run.report.json."""
    for name in ("run.log", "run.report.json", "inputs.json", "appcheck.json"):
        assert (folder / name).is_file(), name
    report: dict[str, Any] = jsonio.read(folder / "run.report.json")
    jsonio.validate(report, "run-report")
    jsonio.validate(jsonio.read(folder / "inputs.json"), "inputs")
    jsonio.validate(jsonio.read(folder / "appcheck.json"), "appcheck")
    return report


def test_run_demo_native_passes(built: Built, tmp_path: Path) -> None:
    result = doit(built.project, "run:demo", cache=tmp_path / "cache")
    assert result.returncode == 0, result.output
    assert "PASS" in result.stdout
    folder = result.evidence_dir()
    assert folder.parent == built.project / "evidence" / "demo"
    report = check_evidence(folder)
    assert report["outcome"] == "PASS" and report["backend"] == "native"
    assert report["exit_status"] == 0
    log = (folder / "run.log").read_text()
    assert "hello, overlay" in log and "fexstack-demo: ok" in log
    inputs = jsonio.read(folder / "inputs.json")
    image, manifest = image_and_manifest(built.project)
    deps = inputs["profile"]["deps"]
    assert deps == [{"name": "demo", "image": str(image), "manifest": str(manifest)}]
    assert inputs["profile"]["appimage"] == str(
        built.project / "build" / "demo" / "fexstack-demo.AppImage"
    )
    hashes = {i["role"]: i["sha256"] for i in inputs["resolved"]["images"]}
    assert hashes["deps"] == jsonio.read(manifest)["image"]["sha256"]
    found = jsonio.read(folder / "appcheck.json")
    assert found["blocking"] == 0 and report["appcheck"]["blocking"] is False
    program = f"{report['extraction']['appdir']}/usr/bin/fexstack-demo"
    needed = {r["soname"] for r in found["files"][program]["needs"] if r["path"]}
    assert {"libdemo-greet.so.1", "libdemo-fmt.so.1"} <= needed
    # extracted into this run's cache
    assert report["extraction"]["appdir"].startswith(str(tmp_path / "cache"))


def test_run_demo_out_dir(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "out" / "here"
    result = doit(built.project, "run:demo", "--out-dir", str(out), cache=tmp_path / "cache")
    assert result.returncode == 0, result.output
    assert result.evidence_dir() == out
    report = check_evidence(out)
    assert report["outcome"] == "PASS"
    assert "fexstack-demo: ok" in (out / "run.log").read_text()


def test_run_demo_muvm_argv_is_exact(built: Built, tmp_path: Path) -> None:
    """muvm cannot run here: the fake muvm logs the argv (and runs the command on the
    host, where the demo's libraries are absent: the run FAILs with the loader error)."""
    fex = tmp_path / "fex-bin"
    fex.mkdir()
    # preflight only checks that a FEX binary is installed (FEX cannot run here either)
    (fex / "FEX").write_text("#!/bin/sh\necho FEX-2608\n")
    (fex / "FEX").chmod(0o755)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    argv_log = tmp_path / "argv.log"
    result = doit(
        built.project,
        "run:demo",
        "--backend",
        "muvm",
        cache=tmp_path / "cache",
        PATH=f"{fex}{os.pathsep}{FAKE_DIR}{os.pathsep}{os.environ['PATH']}",
        FEXSTACK_MUVM=str(FAKE_MUVM),
        FAKE_MUVM_ARGV_LOG=str(argv_log),
        XDG_RUNTIME_DIR=str(runtime),
    )
    folder = result.evidence_dir()
    report = check_evidence(folder)
    assert report["backend"] == "muvm" and report["stage"] == "launch", report["reason"]
    image, _ = image_and_manifest(built.project)
    appdir = report["extraction"]["appdir"]
    expected = [
        str(FAKE_MUVM),
        "--emu=fex",
        "-f", str(built.project / "build" / "demo" / "base.erofs"),
        "-f", str(built.project / "build" / "overlays" / "compat-demo.erofs"),
        "-f", str(image),
        "--gpu-mode", "software",
        "--",
        "/bin/bash", f"{appdir}/AppRun",
    ]  # fmt: skip
    assert launches(argv_log) == [expected]
    assert report["command"] == expected
    assert report["guest_command"] == ["/bin/bash", f"{appdir}/AppRun"]
    # on the host the overlay is not there: the guest status line is read back
    assert report["outcome"] == "FAIL" and report["guest_status_code"] == 127
    assert "libdemo-greet.so.1" in report["reason"]
    assert result.returncode != 0


# --- doit doctor ---------------------------------------------------------------------------


def test_doctor_checks_a_stacks_own_layers(built: Built) -> None:
    run = doit(built.project, "doctor", "--stack", "demo", "--json", cache=built.cache)
    assert run.returncode == 0, run.output
    report = json.loads(run.stdout[run.stdout.index("{"):run.stdout.rindex("}") + 1])
    jsonio.validate(report, "doctor")
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status["image:deps:demo"] == "ok" and status["manifest:demo"] == "ok"
    assert status["image:compat:compat"] == "ok"
    # A damaged deps image fails the same check, naming the image.
    image, _ = image_and_manifest(built.project)
    saved = image.read_bytes()
    try:
        image.write_bytes(saved[: len(saved) // 2])
        broken = doit(built.project, "doctor", "--stack", "demo", cache=built.cache)
        assert broken.returncode != 0
        assert "image:deps:demo" in broken.stdout and str(image) in broken.stdout
    finally:
        image.write_bytes(saved)
