"""``doit build``: the command plugin registered in pyproject.toml builds, never runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlays.manifest import validate_against_manifest
from tasks.build_command import Build
from testkit.factory import Factory
from tests import pipeline_support as ps


@pytest.fixture(scope="module")
def fixtures(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> ps.Fixtures:
    return ps.make_fixtures(factory, tmp_path_factory.mktemp("build-command-fixtures"))


@pytest.fixture
def project(tmp_path: Path, fixtures: ps.Fixtures) -> ps.Project:
    project = ps.new_project(tmp_path, fixtures)
    # An [app] table gives the stack a run:app task (its AppImage need not exist).
    path = project.stacks / "app.toml"
    path.write_text(path.read_text() + '\n[app]\nappimage = "missing.AppImage"\n')
    return project


def test_build_brings_an_overlay_up_to_date(project: ps.Project) -> None:
    run = project.doit("build", "overlay:app")
    assert {"lock:app", "fetch:app", "stage:app", "check:app", "image:app"} <= set(run.executed)
    validate_against_manifest(project.image("app"), project.manifest("app"))
    again = project.doit("build", "overlay:app")
    assert again.executed == [] and "image:app" in again.up_to_date


@pytest.mark.parametrize("task", ["run:app", "probe:gpu", "bench:app"])
def test_build_refuses_what_launches_an_app(project: ps.Project, task: str) -> None:
    run = project.doit("build", task, check=False)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert task in text and f"doit {task}" in text, run.output
    assert "Traceback" not in text
    assert run.executed == []
    assert not project.lock("app").exists()  # nothing was built either


def test_build_refuses_a_launching_task_among_others(project: ps.Project) -> None:
    run = project.doit("build", "overlay:app", "run:app", check=False)
    assert run.returncode != 0
    assert "doit run:app" in run.stdout + run.stderr
    assert run.executed == [] and not project.image("app").exists()


def test_build_without_a_task_says_what_to_do(project: ps.Project) -> None:
    run = project.doit("build", check=False)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "doit build overlay:" in text and "doit list" in text, run.output
    assert "Traceback" not in text


def test_build_is_listed_in_doit_help(project: ps.Project) -> None:
    run = project.doit("help")
    assert "build" in run.stdout and Build.doc_purpose in run.stdout
    detail = project.doit("help", "build")
    assert "run:" in detail.stdout
