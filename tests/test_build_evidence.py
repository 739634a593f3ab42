"""``doit run:<app>`` leaves its evidence bundle also when one of its overlays fails to
build or check: the run never starts, and the bundle says which step of which stack
failed, with that step's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from fexstack import jsonio
from testkit.factory import Factory
from tests import pipeline_support as ps

SEEDS = {"pipe-c": "the app links libpipe-c.so.1"}


@pytest.fixture(scope="module")
def fixtures(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> ps.Fixtures:
    return ps.make_fixtures(factory, tmp_path_factory.mktemp("evidence-fixtures"))


def with_app(project: ps.Project, seeds: dict[str, str]) -> None:
    path = project.write_stack("app", seeds=seeds)
    path.write_text(path.read_text() + '\n[app]\nappimage = "../app.AppImage"\n')


def checked(path: Path, schema: str) -> dict:
    doc = jsonio.read(path)
    jsonio.validate(doc, schema)
    return doc  # type: ignore[no-any-return]


def bundles(project: ps.Project) -> list[Path]:
    folder = project.root / "evidence" / "app"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_failed_check_still_leaves_run_evidence(tmp_path: Path, fixtures: ps.Fixtures) -> None:
    project = ps.new_project(tmp_path, fixtures)
    with_app(project, {**SEEDS, "pipe-clash": "a file the base owns"})
    run = project.doit("run:app", "--backend", "native", check=False)
    assert run.returncode != 0 and run.ran("check:app") and not run.ran("run:app"), run.output
    [bundle] = bundles(project)
    report = checked(bundle / "run.report.json", "run-report")
    assert report["outcome"] == "INFRA" and report["stage"] == "build"
    assert report["build_failure"] == {"task": "check:app", "step": "check", "stack": "app"}
    assert "check:app" in report["reason"] and "stack app" in report["reason"]
    assert report["backend"] == "native"  # the run's own options are recorded
    inputs = checked(bundle / "inputs.json", "inputs")
    assert inputs["profile"]["app"] == "app"
    log = (bundle / "run.log").read_text()
    assert "invariants FAILED" in log  # the check summary
    assert "C precedence: fail" in log and "/etc/ld.so.conf" in log and "pipe-clash" in log
    assert f"evidence: {bundle}" in run.stdout
    # the overlay fixed, the run itself starts (and stops at preflight: no AppImage)
    with_app(project, SEEDS)
    run = project.doit("run:app", "--backend", "native", check=False)
    assert run.ran("image:app") and run.ran("run:app"), run.output
    first, second = bundles(project)
    assert first == bundle
    report = checked(second / "run.report.json", "run-report")
    assert report["stage"] != "build" and "build_failure" not in report


def test_failed_lock_names_the_lock_step(tmp_path: Path, fixtures: ps.Fixtures) -> None:
    project = ps.new_project(tmp_path, fixtures)
    with_app(project, {**SEEDS, "no-such-package": "a typo"})
    run = project.doit("run:app", check=False)
    assert run.returncode != 0, run.output
    [bundle] = bundles(project)
    report = checked(bundle / "run.report.json", "run-report")
    assert report["build_failure"] == {"task": "lock:app", "step": "lock", "stack": "app"}
    assert "no-such-package" in (bundle / "run.log").read_text()
