"""probe:display and probe:gpu: with the fake muvm and natively (overlayfs + chroot, real bash).

The helpers here (:func:`fake_muvm_profile`, :func:`native_base`) are shared with
tests/test_ab.py and tests/test_bench.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fexstack import jsonio
from runner import hostinfo, probe
from runner.options import RunOptions
from runner.profile import Profile, build_profile
from tests.test_muvm import FAKE_MUVM, launches, make_erofs, use_fake_muvm, write_manifest

HOST_LIBDIR = Path("/usr/lib/x86_64-linux-gnu")


def fake_muvm_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "probe-ctx"
) -> Profile:
    """A muvm profile on real EROFS images with a deps overlay; the fake muvm on PATH."""
    use_fake_muvm(monkeypatch, tmp_path)
    monkeypatch.setattr(hostinfo, "fex_binaries", lambda: (Path("/usr/bin/FEX"),))
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    base = make_erofs(images / "base.erofs", {"usr/lib64/libc.so.6": "libc"})
    mesa = make_erofs(images / "mesa-x86_64.erofs", {"usr/lib64/dri/x.so": "dri"})
    deps = make_erofs(images / "deps.erofs", {"usr/lib64/libdeps.so.1": "deps"})
    return build_profile(
        name, base=base, gpu=[mesa], deps=[("deps", deps, write_manifest(deps))],
        muvm=FAKE_MUVM, backend="muvm",
    )  # fmt: skip


def native_base(work: Path) -> Path:
    """A Fedora-like base directory holding the toolchain root's glibc and bash only."""
    if not (HOST_LIBDIR / "libc.so.6").exists() or not Path("/bin/bash").exists():
        pytest.skip("needs the toolchain root's glibc and bash")
    base = work / "base"
    if base.exists():
        return base
    lib64 = base / "usr/lib64"
    lib64.mkdir(parents=True)
    for lib in ("libc.so.6", "ld-linux-x86-64.so.2", "libtinfo.so.6"):
        shutil.copy2(HOST_LIBDIR / lib, lib64 / lib)
    (base / "usr/bin").mkdir()
    shutil.copy2("/bin/bash", base / "usr/bin/bash")
    (base / "bin").symlink_to("usr/bin")
    (base / "lib64").symlink_to("usr/lib64")
    (base / "etc").mkdir()
    (base / "etc/ld.so.conf").write_text("/usr/lib64\n")
    subprocess.run(["ldconfig", "-r", str(base)], check=True, capture_output=True)
    return base


def native_profile(work: Path, name: str = "probe-ctx", **extra: object) -> Profile:
    return build_profile(name, base=native_base(work), gpu=[], backend="native",
                         **extra)  # type: ignore[arg-type]  # fmt: skip


def check_probe(result: probe.ProbeResult) -> dict[str, Any]:
    doc: dict[str, Any] = jsonio.read(result.path)
    jsonio.validate(doc, "probe")
    report = jsonio.read(result.run.evidence_dir / "run.report.json")
    jsonio.validate(report, "run-report")
    assert doc == result.probe
    return doc


@pytest.fixture
def muvm_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    return fake_muvm_profile(tmp_path, monkeypatch)


# --- parsing (text as the tools print it) ------------------------------------------------

GLXINFO_B = """\
name of display: :1
display: :1  screen: 0
direct rendering: Yes
Extended renderer info (GLX_MESA_query_renderer):
    Vendor: Mesa (0xffffffff)
OpenGL vendor string: Mesa
OpenGL renderer string: virgl (Apple M2 Max)
OpenGL core profile version string: 4.3 (Core Profile) Mesa 25.1.4
"""
VULKANINFO_SUMMARY = """\
Devices:
========
GPU0:
	apiVersion         = 1.3.289
	deviceType         = PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU
	deviceName         = Virtio-GPU Venus (Apple M2 Max)
	driverName         = venus
"""


