"""Evidence layout and the report / inputs schemas (stable keys, golden-style)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import jsonschema
import pytest

from fexstack import jsonio
from runner import evidence
from runner.launch import run_app
from runner.options import RunOptions
from runner.profile import Profile
from tests.test_launch import muvm_profile  # noqa: F401  (a fixture)

REPORT_KEYS = [
    "app", "appcheck", "backend", "command", "duration_seconds", "environment", "exit_status",
    "extraction", "fexstack_version", "finished", "format", "guest_command",
    "guest_status_code", "images", "log", "log_tail", "outcome", "phases", "preflight",
    "reason", "runtime_dir", "signal", "stage", "started", "timed_out",
    # the native backend's identity and host fallback, the display watch, warnings
    "display", "host_fallback", "identity", "warnings",
]  # fmt: skip
REPORT_KEYS.sort()
INPUTS_KEYS = ["fexstack_version", "format", "host", "profile", "resolved", "tools"]
PROFILE_KEYS = [
    "app", "appimage", "args", "backend", "base", "compat", "deps", "env", "gpu", "gpu_absent",
    "gpu_mode", "muvm", "plugin_dirs", "sanitize", "timeout_seconds",
    "host_provides", "privileged", "run_as",  # native backend
]  # fmt: skip
PROFILE_KEYS.sort()
ENVIRONMENT_KEYS = [
    "arch", "cpu", "fex_binaries", "fex_version", "kernel", "muvm", "muvm_version", "page_size",
]  # fmt: skip


def test_timestamped_directories(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 20, 7, 8, 9, tzinfo=dt.UTC)
    assert evidence.timestamp(now) == "20261120T070809Z"
    first = evidence.create("My App!", root=tmp_path, now=now)
    second = evidence.create("My App!", root=tmp_path, now=now)
    assert first.dir == tmp_path / "My_App_" / "20261120T070809Z"
    assert second.dir == tmp_path / "My_App_" / "20261120T070809Z-2"
    assert first.log.exists() and first.log.read_bytes() == b""


def test_out_dir_is_reused_and_cleared(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.report.json").write_text("{}")
    (out / "keep.txt").write_text("mine")
    ev = evidence.create("app", out_dir=out)
    assert ev.dir == out
    assert not ev.report.exists() and (out / "keep.txt").exists()


def test_report_and_inputs_have_stable_keys(
    muvm_profile: Profile,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = run_app(
        muvm_profile,
        RunOptions(command=["/bin/true"], out_dir=tmp_path / "out", echo=False),
    )
    report = jsonio.read(result.evidence_dir / "run.report.json")
    inputs = jsonio.read(result.evidence_dir / "inputs.json")
    assert sorted(report) == REPORT_KEYS
    assert sorted(report["environment"]) == ENVIRONMENT_KEYS
    assert sorted(inputs) == INPUTS_KEYS
    assert sorted(inputs["profile"]) == PROFILE_KEYS
    assert inputs["profile"] == muvm_profile.to_json()  # the expanded profile, verbatim
    assert inputs["host"] == report["environment"]
    # sorted, deterministic JSON text
    text = (result.evidence_dir / "run.report.json").read_text()
    assert text == jsonio.dumps(report)
    hashes = {i["name"]: i["sha256"] for i in report["images"]}
    resolved = {i["name"]: i["sha256"] for i in inputs["resolved"]["images"]}
    assert hashes == resolved and all(len(h) == 64 for h in hashes.values())
    deps = [i for i in inputs["resolved"]["images"] if i["role"] == "deps"]
    assert all(i["manifest_sha256"] == i["sha256"] for i in deps)


def test_schemas_reject_drift() -> None:
    good = {
        "name": "muvm", "status": "ok", "detail": "d", "hint": None,
    }  # fmt: skip
    jsonio.validate({"format": 1, "ok": True, "backend": "muvm", "checks": [good]}, "doctor")
    with pytest.raises(jsonschema.ValidationError):
        jsonio.validate(
            {"format": 1, "ok": True, "backend": "muvm", "checks": [{**good, "extra": 1}]},
            "doctor",
        )
    with pytest.raises(jsonschema.ValidationError):
        jsonio.validate(
            {"format": 1, "ok": True, "backend": "muvm",
             "checks": [{**good, "status": "maybe"}]},
            "doctor",
        )  # fmt: skip


def test_report_schema_rejects_unknown_outcome(
    muvm_profile: Profile,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = run_app(
        muvm_profile,
        RunOptions(command=["/bin/true"], out_dir=tmp_path / "o", echo=False),
    )
    report = jsonio.read(result.evidence_dir / "run.report.json")
    jsonio.validate(report, "run-report")
    for bad in ({**report, "outcome": "MAYBE"}, {**report, "surprise": 1},
                {k: v for k, v in report.items() if k != "reason"}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonio.validate(bad, "run-report")


def test_run_report_and_appcheck_are_read_back_validated(
    muvm_profile: Profile,  # noqa: F811
    tmp_path: Path,
) -> None:
    from fexstack.errors import RunError
    from runner import appcheck

    result = run_app(
        muvm_profile,
        RunOptions(command=["/bin/true"], out_dir=tmp_path / "o", echo=False),
    )
    ev = evidence.Evidence(result.evidence_dir)
    report = ev.read_report()
    assert report == jsonio.read(ev.report) and report["outcome"] == "PASS"
    ev.report.write_text(jsonio.dumps({**report, "outcome": "MAYBE"}))
    with pytest.raises(RunError) as err:
        ev.read_report()
    assert str(ev.report) in err.value.message and "run-report schema at outcome" in \
        err.value.message
    ev.report.unlink()
    with pytest.raises(RunError, match="no run report"):
        ev.read_report()
    assert appcheck.read_evidence(ev.dir) is None  # this run made no appcheck.json
    (ev.dir / "appcheck.json").write_text('{"appdir": 1}\n')
    with pytest.raises(RunError, match=r"appcheck\.json: does not match the appcheck schema"):
        appcheck.read_evidence(ev.dir)


def test_announce_says_where(tmp_path: Path) -> None:
    ev = evidence.create("a", root=tmp_path)
    out = io.StringIO()
    evidence.announce(ev, "INFRA", "preflight: muvm: missing", out)
    assert out.getvalue() == f"INFRA: preflight: muvm: missing\nevidence: {ev.dir}\n"


def test_outcome_enum_is_the_report_schema_enum() -> None:
    from runner.evidence import Outcome

    schema = jsonio.schema("run-report")
    assert schema["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
    assert [o for o in Outcome if o.ok] == [Outcome.PASS, Outcome.WINDOW_SEEN]
    assert jsonio.dumps({"outcome": Outcome.INFRA}) == jsonio.dumps({"outcome": "INFRA"})
