"""RunOptions: the one record of how to run, checked when it is made; the entry points
that take it (run_app, run_ab, run_bench, run_probe) share it instead of keywords."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

from fexstack.errors import ConfigError
from runner import ab, bench, launch, probe
from runner.options import RunOptions
from runner.profile import build_profile

ENTRY_POINTS = (launch.run_app, ab.run_ab, bench.run_bench, probe.run_probe, launch.build_failed)


@pytest.mark.parametrize(
    ("fields", "said", "hint"),
    [
        ({"timeout_seconds": 0}, "timeout of 0 seconds is not positive", "--timeout-seconds"),
        ({"timeout_seconds": -2.5}, "timeout of -2.5 seconds", "N > 0"),
        ({"gpu_mode": "vulkan"}, "gpu mode 'vulkan' is not one of drm, venus, software",
         "--gpu-mode"),
        ({"backend": "qemu"}, "backend 'qemu' is not one of muvm, native", "native"),
        ({"ready": "window ("}, "--ready 'window (' is not a valid regular expression",
         "regular expression"),
        ({"command": []}, "command [] is not a program", "non-empty argv"),
        ({"command": ["/bin/true", ""]}, "is not a program and its arguments", "argv"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_when_made(fields: dict[str, Any], said: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunOptions(**fields)
    assert said in caught.value.message
    assert caught.value.hint is not None and hint in caught.value.hint


def test_replace_checks_again() -> None:
    options = RunOptions(timeout_seconds=5)
    with pytest.raises(ConfigError, match="not positive"):
        dataclasses.replace(options, timeout_seconds=0)
    assert dataclasses.replace(options, gpu_mode="venus").timeout_seconds == 5


def test_sequences_become_tuples_and_the_record_is_frozen(tmp_path: Path) -> None:
    options = RunOptions(command=["/bin/sh", "-c", "true"], binds=[str(tmp_path)])  # type: ignore[arg-type]
    assert options.command == ("/bin/sh", "-c", "true")
    assert options.binds == (tmp_path,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.force = True  # type: ignore[misc]
    pattern = RunOptions(ready="ready+").ready_pattern()
    assert pattern is not None and pattern.search("readyyy")
    assert RunOptions().ready_pattern() is None


def test_apply_overrides_only_what_is_set(tmp_path: Path) -> None:
    profile = build_profile("x", base=tmp_path, gpu=[], backend="native", timeout_seconds=9)
    assert RunOptions().apply(profile) == profile
    changed = RunOptions(gpu_mode="software", timeout_seconds=3, backend="muvm",
                         privileged=True).apply(profile)  # fmt: skip
    assert (changed.gpu_mode, changed.timeout_seconds, changed.backend, changed.privileged) == (
        "software", 3, "muvm", True)  # fmt: skip
    assert RunOptions(privileged=False).apply(changed).privileged is True  # False keeps it


def test_entry_points_take_the_record_not_its_fields() -> None:
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    for entry in ENTRY_POINTS:
        params = inspect.signature(entry).parameters
        assert "options" in params, entry.__name__
        own = set(params) - {"options"}
        assert not own & fields, (entry.__name__, sorted(own & fields))
        assert len(params) <= 6, (entry.__name__, list(params))