def test_gpu_parsing_takes_the_renderer_and_records_absent_tools() -> None:
    mark = probe.MARK
    text = "\n".join([
        "== launch noise", f"{mark} env FEXSTACK_GPU_MODE=venus", f"{mark} dri /dev/dri/card0",
        f"{mark} tool glxinfo present /usr/bin/glxinfo", f"{mark} begin glxinfo", GLXINFO_B,
        f"{mark} end glxinfo 0", f"{mark} tool eglinfo absent",
        f"{mark} tool vulkaninfo present /usr/bin/vulkaninfo", f"{mark} begin vulkaninfo",
        VULKANINFO_SUMMARY, f"{mark} end vulkaninfo 1", f"{mark} done",
    ])  # fmt: skip
    gpu = probe.parse_gpu(text)
    assert gpu is not None
    assert gpu["renderer"] == "virgl (Apple M2 Max)" and gpu["renderer_source"] == "glxinfo"
    assert gpu["tools"]["eglinfo"] == {"present": False, "package": "egl-utils"}
    glx = gpu["tools"]["glxinfo"]
    assert glx["exit_status"] == 0 and glx["direct_rendering"] == "Yes"
    vk = gpu["tools"]["vulkaninfo"]
    assert vk["renderer"] == "Virtio-GPU Venus (Apple M2 Max)" and vk["driver"] == "venus"
    assert vk["exit_status"] == 1
    assert gpu["env"]["FEXSTACK_GPU_MODE"] == "venus" and gpu["dri_devices"] == ["/dev/dri/card0"]
    # an unfinished probe (no end marker) is no result
    assert probe.parse_gpu(text.replace(f"{mark} done", "")) is None


def test_host_display_implies_the_x11_bridge() -> None:
    facts = probe.host_display("muvm", {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})
    assert facts["x11_bridge"] is True and facts["expected_guest_display"] == ":1"
    assert any("WAYLAND_DISPLAY" in n for n in facts["notes"])
    assert probe.host_display("muvm", {})["expected_guest_display"] is None
    assert probe.host_display("native", {"DISPLAY": ":5"})["expected_guest_display"] == ":5"


# --- with the fake muvm ------------------------------------------------------------------


