"""bench:<app>: cold and warm starts (the extraction cache dropped or kept), per-phase stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from runner.bench import run_bench
from runner.options import RunOptions
from runner.profile import build_profile
from testkit.packer import build_appimage
from tests.test_probe import fake_muvm_profile, native_base


def make_appimage(work: Path, script: str) -> Path:
    appdir = work / "BenchDir"
    appdir.mkdir()
    (appdir / "AppRun").write_text(script)
    (appdir / "AppRun").chmod(0o755)
    return build_appimage(appdir, work / "bench.AppImage")


def read_bench(result_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = jsonio.read(result_dir / "bench.json")
    jsonio.validate(doc, "bench")
    for run in doc["runs"]:
        jsonio.validate(jsonio.read(result_dir / run["evidence"] / "run.report.json"),
                        "run-report")  # fmt: skip
    return doc


def check_cold_warm(doc: dict[str, Any], runs: int) -> None:
    kinds = [(r["kind"], r["index"]) for r in doc["runs"]]
    assert kinds == [(k, i) for i in range(1, runs + 1) for k in ("cold", "warm")]
    assert all(r["outcome"] == "PASS" for r in doc["runs"]), doc["runs"]
    assert [r["cache_hit"] for r in doc["runs"] if r["kind"] == "cold"] == [False] * runs
    assert [r["cache_hit"] for r in doc["runs"] if r["kind"] == "warm"] == [True] * runs
    for kind in ("cold", "warm"):
        summary = doc["summary"][kind]
        for phase in ("preflight", "extract", "launch", "total"):
            s = summary[phase]
            assert s["n"] == runs and s["min"] <= s["median"] <= s["max"], (kind, phase, s)
        assert summary["appcheck"] is None  # no appcheck hook given
    # every cold run after the first dropped the extraction the warm run before it used
    assert all(r["cache_dropped"] for r in doc["runs"] if r["kind"] == "cold" and r["index"] > 1)


def test_bench_with_fake_muvm_and_ready_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = fake_muvm_profile(tmp_path, monkeypatch, name="benchapp")
    appimage = make_appimage(tmp_path, "#!/bin/sh\necho starting\necho window-ready\nsleep 60\n")
    from dataclasses import replace

    profile = replace(profile, appimage=appimage)
    result = run_bench(
        profile,
        RunOptions(
            ready=r"window-re+ady",
            timeout_seconds=30,
            evidence_root=tmp_path / "ev",
            echo=False,
        ),
        runs=2,
    )  # fmt: skip
    doc = read_bench(result.dir)
    check_cold_warm(doc, 2)
    assert doc["ready"] == "window-re+ady"
    assert all(r["ready"] for r in doc["runs"])
    # the app sleeps 60 s after the marker: it was stopped at the marker, well before that
    assert doc["summary"]["cold"]["launch"]["max"] < 20
    assert doc["summary"]["warm"]["ready"]["n"] == 2
    # cold runs boot a fresh VM (their own XDG_RUNTIME_DIR), warm runs do not
    assert all(r["runtime_dir"] for r in doc["runs"] if r["kind"] == "cold")
    assert not any(r["runtime_dir"] for r in doc["runs"] if r["kind"] == "warm")
    report = jsonio.read(result.dir / "cold-1" / "run.report.json")
    assert "ready marker" in report["reason"] and report["phases"]["ready"] is not None
    out = capsys.readouterr().out
    assert "cold min / median / max" in out and "bench.json" in out


def test_bench_native_runs_to_exit(privileged: None, tmp_path: Path) -> None:
    appimage = make_appimage(tmp_path, "#!/bin/bash\necho bench-native-ran\n")
    profile = build_profile("benchnative", base=native_base(tmp_path), gpu=[],
                            appimage=appimage, backend="native")  # fmt: skip
    result = run_bench(profile, RunOptions(evidence_root=tmp_path / "ev", echo=False), runs=2)
    doc = read_bench(result.dir)
    assert doc["backend"] == "native" and doc["ready"] is None
    check_cold_warm(doc, 2)
    assert not any(r["ready"] for r in doc["runs"]) and doc["summary"]["cold"]["ready"] is None
    assert "bench-native-ran" in (result.dir / "warm-2" / "run.log").read_text()


def test_bench_refuses_zero_runs(tmp_path: Path) -> None:
    from fexstack.errors import ConfigError

    profile = build_profile("x", base=tmp_path, gpu=[], backend="native")
    with pytest.raises(ConfigError):
        run_bench(profile, RunOptions(evidence_root=tmp_path / "ev"), runs=0)
