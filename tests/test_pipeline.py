"""The doit pipeline end to end: a throwaway project, real doit processes, real tools.

Each test gets a fresh project (its stacks; ``python3 -m tasks`` runs doit there)
whose stacks point at a fixture repository (a soname chain pipe-c -> pipe-b -> pipe-a,
plus glibc) and a directory base holding glibc. The module builds the repository and
bases once. Lines of doit's output starting with ".  " are tasks it executed, "-- "
tasks it found up to date.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fexstack import buildlock, jsonio
from fexstack.errors import FetchError
from overlays.manifest import validate_against_manifest
from testkit.factory import Factory, File, Package
from tests import pipeline_support as ps

STEPS = ("compat:fixture", "lock:app", "fetch:app", "stage:app", "check:app", "image:app")
AFTER_LOCK = ("fetch:app", "stage:app", "check:app", "image:app")
SEEDS = {"pipe-c": "the app links libpipe-c.so.1"}  # the seeds of ps.new_project's "app"

# A package big enough (1500 files) that extracting and imaging it takes a while.
PIPE_BULK = Package(
    "pipe-bulk",
    summary="many data files",
    contents=tuple(
        File(f"/usr/share/pipe-bulk/{i // 100:02d}/data-{i:04d}.txt", f"{i}\n".encode() * 600)
        for i in range(1500)
    ),
)


@pytest.fixture(scope="module")
def fixtures(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> ps.Fixtures:
    where = tmp_path_factory.mktemp("pipeline-fixtures")
    made = ps.make_fixtures(factory, where)
    factory.repo(made.repo, [PIPE_BULK])
    return made


@pytest.fixture
def project(tmp_path: Path, fixtures: ps.Fixtures) -> ps.Project:
    return ps.new_project(tmp_path, fixtures)


@pytest.fixture
def built(project: ps.Project) -> ps.Project:
    """A project whose overlay "app" was built once."""
    project.doit("overlay:app")
    return project


def manifest_packages(project: ps.Project, name: str = "app") -> list[str]:
    return sorted(p["name"] for p in jsonio.read(project.manifest(name))["packages"])


def manifest_paths(project: ps.Project, name: str = "app") -> set[str]:
    return {f["path"] for f in jsonio.read(project.manifest(name))["files"]}


def test_first_build_runs_every_step(project: ps.Project) -> None:
    run = project.doit("overlay:app")
    assert run.executed == list(STEPS), run.output
    assert "overlay:app" not in run.executed  # the overlay task has no action of its own
    image, manifest = project.image("app"), project.manifest("app")
    assert f"image:app: image    {image}" in run.stdout
    assert f"image:app: manifest {manifest}" in run.stdout
    validate_against_manifest(image, manifest)
    assert manifest_packages(project) == ["pipe-a", "pipe-b", "pipe-c"]
    assert "/usr/lib64/libpipe-c.so.1.0" in manifest_paths(project)
    fetch = jsonio.read(project.build / "app" / "fetch.json")
    assert (fetch["downloaded"], fetch["cached"]) == (3, 0)
    stage = jsonio.read(project.build / "app" / "stage.json")
    assert (stage["extracted"], stage["reused"]) == (3, 0)
    assert project.lock("app").is_file()
    # The dependency database is sqlite3, where the task layer says (not dbm in the project).
    db = project.build / ".doit.db"
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("select task_id from doit")}
    assert set(STEPS) <= ids
    assert not list(project.root.glob(".doit.db*"))


def test_noop_build_executes_nothing(built: ps.Project) -> None:
    lock_mtime = built.lock("app").stat().st_mtime_ns
    image_bytes = built.image("app").read_bytes()
    run = built.doit("overlay:app")
    assert run.executed == [], run.output
    assert sorted(run.up_to_date) == sorted(STEPS)
    assert built.lock("app").stat().st_mtime_ns == lock_mtime
    assert built.image("app").read_bytes() == image_bytes


def test_added_seed_fetches_and_extracts_only_the_new_rpm(built: ps.Project) -> None:
    built.write_stack(
        "app",
        seeds={**SEEDS, "pipe-extra": "a plugin links it"},
    )
    run = built.doit("overlay:app")
    assert run.executed == list(STEPS[1:]), run.output
    assert run.skipped("compat:fixture")
    fetch = jsonio.read(built.build / "app" / "fetch.json")
    assert (fetch["packages"], fetch["downloaded"], fetch["cached"]) == (4, 1, 3)
    assert [r["name"] for r in fetch["rpms"] if r["source"] == "downloaded"] == ["pipe-extra"]
    stage = jsonio.read(built.build / "app" / "stage.json")
    assert (stage["extracted"], stage["reused"]) == (1, 3)
    assert stage["extracted_packages"] == ["pipe-extra"]
    assert manifest_packages(built) == ["pipe-a", "pipe-b", "pipe-c", "pipe-extra"]
    validate_against_manifest(built.image("app"), built.manifest("app"))
    diff = jsonio.read(built.build / "app" / "lock.diff.json")
    assert [p["name"] for p in diff["added"]] == ["pipe-extra"]
    assert diff["unchanged"] == 3


def test_comment_and_description_edits_rebuild_nothing(built: ps.Project) -> None:
    lock_bytes = built.lock("app").read_bytes()
    lock_mtime = built.lock("app").stat().st_mtime_ns
    image_mtime = built.image("app").stat().st_mtime_ns
    seeds = SEEDS
    for edit in (
        {"comment": "a comment at the top"},
        {"comment": "a comment at the top", "description": "another description"},
    ):
        built.write_stack("app", seeds=seeds, **edit)  # type: ignore[arg-type]
        run = built.doit("overlay:app")
        # lock may run (its input is the stack file) but finds nothing to resolve.
        assert set(run.executed) <= {"lock:app"}, run.output
        for task in AFTER_LOCK:
            assert run.skipped(task), run.output
        assert built.lock("app").read_bytes() == lock_bytes
        assert built.lock("app").stat().st_mtime_ns == lock_mtime
    assert built.image("app").stat().st_mtime_ns == image_mtime


def test_base_change_reruns_check_and_image(built: ps.Project) -> None:
    run = built.doit("overlay:app")
    assert run.executed == []
    # Only a comment in the base file: nothing reruns.
    built.write_base(comment="the fixture base")
    run = built.doit("overlay:app")
    assert not set(run.executed) & {"fetch:app", "stage:app", "check:app", "image:app"}
    # Another base tree (this one has a /lib64 link, so needs no compat overlay).
    built.write_base(built.fixtures.other_base_dir)
    run = built.doit("overlay:app")
    assert run.ran("compat:fixture") and run.ran("check:app") and run.ran("image:app"), run.output
    # the staging tree is what rpm -i into the base adds: it is made again for a new base
    assert run.skipped("fetch:app") and run.ran("stage:app")
    assert jsonio.read(built.build / "compat" / "fixture.json")["image"] is None
    report = jsonio.read(built.build / "app" / "invariants.json")
    assert report["failed"] is False
    validate_against_manifest(built.image("app"), built.manifest("app"))
    assert built.doit("overlay:app").executed == []


def test_failed_check_is_never_up_to_date(built: ps.Project) -> None:
    """A check that failed leaves its report for the user, and runs again next time."""
    built.write_stack("app", seeds={**SEEDS, "pipe-clash": "a file the base owns"})
    run = built.doit("overlay:app", check=False)
    assert run.returncode != 0 and run.ran("check:app"), run.output
    assert jsonio.read(built.build / "app" / "invariants.json")["failed"] is True
    assert not run.ran("image:app")
    # Put the stack back: the lock's bytes are the first build's again, but the staging
    # tree and the report are the failed run's, so stage, check and image run again.
    built.write_stack("app", seeds=SEEDS)
    run = built.doit("overlay:app")
    assert {"stage:app", "check:app", "image:app"} <= set(run.executed), run.output
    assert manifest_packages(built) == ["pipe-a", "pipe-b", "pipe-c"]
    validate_against_manifest(built.image("app"), built.manifest("app"))


def test_killed_during_extraction(built: ps.Project) -> None:
    built.write_stack("app", seeds={**SEEDS, "pipe-bulk": "its data"})
    extracted = built.cache / "extracted"
    proc = built.start("overlay:app")
    assert ps.kill_when(proc, lambda: bool(ps.temp_entries(extracted, ""))), (
        "the build ended before extraction was seen"
    )
    stage_record = built.build / "app" / "stage.json"
    assert not stage_record.exists()  # the stage step removed its outputs first
    run = built.doit("overlay:app")
    assert run.ran("stage:app") and run.ran("check:app") and run.ran("image:app"), run.output
    stage = jsonio.read(stage_record)
    assert "pipe-bulk" in stage["extracted_packages"]
    assert manifest_packages(built) == ["pipe-a", "pipe-b", "pipe-bulk", "pipe-c"]
    assert "/usr/share/pipe-bulk/14/data-1499.txt" in manifest_paths(built)
    validate_against_manifest(built.image("app"), built.manifest("app"))
    assert not ps.temp_entries(built.build / "app", "")
    assert built.doit("overlay:app").executed == []


def test_killed_during_mkfs_then_inputs_put_back(built: ps.Project) -> None:
    """A kill loses doit's database of the run: outputs of the steps it completed must
    still not count as up to date, even when the stack is put back as it was."""
    first_lock = built.lock("app").read_bytes()
    built.write_stack("app", seeds={**SEEDS, "pipe-bulk": "its data"})
    overlays = built.build / "overlays"
    proc = built.start("overlay:app")
    assert ps.kill_when(proc, lambda: bool(ps.temp_entries(overlays, "app.erofs"))), (
        "the build ended before mkfs.erofs was seen"
    )
    # No image without its manifest (nor a stale pair) is left to look complete.
    assert not built.image("app").exists()
    assert not built.manifest("app").exists()
    assert "libpipe-bulk" not in first_lock.decode()
    built.write_stack("app", seeds=SEEDS)
    run = built.doit("overlay:app")
    assert built.lock("app").read_bytes() == first_lock
    # fetch, stage and check completed for pipe-bulk in the killed run: all run again.
    for task in AFTER_LOCK:
        assert run.ran(task), run.output
    assert manifest_packages(built) == ["pipe-a", "pipe-b", "pipe-c"]
    assert not any(p.startswith("/usr/share/pipe-bulk") for p in manifest_paths(built))
    assert not any((built.build / "app" / "staging" / "usr" / "share").glob("pipe-bulk"))
    validate_against_manifest(built.image("app"), built.manifest("app"))
    assert not ps.temp_entries(overlays, "")
    assert built.doit("overlay:app").executed == []


def test_clean_removes_the_overlay_outputs(built: ps.Project) -> None:
    assert built.image("app").exists() and (built.build / "app" / "staging").is_dir()
    run = built.doit("clean", "overlay:app")
    assert run.returncode == 0
    assert not built.image("app").exists()
    assert not built.manifest("app").exists()
    assert not (built.build / "app").exists()
    assert built.lock("app").exists()  # the lock is a source, committed by users
    run = built.doit("overlay:app")
    assert {"fetch:app", "stage:app", "check:app", "image:app"} <= set(run.executed)
    validate_against_manifest(built.image("app"), built.manifest("app"))


def test_parallel_build_of_two_stacks(tmp_path: Path, fixtures: ps.Fixtures) -> None:
    project = ps.new_project(tmp_path, fixtures, stacks=("app", "other"))
    run = project.doit("-n", "2", "overlay:app", "overlay:other")
    for step in ("lock", "fetch", "stage", "check", "image"):
        assert run.ran(f"{step}:app") and run.ran(f"{step}:other"), run.output
    assert run.executed.count("compat:fixture") == 1
    validate_against_manifest(project.image("app"), project.manifest("app"))
    validate_against_manifest(project.image("other"), project.manifest("other"))
    assert manifest_packages(project, "other") == ["pipe-other"]
    run = project.doit("-n", "2", "overlay:app", "overlay:other")
    assert run.executed == [], run.output


def test_second_build_waits_for_the_first(project: ps.Project) -> None:
    assert buildlock.acquire(project.build, wait=False)
    try:
        proc = project.start("overlay:app")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not any("another build is running" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        time.sleep(1)
        assert proc.poll() is None  # still waiting
        assert not project.image("app").exists()
    finally:
        buildlock.release()
    assert proc.wait(timeout=120) == 0, "".join(lines)
    reader.join(timeout=10)
    out = "".join(lines)
    assert "build lock acquired" in out
    assert ".  image:app" in out
    validate_against_manifest(project.image("app"), project.manifest("app"))


def test_read_only_commands_do_not_wait_for_a_build(built: ps.Project) -> None:
    assert buildlock.acquire(built.build, wait=False)
    try:
        listing = built.doit("list", timeout=30)
        info = built.doit("info", "image:app", timeout=30)
    finally:
        buildlock.release()
    assert "another build" not in listing.stderr + info.stderr
    assert "image:app" in listing.stdout


def test_list_info_and_a_broken_stack(built: ps.Project) -> None:
    (built.stacks / "broken.toml").write_text(
        '[stack]\nbase = "fixture"\ncolour = "red"\n\n[source]\nrelease = "1"\n'
        'repos = ["fixture"]\n\n[seeds]\npipe-a = "x"\n'
    )
    listing = built.doit("list")
    rows = dict(
        line.split(None, 1) for line in listing.stdout.splitlines() if line.strip()
    )
    for step in ("lock", "fetch", "stage", "check", "image", "overlay"):
        for name in ("app", "broken"):
            assert rows.get(f"{step}:{name}", "").strip(), listing.output
    assert rows["compat:fixture"].strip()
    assert all("\n" not in doc for doc in rows.values())
    info = built.doit("info", "image:app")
    assert "image:app" in info.stdout and "file_dep" in info.stdout
    assert str(built.manifest("app")) in info.stdout
    failed = built.doit("lock:broken", check=False)
    assert failed.returncode != 0
    text = failed.stdout + failed.stderr
    assert "broken.toml" in text and "colour" in text and "hint:" in text, failed.output
    # The broken file does not stop the other stacks from building.
    assert built.doit("overlay:app").executed == []


def test_lock_writes_nothing_when_inputs_are_unchanged(built: ps.Project) -> None:
    lock = built.lock("app")
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    run = built.doit("lock:app")
    assert run.executed == []
    # Forced: the step runs and short-circuits without touching the lock.
    run = built.doit("forget", "lock:app")
    run = built.doit("lock:app")
    assert run.ran("lock:app")
    assert "lock up to date" in run.stderr
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before
    assert built.doit("overlay:app").executed == []


def test_install_through_base_links_and_dropped_executables(built: ps.Project) -> None:
    """Over a merged-/usr base (/lib64 -> usr/lib64), /lib64 and /bin payload lands under
    /usr; tools are left out of the image but stay locked; a kept one is imaged."""
    built.write_base(built.fixtures.other_base_dir)
    built.write_stack("app", seeds={**SEEDS, "pipe-old": "an old vendor library",
                                    "pipe-tool": "a command"})
    run = built.doit("overlay:app")
    assert run.ran("stage:app") and run.ran("image:app"), run.output
    manifest = jsonio.read(built.manifest("app"))
    assert {"original": "/lib64/libpipe-old.so.1", "installed": "/usr/lib64/libpipe-old.so.1",
            "package": "pipe-old"} in manifest["install"]["redirected"]
    dropped = {(d["path"], d["package"]) for d in manifest["install"]["dropped"]}
    assert dropped == {("/usr/bin/pipe-old-tool", "pipe-old"), ("/usr/bin/pipe-tool", "pipe-tool")}
    paths = manifest_paths(built)
    assert "/usr/lib64/libpipe-old.so.1" in paths
    assert not {"/lib64", "/bin", "/usr/bin/pipe-tool", "/usr/bin/pipe-old-tool"} & paths
    assert {"pipe-old", "pipe-tool"} <= set(manifest_packages(built))  # still locked
    report = jsonio.read(built.build / "app" / "invariants.json")
    assert {d["path"]: d["host"] for d in report["dropped"]} == {
        "/usr/bin/pipe-old-tool": "host unknown", "/usr/bin/pipe-tool": "host unknown"}
    assert "dropped 2 tool executable(s)" in run.stderr
    # keep one: stage and check run again, the tool is imaged, library-focus accounts it
    stack = built.stacks / "app.toml"
    stack.write_text(stack.read_text() + '\n[[policy.keep_executable]]\npath = "/usr/bin/pipe-tool"'
                     '\nreason = "the app runs it by path"\n')
    run = built.doit("overlay:app")
    assert run.ran("stage:app") and run.ran("check:app"), run.output
    assert "/usr/bin/pipe-tool" in manifest_paths(built)
    report = jsonio.read(built.build / "app" / "invariants.json")
    assert report["invariants"]["library-focus"]["status"] == "accounted"
    assert [d["path"] for d in report["dropped"]] == ["/usr/bin/pipe-old-tool"]
    validate_against_manifest(built.image("app"), built.manifest("app"))


def test_image_holds_what_the_packages_meant(built: ps.Project) -> None:
    """The image step takes each staged file's digest from the extraction cache instead of
    hashing the tree again, and compares the image's bytes with it: a staged file replaced
    after the stage step (same size, mtime put back to 0) fails the read-back."""
    staged = built.build / "app" / "staging" / "usr/lib64/libpipe-a.so.1.0"
    data = bytearray(staged.read_bytes())
    data[-1] ^= 0x01
    replaced = staged.with_name(".replaced")
    replaced.write_bytes(bytes(data))
    replaced.chmod(staged.stat().st_mode & 0o7777)
    os.utime(replaced, ns=(0, 0))
    os.replace(replaced, staged)  # never write into a staged file: it is the cache's inode
    built.doit("forget", "image:app")
    run = built.doit("image:app", check=False)
    assert run.returncode != 0, run.output
    assert "/usr/lib64/libpipe-a.so.1.0: sha256 is" in run.output
    assert "read-back does not match" in run.output
    # The stage step makes the tree anew, and the image is built again.
    built.doit("forget", "stage:app")
    run = built.doit("overlay:app")
    assert run.ran("stage:app") and run.ran("image:app"), run.output
    validate_against_manifest(built.image("app"), built.manifest("app"))


def test_check_opens_only_the_elf_files(
    built: ps.Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extraction saw every staged content's first bytes; its record lists the ELF
    ones, so the check (with an empty ELF facts store) opens no other staged file."""
    from invariants import elf
    from overlays import pipeline
    from overlays.project import Project

    built.write_stack("app", seeds={**SEEDS, "pipe-bulk": "its data"})
    built.doit("overlay:app")
    monkeypatch.setenv("FEXSTACK_CACHE", str(built.cache))
    (built.cache / elf.STORE).unlink()
    elf.clear_cache()
    opened: list[str] = []
    real = elf._open_elf

    def spy(path: Path) -> Any:
        opened.append(str(path))
        return real(path)

    monkeypatch.setattr(elf, "_open_elf", spy)
    pipeline.check(Project(built.root), "app")
    staging = str(built.build / "app" / "staging")
    mine = sorted(p[len(staging):] for p in opened if p.startswith(staging))
    report = jsonio.read(built.build / "app" / "invariants.json")
    assert mine == sorted(report["elf"]) and len(mine) >= 3  # the pipe-* libraries
    assert not [p for p in mine if p.startswith("/usr/share/pipe-bulk/")]


