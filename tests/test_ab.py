"""ab:<app> and ab:probe-gpu: one evidence bundle per --gpu-mode and a diff.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from runner.ab import run_ab
from runner.options import RunOptions
from runner.profile import Profile
from tests.test_muvm import launches
from tests.test_probe import fake_muvm_profile, native_profile

# the guest sees the mode as FEXSTACK_GPU_MODE: this command fails under venus only
FAILS_ON_VENUS = 'echo "mode is $FEXSTACK_GPU_MODE"; [ "$FEXSTACK_GPU_MODE" != venus ]'


@pytest.fixture
def muvm_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    return fake_muvm_profile(tmp_path, monkeypatch, name="abapp")


def read_diff(result_dir: Path) -> dict[str, Any]:
    diff: dict[str, Any] = jsonio.read(result_dir / "diff.json")
    jsonio.validate(diff, "ab-diff")
    for mode in diff["modes"]:
        report = jsonio.read(result_dir / mode / "run.report.json")
        jsonio.validate(report, "run-report")
        jsonio.validate(jsonio.read(result_dir / mode / "inputs.json"), "inputs")
    return diff


def check_venus_fails(diff: dict[str, Any]) -> None:
    assert diff["modes"] == ["drm", "venus", "software"]
    assert {m: r["outcome"] for m, r in diff["runs"].items()} == {
        "drm": "PASS", "venus": "FAIL", "software": "PASS",
    }  # fmt: skip
    differing = {d["field"]: d["values"] for d in diff["differences"]}
    assert differing["outcome"] == {"drm": "PASS", "venus": "FAIL", "software": "PASS"}
    assert differing["status"] == {"drm": 0, "venus": 1, "software": 0}
    assert "stage" in diff["same"]
    assert diff["all_pass"] is False
    assert set(diff["timings"]["launch"]["seconds"]) == {"drm", "venus", "software"}


def test_ab_with_fake_muvm_one_mode_failing(muvm_profile: Profile, tmp_path: Path) -> None:
    result = run_ab(
        muvm_profile,
        RunOptions(
            command=["/bin/sh", "-c", FAILS_ON_VENUS],
            evidence_root=tmp_path / "ev",
            echo=False,
        ),
    )  # fmt: skip
    assert result.dir.parent == tmp_path / "ev" / "ab-abapp"
    diff = read_diff(result.dir)
    check_venus_fails(diff)
    # each mode really went to muvm with its own --gpu-mode
    modes = [argv[argv.index("--gpu-mode") + 1] for argv in launches(tmp_path / "argv.log")]
    assert modes == ["drm", "venus", "software"]
    assert "mode is venus" in (result.dir / "venus" / "run.log").read_text()
    assert "differs: outcome, status, reason" in (result.dir / "run.log").read_text()


def test_ab_probe_gpu_with_fake_muvm(muvm_profile: Profile, tmp_path: Path) -> None:
    result = run_ab(
        muvm_profile,
        RunOptions(evidence_root=tmp_path / "ev", echo=False),
        probe_kind="gpu",
    )
    diff = read_diff(result.dir)
    assert diff["kind"] == "probe" and diff["name"] == "probe-gpu"
    assert "renderer" in diff["compared"]
    for mode in diff["modes"]:
        doc = jsonio.read(result.dir / mode / "probe.json")
        jsonio.validate(doc, "probe")
        assert doc["gpu_mode"] == mode and doc["guest"]["env"]["FEXSTACK_GPU_MODE"] == mode
        assert diff["runs"][mode]["renderer"] == doc["renderer"]
    assert diff["all_pass"] is True
    assert [d["field"] for d in diff["differences"]] == []


def test_ab_native_one_mode_failing(privileged: None, tmp_path: Path) -> None:
    profile = native_profile(tmp_path, name="abnative")
    result = run_ab(
        profile,
        RunOptions(
            command=["/bin/bash", "-c", FAILS_ON_VENUS],
            evidence_root=tmp_path / "ev",
            echo=False,
        ),
    )  # fmt: skip
    diff = read_diff(result.dir)
    assert diff["backend"] == "native"
    check_venus_fails(diff)
    report = jsonio.read(result.dir / "venus" / "run.report.json")
    assert report["command"][0] == "unshare"


def test_ab_probe_gpu_native(privileged: None, tmp_path: Path) -> None:
    result = run_ab(
        native_profile(tmp_path),
        RunOptions(evidence_root=tmp_path / "ev", echo=False),
        probe_kind="gpu",
        modes=["drm", "software"],
    )  # fmt: skip
    diff = read_diff(result.dir)
    assert diff["modes"] == ["drm", "software"] and diff["all_pass"] is True
    assert {r["renderer"] for r in diff["runs"].values()} == {None}  # no tool in the base
