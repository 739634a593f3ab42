"""The same stack gives the same image anywhere; locks travel with the clone (issue 17).

Real doit processes in throwaway projects (tests/pipeline_support.py), real libdnf5,
rpm and mkfs.erofs. Each "clone" is a project at its own path, with its own copy of the
fixture repository and base at their own paths and its own cache (FEXSTACK_CACHE).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from overlays import lockfile
from overlays.image import image_uuid
from overlays.manifest import sections as manifest_sections
from overlays.manifest import validate_against_manifest
from testkit.factory import Factory
from tests import pipeline_support as ps

# The manifest sections that say what the image is (the same wherever it is built).
CONTENT_SECTIONS = manifest_sections("content")


@pytest.fixture(scope="module")
def fixtures(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> ps.Fixtures:
    return ps.make_fixtures(factory, tmp_path_factory.mktemp("repro-fixtures"))


def relocated(fixtures: ps.Fixtures, where: Path) -> ps.Fixtures:
    """A copy of the repository, the directory base and its package list under ``where``."""
    where.mkdir(parents=True)
    repo = shutil.copytree(fixtures.repo, where / "rpms" / "repo", symlinks=True)
    base = shutil.copytree(fixtures.base_dir, where / "roots" / "base", symlinks=True)
    packages = shutil.copy(fixtures.packages, where / "base.packages")
    return dataclasses.replace(fixtures, repo=repo, base_dir=base, packages=Path(packages))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: manifest.get(key) for key in CONTENT_SECTIONS}


def test_two_clones_at_different_paths_make_byte_identical_images(
    tmp_path: Path, fixtures: ps.Fixtures
) -> None:
    one = ps.new_project(tmp_path / "one", relocated(fixtures, tmp_path / "data-one"))
    two = ps.new_project(
        tmp_path / "two" / "deeper" / "still",
        relocated(fixtures, tmp_path / "elsewhere" / "data-two"),
    )
    assert one.cache != two.cache and one.root != two.root
    for project in (one, two):
        project.doit("overlay:app")
        validate_against_manifest(project.image("app"), project.manifest("app"))
    first, second = jsonio.read(one.manifest("app")), jsonio.read(two.manifest("app"))

    # The setup is location-dependent where it may be: the repositories' absolute paths
    # are in each clone's repos.toml, so the lock inputs (and an image UUID seeded from
    # them, as it used to be) differ...
    assert first["lock"]["inputs"] != second["lock"]["inputs"]
    # ...yet the images are the same bytes and their content sections are equal.
    assert one.image("app").read_bytes() == two.image("app").read_bytes()
    assert sha256(one.image("app")) == first["image"]["sha256"] == second["image"]["sha256"]
    assert content_of(first) == content_of(second)
    assert first["image"]["uuid"] == image_uuid(first["content"]["digest"])
    assert [p["name"] for p in first["content"]["packages"]] == ["pipe-a", "pipe-b", "pipe-c"]
    # The content section names no path of either clone, repository or cache.
    text = jsonio.dumps(content_of(first)) + jsonio.dumps(content_of(second))
    assert str(tmp_path) not in text


def test_lock_made_in_one_clone_fetches_in_another(tmp_path: Path, fixtures: ps.Fixtures) -> None:
    one = ps.new_project(tmp_path / "one", fixtures)
    # The repository lives in the clone and repos.toml names it by a relative path.
    shutil.copytree(fixtures.repo, one.root / "repo", symlinks=True)
    (one.stacks / "repos.toml").write_text(
        '[repos.fixture]\nbaseurl = ["../repo"]\ngpgcheck = false\n'
    )
    one.doit("lock:app")
    lock_bytes = one.lock("app").read_bytes()
    lock_text = lock_bytes.decode()
    assert str(one.root) not in lock_text and "file:" not in lock_text
    urls = [p.url for p in lockfile.read(one.lock("app")).packages]
    assert urls and all(u.endswith(".rpm") and "://" not in u for u in urls), urls

    # Another clone: the committed files (stacks/ with its lock, the repository) at
    # another path; the first clone and its cache are gone.
    root = tmp_path / "two" / "clone"
    shutil.copytree(one.root, root, symlinks=True, ignore=shutil.ignore_patterns("build"))
    shutil.rmtree(one.root)
    two = ps.Project(root, tmp_path / "two" / "cache", fixtures)
    run = two.doit("fetch:app")
    assert run.ran("fetch:app"), run.output
    assert "lock up to date" in run.stderr, run.output
    assert two.lock("app").read_bytes() == lock_bytes  # the lock did not churn
    fetched = jsonio.read(two.build / "app" / "fetch.json")
    assert (fetched["packages"], fetched["downloaded"]) == (3, 3)
    for pkg in lockfile.read(two.lock("app")).packages:
        assert sha256(two.cache / "rpms" / f"{pkg.sha256}.rpm") == pkg.sha256
    # and it builds there.
    run = two.doit("overlay:app")
    validate_against_manifest(two.image("app"), two.manifest("app"))


def test_lock_of_a_moved_repository_names_the_missing_file(
    tmp_path: Path, fixtures: ps.Fixtures
) -> None:
    """A repository that is not where repos.toml says: the error names package and path."""
    project = ps.new_project(tmp_path, fixtures)
    shutil.copytree(fixtures.repo, project.root / "repo", symlinks=True)
    (project.stacks / "repos.toml").write_text(
        '[repos.fixture]\nbaseurl = ["../repo"]\ngpgcheck = false\n'
    )
    project.doit("lock:app")
    pipe_a = lockfile.read(project.lock("app")).package("pipe-a")
    assert pipe_a is not None
    (project.root / "repo" / pipe_a.url).unlink()
    run = project.doit("fetch:app", check=False)
    assert run.returncode != 0
    missing = f"cannot read file://{project.root / 'repo' / pipe_a.url}"
    assert f"package pipe-a: {missing}" in run.output, run.output


def test_file_change_inside_a_directory_base_reruns_check_and_image(
    tmp_path: Path, fixtures: ps.Fixtures
) -> None:
    project = ps.new_project(tmp_path / "p", relocated(fixtures, tmp_path / "data"))
    base = project.fixtures.base_dir
    project.doit("overlay:app")
    first = jsonio.read(project.manifest("app"))
    assert first["base"]["image_sha256"] is None
    tree_digest = first["base"]["tree_sha256"]
    assert project.doit("overlay:app").executed == []

    readme = next(p for p in sorted(base.rglob("*")) if p.is_file() and not p.is_symlink())
    for change in (
        lambda: readme.write_bytes(readme.read_bytes() + b"\n# changed\n"),
        lambda: readme.chmod(0o600),
        lambda: (base / "etc-extra").mkdir(),
        lambda: (base / "etc-extra" / "link").symlink_to("/nowhere"),
    ):
        change()
        run = project.doit("overlay:app")
        assert run.ran("check:app") and run.ran("image:app"), run.output
        # (stage reruns too: it installs the payload through the base's directory links)
        assert run.skipped("lock:app") and run.skipped("fetch:app"), run.output
        manifest = jsonio.read(project.manifest("app"))
        assert manifest["base"]["tree_sha256"] != tree_digest
        tree_digest = manifest["base"]["tree_sha256"]
        assert project.doit("overlay:app").executed == []


def test_comment_edit_leaves_no_stale_digest(tmp_path: Path, fixtures: ps.Fixtures) -> None:
    project = ps.new_project(tmp_path, fixtures)
    project.doit("overlay:app")
    project.write_stack("app", seeds={"pipe-c": "the app links libpipe-c.so.1"},
                        comment="a comment", description="another description")
    project.write_base(comment="a comment on the base")
    run = project.doit("overlay:app")
    assert run.skipped("check:app") and run.skipped("image:app"), run.output
    manifest = jsonio.read(project.manifest("app"))
    # Every digest the manifest records still matches the file it names...
    assert manifest["lock"]["sha256"] == sha256(project.root / manifest["lock"]["path"])
    assert manifest["invariants"]["sha256"] == sha256(
        project.root / manifest["invariants"]["path"]
    )
    # ...and the stack files (just edited, nothing rebuilt) are listed without digests.
    assert {f["path"] for f in manifest["stack"]["files"]} == {
        "stacks/app.toml", "stacks/repos.toml", "stacks/bases/fixture.toml",
    }
    assert all(set(f) == {"path"} for f in manifest["stack"]["files"])