def test_display_probe_with_fake_muvm(
    muvm_profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    result = probe.run_probe(
        "display",
        muvm_profile,
        RunOptions(evidence_root=tmp_path / "ev", echo=False),
        context="test",
    )  # fmt: skip
    doc = check_probe(result)
    assert result.run.outcome == "PASS", result.run.reason
    assert result.run.evidence_dir.parent == tmp_path / "ev" / "probe-display"
    env = doc["guest"]["env"]
    # the bridge's :1, no Wayland, no session type: exactly what muvm forwards
    assert env["DISPLAY"] == ":1" and env["WAYLAND_DISPLAY"] is None
    assert env["XDG_SESSION_TYPE"] is None
    assert doc["host"]["x11_bridge"] is True and doc["host"]["guest_display_as_expected"] is True
    assert doc["guest"]["x11_socket"]["path"] == "/tmp/.X11-unix/X1"
    # the probe went through muvm with the profile's layers and the mode in the guest env
    argv = launches(tmp_path / "argv.log")[-1]
    assert argv.count("-f") == 3 and "FEXSTACK_GPU_MODE=drm" in argv


def test_gpu_probe_with_fake_muvm_records_absent_tools(
    muvm_profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # glxinfo is on PATH (a script reporting a renderer); the others as the host has them
    tools = tmp_path / "tools"
    tools.mkdir()
    glxinfo = tools / "glxinfo"
    glxinfo.write_text("#!/bin/sh\necho 'OpenGL renderer string: probe-test renderer'\n")
    glxinfo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin:{os.environ['PATH']}")
    present = {t.name: shutil.which(t.name) for t in probe.GPU_TOOLS}
    result = probe.run_probe(
        "gpu",
        muvm_profile,
        RunOptions(gpu_mode="software", evidence_root=tmp_path / "ev", echo=False),
    )  # fmt: skip
    doc = check_probe(result)
    assert result.run.outcome == "PASS", result.run.reason
    assert doc["gpu_mode"] == "software"
    assert doc["guest"]["env"]["FEXSTACK_GPU_MODE"] == "software"
    for tool in probe.GPU_TOOLS:
        found = doc["guest"]["tools"][tool.name]
        assert found["present"] is bool(present[tool.name])
        if not present[tool.name]:
            assert found == {"present": False, "package": tool.package}
            assert f"{tool.name} ({tool.package})" in doc["missing_tools"]
        else:
            assert found["path"] == present[tool.name] and found["package"] == tool.package
            assert isinstance(found["exit_status"], int)
            assert f"{tool.name} ({tool.package})" not in doc["missing_tools"]
    glx = doc["guest"]["tools"]["glxinfo"]
    assert (glx["path"], glx["exit_status"]) == (str(glxinfo), 0)
    assert glx["renderer"] == "probe-test renderer"
    assert doc["renderer"] == "probe-test renderer"
    assert doc["guest"]["renderer_source"] == "glxinfo"


def test_probe_that_never_starts_is_infra_with_evidence(
    muvm_profile: Profile, tmp_path: Path
) -> None:
    from dataclasses import replace

    broken = replace(muvm_profile, base=tmp_path / "images" / "missing.erofs")
    result = probe.run_probe("gpu", broken, RunOptions(evidence_root=tmp_path / "ev", echo=False))
    doc = check_probe(result)
    assert doc["outcome"] == "INFRA" and doc["guest"] is None and "missing.erofs" in doc["reason"]
    assert launches(tmp_path / "argv.log") == []


# --- natively: the real bash of the base, in a chroot ---------------------------------------


def test_display_probe_native(
    privileged: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", ":7")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-1")
    profile = native_profile(tmp_path)
    result = probe.run_probe(
        "display",
        profile,
        RunOptions(evidence_root=tmp_path / "ev", echo=False),
    )
    doc = check_probe(result)
    assert result.run.outcome == "PASS", (result.run.evidence_dir / "run.log").read_text()
    assert doc["backend"] == "native"
    assert doc["guest"]["env"]["DISPLAY"] == ":7"  # no bridge natively: the host's own
    assert doc["guest"]["env"]["WAYLAND_DISPLAY"] is None
    assert doc["host"]["guest_display_as_expected"] is True
    report = jsonio.read(result.run.evidence_dir / "run.report.json")
    assert report["guest_command"][0] == "/bin/bash"
    assert report["command"][0] == "unshare"  # it really ran in the namespace


def test_gpu_probe_native_records_every_tool_absent(privileged: None, tmp_path: Path) -> None:
    result = probe.run_probe(
        "gpu",
        native_profile(tmp_path),
        RunOptions(gpu_mode="venus", evidence_root=tmp_path / "ev", echo=False),
    )  # fmt: skip
    doc = check_probe(result)
    assert result.run.outcome == "PASS", (result.run.evidence_dir / "run.log").read_text()
    # the base holds bash and glibc only: every tool is absent, and said so
    assert doc["guest"]["tools"] == {
        t.name: {"present": False, "package": t.package} for t in probe.GPU_TOOLS
    }
    assert doc["renderer"] is None
    assert doc["missing_tools"] == [
        "glxinfo (glx-utils)", "eglinfo (egl-utils)", "vulkaninfo (vulkan-tools)",
    ]  # fmt: skip
    assert doc["guest"]["env"]["FEXSTACK_GPU_MODE"] == "venus"


# --- the doit tasks ------------------------------------------------------------------------


def test_task_generators_cover_every_app_stack() -> None:
    from fexstack.errors import ConfigError
    from overlays.project import Project
    from tasks import probes as probetasks
    from tasks.stackinfo import stacks

    project = Project(Path(__file__).resolve().parent.parent)
    infos = stacks(project)
    apps = [name for name, info in infos.items() if info.has_app]
    assert apps, "the project's stacks have apps (demo, bambu)"
    probes = {t["basename"]: t for t in probetasks.task_probe(project, infos)}
    assert sorted(probes) == ["probe:display", "probe:gpu"]
    ab = {t["basename"]: t for t in probetasks.task_ab(project, infos)}
    assert sorted(ab) == sorted([f"ab:{a}" for a in apps] + ["ab:probe-gpu"])
    bench = {t["basename"]: t for t in probetasks.task_bench(project, infos)}
    assert sorted(bench) == sorted(f"bench:{a}" for a in apps)
    for name in apps:
        assert ab[f"ab:{name}"]["task_dep"] == [f"overlay:{name}"]
        assert bench[f"bench:{name}"]["task_dep"] == [f"overlay:{name}"]
        params = {p["long"]: p["default"] for p in bench[f"bench:{name}"]["params"]}
        assert params["runs"] == 3 and params["ready"] == "" and "timeout-seconds" in params
    for task in [*probes.values(), *ab.values(), *bench.values()]:
        assert task["doc"] and "\n" not in task["doc"]
    assert {p["long"] for p in probes["probe:gpu"]["params"]} >= {"stack", "bare", "gpu-mode"}
    assert "task_dep" not in ab["ab:probe-gpu"]  # its context is picked at run time
    with pytest.raises(ConfigError):
        probetasks._modes("drm,opengl")
    assert probetasks._modes("venus, drm") == ["venus", "drm"]
    with pytest.raises(ConfigError, match="no stack has an"):
        probetasks.context(project, {}, "", False)
