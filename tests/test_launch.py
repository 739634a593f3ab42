"""run_app end to end with the fake muvm: outcomes, timeouts, a running VM, hash re-checks."""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fexstack import jsonio
from overlays.stack import Base
from runner import hostinfo
from runner.launch import AppcheckResult, run_app
from runner.options import RunOptions
from runner.profile import GPU_ABSENT_REASON, Profile, build_profile
from tests.test_capture import processes_with
from tests.test_muvm import FAKE_MUVM, launches, make_erofs, use_fake_muvm, write_manifest


@pytest.fixture
def muvm_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    """A muvm profile on real EROFS images, the fake muvm on PATH, FEX said to exist."""
    use_fake_muvm(monkeypatch, tmp_path)
    # muvm's FEX cannot exist here: tell the host facts a FEX binary is installed
    monkeypatch.setattr(hostinfo, "fex_binaries", lambda: (Path("/usr/bin/FEX"),))
    images = tmp_path / "images"
    images.mkdir()
    base = make_erofs(images / "base.erofs", {"usr/lib64/libc.so.6": "libc"})
    mesa = make_erofs(images / "mesa-x86_64.erofs", {"usr/lib64/dri/x.so": "dri"})
    compat = make_erofs(images / "compat.erofs", {"lib64/.keep": ""})
    deps = []
    for name in ("gtk", "webkit"):
        image = make_erofs(images / f"{name}.erofs", {f"usr/lib64/lib{name}.so.1": name})
        deps.append((name, image, write_manifest(image)))
    return build_profile(
        "demo",
        base=base,
        gpu=[mesa],
        compat=compat,
        deps=deps,
        muvm=FAKE_MUVM,
        env={"DEMO_VAR": "1"},
        backend="muvm",
    )


def report_of(evidence_dir: Path) -> dict:
    report = jsonio.read(evidence_dir / "run.report.json")
    jsonio.validate(report, "run-report")
    jsonio.validate(jsonio.read(evidence_dir / "inputs.json"), "inputs")
    return report


def test_pass_with_exact_argv(muvm_profile: Profile, tmp_path: Path) -> None:
    result = run_app(
        muvm_profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )  # fmt: skip
    assert result.outcome == "PASS", result.reason
    report = report_of(result.evidence_dir)
    assert report["exit_status"] == 0 and report["guest_status_code"] == 0
    images = [str(p) for p in muvm_profile.images()]
    expected = [str(FAKE_MUVM), "--emu=fex"]
    for image in images:
        expected += ["-f", image]
    expected += ["--gpu-mode", "drm", "-e", "DEMO_VAR=1", "--", "/bin/true"]
    assert report["command"] == expected
    assert launches(tmp_path / "argv.log") == [expected]
    assert result.evidence_dir.parent == tmp_path / "ev" / "demo"


def test_fail_for_a_failing_guest_command(muvm_profile: Profile, tmp_path: Path) -> None:
    result = run_app(
        muvm_profile,
        RunOptions(
            command=["/bin/sh", "-c", "echo about-to-fail; exit 42"],
            out_dir=tmp_path / "out",
            echo=False,
        ),
    )
    assert result.evidence_dir == tmp_path / "out"
    assert result.outcome == "FAIL"
    report = report_of(result.evidence_dir)
    assert report["exit_status"] == 42 and report["guest_status_code"] == 42
    assert report["reason"] == "the guest command exited with status 42"
    log = (tmp_path / "out" / "run.log").read_text()
    assert '"/bin/sh" process exited with status code: 42' in log
    assert "about-to-fail" in log


def test_timeout_kills_the_guest_and_still_reports(
    muvm_profile: Profile, tmp_path: Path
) -> None:
    marker = "60.0424242"
    start = time.monotonic()
    result = run_app(
        muvm_profile,
        RunOptions(
            command=["/bin/sleep", marker],
            timeout_seconds=1,
            evidence_root=tmp_path / "ev",
            echo=False,
        ),
    )
    assert time.monotonic() - start < 20
    report = report_of(result.evidence_dir)
    assert report["timed_out"] is True
    assert result.outcome == "FAIL" and "timed out" in report["reason"]
    assert processes_with(marker) == []