def test_a_wiped_rpm_cache_fetches_again(built: ps.Project) -> None:
    """fetch's up-to-date check reads the fetch record (its one reader) and looks for each
    RPM it lists in the cache: one gone (or cut short) makes the step run again."""
    from overlays.fetch import fetched, rpm_path

    rpms = fetched(built.build / "app" / "fetch.json")
    assert sorted(r.name for r in rpms) == ["pipe-a", "pipe-b", "pipe-c"]
    assert built.doit("overlay:app").executed == []
    rpm_path(built.cache, rpms[0].sha256).unlink()
    run = built.doit("overlay:app")
    assert run.ran("fetch:app"), run.output
    assert rpm_path(built.cache, rpms[0].sha256).stat().st_size == rpms[0].size
    with rpm_path(built.cache, rpms[1].sha256).open("r+b") as fh:
        fh.truncate(rpms[1].size - 1)
    assert built.doit("overlay:app").ran("fetch:app")
    record = built.build / "app" / "fetch.json"
    record.write_text("{}")
    with pytest.raises(FetchError) as err:
        fetched(record)
    assert str(record) in err.value.message and "fetch schema" in err.value.message
    assert err.value.hint == "run the fetch step again: doit fetch:app"
    assert built.doit("overlay:app").ran("fetch:app")  # a damaged record: fetch again
