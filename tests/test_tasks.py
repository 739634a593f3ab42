"""The task layer: a namespace made without work, actions doit's workers can unpickle."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from fexstack.paths import PROJECT_ROOT
from tasks import creators, reporter
from tasks import stamp as stamps
from tasks.action import Step


def tasks_of(namespace: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, creator in namespace.items():
        if name.startswith("task_"):
            made = creator()
            out += [made] if isinstance(made, dict) else list(made)
    return out


def test_namespace_is_made_without_reading_or_writing(tmp_path: Path) -> None:
    namespace = creators.namespace(tmp_path)  # no stacks/ here: nothing is read yet
    assert sorted(k for k in namespace if not k.startswith("task_")) == ["DOIT_CONFIG"]
    assert list(tmp_path.iterdir()) == []
    assert namespace["DOIT_CONFIG"]["dep_file"] == str(tmp_path / "build" / ".doit.db")
    assert namespace["DOIT_CONFIG"]["reporter"] is reporter.EvidenceReporter
    # asked for tasks, a project without stacks has only the ones that need none
    names = {t.get("basename") or t.get("name") for t in tasks_of(namespace)}
    assert names == {"repo", "base", "appimage", None, "ab:probe-gpu", "probe:display",
                     "probe:gpu"}


def test_every_action_of_every_task_pickles() -> None:
    """Plain pickle, as doit's workers get them when they are not forked."""
    tasks = tasks_of(creators.namespace(PROJECT_ROOT))
    assert len(tasks) > 40
    steps = 0
    for task in tasks:
        clean = task.get("clean")
        for act in [*(task.get("actions") or []), *(clean if isinstance(clean, list) else [])]:
            assert isinstance(act, tuple), (task, act)
            again = pickle.loads(pickle.dumps(act))
            if isinstance(act[0], Step):
                steps += 1
                assert again[0].ref == act[0].ref and callable(again[0].target())
    assert steps > 25
    assert pickle.loads(pickle.dumps(reporter.EvidenceReporter)) is reporter.EvidenceReporter


def test_a_step_has_its_functions_signature() -> None:
    import inspect

    from tasks.commands import why

    assert inspect.signature(Step("tasks.commands:why")) == inspect.signature(why)


def test_a_stamp_is_a_typed_record(tmp_path: Path) -> None:
    import jsonschema
    import pytest

    dep = tmp_path / "input"
    dep.write_text("one")
    stamp = tmp_path / ".lock.done.json"
    config = stamps.step_config("lock", {"seeds": ["a"]})
    done = stamps.step_done(stamp, [str(dep)], config)
    assert not done()
    stamps.complete_step(stamp, [str(dep)], config)
    assert done()
    dep.write_text("two")
    assert not done()
    for foreign in ('{"files": {}, "config": "x"}', "not json", '{"files": {}}'):
        stamp.write_text(foreign)
        assert not done(), foreign
    with pytest.raises(jsonschema.ValidationError):
        stamps.complete_step(stamp, [str(dep)], {"recipe": 0, "inputs": None})


def test_the_compat_record_is_a_typed_record(tmp_path: Path) -> None:
    import jsonschema
    import pytest

    from fexstack.errors import StageError
    from overlays.pipeline import CompatRecord

    path = tmp_path / "fixture.json"
    none = CompatRecord("fixture")
    none.write(path)
    assert CompatRecord.read(path) == none
    assert path.read_text().count("null") == 2  # image and manifest say "none needed"
    some = CompatRecord("fixture", "compat-fixture.erofs", "compat-fixture.manifest.json",
                        "ab" * 32)
    some.write(path)
    assert CompatRecord.read(path) == some
    with pytest.raises(jsonschema.ValidationError):
        CompatRecord("fixture", "compat-fixture.erofs").write(path)  # an image needs its sha256
    path.write_text('{"base": "fixture", "image": null, "manifest": null, "extra": 1}\n')
    with pytest.raises(StageError) as err:  # the project's error, naming the file
        CompatRecord.read(path)
    assert str(path) in err.value.message and "compat schema" in err.value.message
    assert err.value.hint == "make the base's compat overlay again: doit compat:fixture"
    path.write_text("{")
    with pytest.raises(StageError, match="not valid JSON"):
        CompatRecord.read(path)
    with pytest.raises(StageError, match="no compat record"):
        CompatRecord.read(tmp_path / "other.json")