def hold_vm_lock(runtime_dir: Path):  # type: ignore[no-untyped-def]
    """Pretend a muvm VM runs: hold the flock of muvm.lock like a running muvm does."""
    fh = open(runtime_dir / "muvm.lock", "wb")  # noqa: SIM115 - the caller closes it
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def test_running_vm_is_refused_with_a_hint(muvm_profile: Profile, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    lock = hold_vm_lock(tmp_path / "xdg")
    try:
        result = run_app(
            muvm_profile,
            RunOptions(
                command=["/bin/touch", str(marker)],
                private_runtime=False,
                evidence_root=tmp_path / "ev",
                echo=False,
            ),
        )
    finally:
        lock.close()
    assert result.outcome == "INFRA"
    report = report_of(result.evidence_dir)
    check = next(c for c in report["preflight"] if c["name"] == "muvm-vm")
    assert check["status"] == "fail" and "ignore every -f" in check["detail"]
    assert check["hint"]
    assert report["command"] is None and not marker.exists()
    assert launches(tmp_path / "argv.log") == []


def test_running_vm_gets_its_own_runtime_dir(muvm_profile: Profile, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    lock = hold_vm_lock(tmp_path / "xdg")
    try:
        # what the fake (like muvm) does without a fresh runtime dir: return 0, run nothing
        import subprocess

        subprocess.run([str(FAKE_MUVM), "--", "/bin/touch", str(marker)], check=True)
        assert not marker.exists()
        result = run_app(
            muvm_profile,
            RunOptions(
                command=["/bin/touch", str(marker)],
                evidence_root=tmp_path / "ev",
                echo=False,
            ),
        )
    finally:
        lock.close()
    assert result.outcome == "PASS", result.reason
    report = report_of(result.evidence_dir)
    assert report["runtime_dir"] and report["runtime_dir"] != str(tmp_path / "xdg")
    assert not Path(report["runtime_dir"]).exists()  # removed after the run
    check = next(c for c in report["preflight"] if c["name"] == "muvm-vm")
    assert check["status"] == "warn" and "own XDG_RUNTIME_DIR" in check["detail"]
    assert marker.exists()


def test_missing_image_is_infra_with_evidence(muvm_profile: Profile, tmp_path: Path) -> None:
    profile = replace(muvm_profile, compat=tmp_path / "images" / "missing-compat.erofs")
    result = run_app(
        profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )
    assert result.outcome == "INFRA"
    report = report_of(result.evidence_dir)
    assert report["stage"] == "preflight"
    assert "missing-compat.erofs" in report["reason"]
    inputs = jsonio.read(result.evidence_dir / "inputs.json")
    assert inputs["profile"] == profile.to_json()
    kinds = {i["name"]: i["kind"] for i in inputs["resolved"]["images"]}
    assert kinds["compat"] == "missing" and kinds["gtk"] == "file"
    assert launches(tmp_path / "argv.log") == []


def test_16k_block_image_is_infra(muvm_profile: Profile, tmp_path: Path) -> None:
    bad = tmp_path / "images" / "16k.erofs"
    data = bytearray((tmp_path / "images" / "gtk.erofs").read_bytes())
    data[1024 + 12] = 14  # blkszbits: 16K blocks, as mkfs.erofs makes on a 16K-page host
    bad.write_bytes(bytes(data))
    profile = replace(muvm_profile, gpu=(bad,))
    result = run_app(
        profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )
    assert result.outcome == "INFRA"
    report = report_of(result.evidence_dir)
    failed = [c for c in report["preflight"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["image:gpu:16k"]
    assert "4096" in failed[0]["detail"]


def test_deps_changed_after_preflight_is_caught(
    muvm_profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner import launch

    gtk = muvm_profile.deps[0].image

    def tamper(state):  # type: ignore[no-untyped-def]
        with open(gtk, "ab") as fh:  # the image changes between preflight and launch
            fh.write(b"\0" * 4096)
        return original(state)

    original = launch._recheck_deps
    monkeypatch.setattr(launch, "_recheck_deps", tamper)
    result = run_app(
        muvm_profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )  # fmt: skip
    assert result.outcome == "INFRA"
    report = report_of(result.evidence_dir)
    assert report["stage"] == "hashcheck" and "manifest records" in report["reason"]
    assert launches(tmp_path / "argv.log") == []


def test_blocking_appcheck_stops_unless_forced(
    muvm_profile: Profile, tmp_path: Path
) -> None:
    from testkit.packer import build_appimage

    appdir = tmp_path / "AppDir"
    appdir.mkdir()
    (appdir / "AppRun").write_text("#!/bin/sh\necho from-apprun\n")
    (appdir / "AppRun").chmod(0o755)
    appimage = build_appimage(appdir, tmp_path / "demo.AppImage")
    profile = replace(muvm_profile, appimage=appimage)
    seen: list[Path] = []

    def appcheck(path: Path) -> AppcheckResult:
        seen.append(path)
        return AppcheckResult(True, "libfoo.so.1 is not found", ("usr/bin/x: libfoo.so.1",))

    stopped = run_app(
        profile,
        RunOptions(appcheck=appcheck, evidence_root=tmp_path / "ev", echo=False),
    )
    assert stopped.outcome == "INFRA" and "appcheck" in stopped.reason
    report = report_of(stopped.evidence_dir)
    assert report["appcheck"]["blocking"] and not report["appcheck"]["forced"]
    forced = run_app(
        profile,
        RunOptions(appcheck=appcheck, force=True, evidence_root=tmp_path / "ev", echo=False),
    )  # fmt: skip
    assert forced.outcome == "PASS", forced.reason
    report = report_of(forced.evidence_dir)
    assert report["appcheck"]["forced"] is True
    assert report["guest_command"][0] == "/bin/sh"
    assert report["guest_command"][1].endswith("/AppRun")
    assert Path(report["extraction"]["appdir"]) == seen[-1]
    assert "from-apprun" in (forced.evidence_dir / "run.log").read_text()


def test_announces_where_the_evidence_went(
    muvm_profile: Profile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_app(
        muvm_profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )  # fmt: skip
    out = capsys.readouterr().out
    assert f"evidence: {result.evidence_dir}" in out
    assert json.loads((result.evidence_dir / "run.report.json").read_text())["outcome"] == "PASS"


# --- a base's gpu overlay that is not installed (Fedora 43+) -----------------------------


def _fedora44_base(tmp_path: Path, mesa: Path) -> Base:
    """A Fedora-44-like base: the RootFS image exists, its Mesa overlay file does not
    (the platform metapackage obsoletes mesa-fex-emu-overlay-* since Fedora 43)."""
    return Base(
        id="fedora-fex",
        path=tmp_path / "fedora-fex.toml",
        image=tmp_path / "images" / "base.erofs",
        packages=None,
        overlays=(mesa,),
    )


def test_absent_gpu_overlay_is_skipped_and_recorded(
    muvm_profile: Profile, tmp_path: Path
) -> None:
    mesa = tmp_path / "no-such" / "mesa-x86_64.erofs"
    profile = build_profile(
        "demo",
        base=_fedora44_base(tmp_path, mesa),
        compat=muvm_profile.compat,
        deps=muvm_profile.deps,
        muvm=FAKE_MUVM,
        backend="muvm",
    )
    assert profile.gpu == () and profile.gpu_absent == (mesa,)
    result = run_app(
        profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )
    assert result.outcome == "PASS", result.reason
    report = report_of(result.evidence_dir)
    argv = launches(tmp_path / "argv.log")[0]
    assert report["command"] == argv
    assert str(mesa) not in argv
    assert argv.count("-f") == 4  # base, compat and the two deps overlays
    warned = [c for c in report["preflight"] if c["name"] == "image:gpu:mesa-x86_64"]
    assert [c["status"] for c in warned] == ["warn"]
    assert "Fedora 43" in warned[0]["detail"]
    inputs = jsonio.read(result.evidence_dir / "inputs.json")
    assert inputs["profile"]["gpu_absent"] == [str(mesa)]
    assert inputs["resolved"]["absent"] == [
        {"role": "gpu", "path": str(mesa), "reason": GPU_ABSENT_REASON}
    ]
    assert all(i["role"] != "gpu" for i in inputs["resolved"]["images"])


def test_broken_gpu_overlay_of_the_base_still_fails_preflight(
    muvm_profile: Profile, tmp_path: Path
) -> None:
    mesa = tmp_path / "images" / "mesa-broken.erofs"
    mesa.write_bytes(b"\0" * 8192)  # installed, but not an EROFS image
    profile = build_profile(
        "demo",
        base=_fedora44_base(tmp_path, mesa),
        deps=muvm_profile.deps,
        muvm=FAKE_MUVM,
        backend="muvm",
    )
    assert profile.gpu == (mesa,) and profile.gpu_absent == ()
    result = run_app(
        profile,
        RunOptions(command=["/bin/true"], evidence_root=tmp_path / "ev", echo=False),
    )
    assert result.outcome == "INFRA"
    report = report_of(result.evidence_dir)
    failed = [c["name"] for c in report["preflight"] if c["status"] == "fail"]
    assert failed == ["image:gpu:mesa-broken"]
    assert launches(tmp_path / "argv.log") == []  # muvm never ran, no -f for it
