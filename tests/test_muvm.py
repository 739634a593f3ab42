"""muvm's argv, the fake muvm's grammar and output rules, and reading muvm's status lines.

Also holds the helpers the other runner tests import: the fake muvm on PATH and small
real EROFS images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fexstack.errors import RunError
from runner import capture, hostinfo
from runner.muvm import interpret, muvm_argv
from runner.profile import DepsLayer, build_profile, default_backend

FAKE_DIR = Path(__file__).resolve().parent / "fake_muvm"
FAKE_MUVM = FAKE_DIR / "muvm"


def fake_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment with the fake muvm first on PATH and a private XDG_RUNTIME_DIR."""
    runtime = tmp / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = f"{FAKE_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env["FAKE_MUVM_ARGV_LOG"] = str(tmp / "argv.log")
    env.update(extra)
    return env


def use_fake_muvm(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Path:
    """Put the fake muvm on PATH for this test; returns the argv log path."""
    for key, value in fake_env(tmp).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FEXSTACK_MUVM", raising=False)
    monkeypatch.delenv("MUVM_SERVER_PORT", raising=False)
    return tmp / "argv.log"


def logged_argvs(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def launches(log: Path) -> list[list[str]]:
    """The logged calls that would boot a VM (not fexstack's --version / --help probes)."""
    return [a for a in logged_argvs(log) if a[1:] not in (["--version"], ["--help"])]


def make_erofs(image: Path, files: dict[str, str]) -> Path:
    """A real EROFS image (4096-byte blocks) holding ``files``."""
    src = image.parent / f".src-{image.name}"
    shutil.rmtree(src, ignore_errors=True)
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(
        ["mkfs.erofs", "-b", "4096", "-T0", "-U", "00000000-0000-0000-0000-000000000001",
         str(image), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.rmtree(src)
    return image


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(
    image: Path, manifest: Path | None = None, *, image_sha256: str | None = None
) -> Path:
    """A schema-valid manifest of ``image`` (no packages, files or lock: the runner reads
    only ``image.sha256``, which is ``image_sha256`` when given), through its writer."""
    from overlays import identity
    from overlays import manifest as records
    from overlays.treescan import Entry

    manifest = manifest or image.with_suffix(".manifest.json")
    records.write_manifest(
        manifest,
        records.Manifest(
            stack=records.StackSection(image.stem, "deps", ()),
            lock=None,
            content=identity.identity((), "lz4hc", tool_versions={"fexstack": "t",
                                                                  "erofs-utils": "t"}),
            base=records.BaseSection(None),
            packages=(),
            files=(records.FileRow(Entry("/", "dir", 0o755, 0), None),),
            counts=records.Counts(files=0, dirs=1, symlinks=0, other=0, file_bytes=0, unowned=0),
            image=records.ImageSection(
                file=image.name,
                sha256=image_sha256 or sha256(image),
                size=image.stat().st_size,
                block_size=4096,
                compression="none",
                uuid="00000000-0000-0000-0000-000000000001",
                erofs_utils_version="t",
                mkfs_flags=("-b", "4096", "-T0", "-U", "00000000-0000-0000-0000-000000000001"),
                mkfs_env={},
            ),
            invariants=None,
            tools={"fexstack": "t", "mkfs.erofs": "t", "fsck.erofs": "t"},
        ),
    )
    return manifest


# --- argv ------------------------------------------------------------------------------


def test_muvm_argv_is_exact(tmp_path: Path) -> None:
    profile = build_profile(
        "demo",
        base=Path("/images/base.erofs"),
        gpu=[Path("/images/mesa-x86_64.erofs")],
        compat=Path("/images/compat.erofs"),
        deps=[
            ("gtk", Path("/images/gtk.erofs"), Path("/images/gtk.manifest.json")),
            DepsLayer("webkit", Path("/images/webkit.erofs"), None),
        ],
        muvm=Path("/usr/bin/muvm"),
        gpu_mode="venus",
        env={"MESA_DEBUG": "1", "GDK_BACKEND": "x11"},
        backend="muvm",
    )
    argv = muvm_argv(profile, ["/bin/bash", "/home/u/.cache/x/AppRun", "--flag"])
    assert argv == [
        "/usr/bin/muvm", "--emu=fex",
        "-f", "/images/base.erofs",
        "-f", "/images/mesa-x86_64.erofs",
        "-f", "/images/compat.erofs",
        "-f", "/images/gtk.erofs",
        "-f", "/images/webkit.erofs",
        "--gpu-mode", "venus",
        "-e", "GDK_BACKEND=x11",
        "-e", "MESA_DEBUG=1",
        "--",
        "/bin/bash", "/home/u/.cache/x/AppRun", "--flag",
    ]  # fmt: skip


def test_profile_makes_paths_absolute_and_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing_mesa = tmp_path / "no-mesa.erofs"
    profile = build_profile(
        "demo",
        deps=[("d", Path("rel/d.erofs"), None)],
        muvm=FAKE_MUVM,
        system_rootfs=tmp_path / "RootFS/default.erofs",
        system_gpu=[missing_mesa],
        backend="muvm",
    )
    assert profile.base == tmp_path / "RootFS/default.erofs"
    assert profile.gpu == ()  # autodiscovery only takes overlays that exist
    assert profile.deps[0].image == tmp_path / "rel/d.erofs"
    assert profile.gpu_mode == "drm"
    missing_mesa.write_bytes(b"")
    assert build_profile("demo", system_gpu=[missing_mesa]).gpu == (missing_mesa,)
    assert default_backend("aarch64") == "muvm"
    assert default_backend("x86_64") == "native"


def test_muvm_override_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEXSTACK_MUVM", str(FAKE_MUVM))
    assert build_profile("demo").muvm == FAKE_MUVM
    assert build_profile("demo", muvm=Path("/opt/muvm")).muvm == Path("/opt/muvm")


def test_more_than_26_images_is_an_error() -> None:
    deps = [(f"d{i}", Path(f"/i/d{i}.erofs"), None) for i in range(26)]
    profile = build_profile("x", base=Path("/i/base.erofs"), gpu=[], deps=deps,
                            muvm=Path("/usr/bin/muvm"))  # fmt: skip
    with pytest.raises(RunError, match="27 images"):
        muvm_argv(profile, ["/bin/true"])
    ok = build_profile("x", base=Path("/i/base.erofs"), gpu=[], deps=deps[:25],
                       muvm=Path("/usr/bin/muvm"))  # fmt: skip
    assert muvm_argv(ok, ["/bin/true"]).count("-f") == 26


def test_relative_guest_command_is_refused() -> None:
    profile = build_profile("x", base=Path("/i/b.erofs"), gpu=[], muvm=Path("/usr/bin/muvm"))
    with pytest.raises(RunError, match="not an absolute path"):
        muvm_argv(profile, ["AppRun"])


# --- the fake's grammar and output rules ----------------------------------------------


def run_fake(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FAKE_MUVM), *args], env=env, capture_output=True, text=True)


def test_fake_rejects_unknown_options_and_needs_a_command(tmp_path: Path) -> None:
    env = fake_env(tmp_path)
    bad = run_fake(["--version"], env)
    assert bad.returncode == 1
    assert bad.stderr == "Error: `--version` is not expected in this context\n"
    assert run_fake(["--emu=fex"], env).stderr.startswith("Error: expected `COMMAND`")
    assert run_fake(["--gpu-mode", "vulkan", "/bin/true"], env).returncode == 1
    assert run_fake(["--emu", "qemu", "/bin/true"], env).returncode == 1
    ok = run_fake(["--emu", "fex", "-i", "-t", "--mem", "2048", "-e", "A=1", "-e", "B",
                   "-c", "0-3", "-p", "8080", "--", "/bin/true"], env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_fake_missing_image_fails_to_create_the_vm(tmp_path: Path) -> None:
    env = fake_env(tmp_path)
    out = run_fake(["-f", str(tmp_path / "nope.erofs"), "--", "/bin/true"], env)
    assert out.returncode == 1
    assert "Error: Failed to create the microVM" in out.stderr


def test_status_line_only_through_a_pty(tmp_path: Path) -> None:
    env = fake_env(tmp_path)
    script = ["/bin/sh", "-c", "echo guest-says-hi; exit 7"]
    plain = run_fake(["--emu=fex", "--", *script], env)
    assert plain.returncode == 7  # exit code passes through
    assert plain.stdout == "" and plain.stderr == ""  # pipes: guest output and status dropped
    result = capture.run_pty([str(FAKE_MUVM), "--emu=fex", "--", *script], env=env, echo=False)
    assert result.exit_status == 7
    assert "guest-says-hi" in result.text
    assert '"/bin/sh" process exited with status code: 7' in result.text
    status = interpret(result.exit_status, result.signal, result.text)
    assert (status.outcome, status.guest_status_code) == ("FAIL", 7)


def test_fake_runs_in_home_with_a_filtered_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = fake_env(tmp_path, HOME=str(home), SECRET_HOST_VAR="x", LC_TIME="C", DISPLAY=":0")
    out = tmp_path / "env.txt"
    result = capture.run_pty(
        [str(FAKE_MUVM), "-e", "FROM_E=yes", "--", "/bin/sh", "-c", f"pwd > {out}; env >> {out}"],
        env=env, cwd=tmp_path, echo=False,
    )  # fmt: skip
    assert result.exit_status == 0
    lines = out.read_text().splitlines()
    assert lines[0] == str(home)
    guest = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    assert guest["FROM_E"] == "yes" and guest["LC_TIME"] == "C" and guest["DISPLAY"] == ":1"
    assert "SECRET_HOST_VAR" not in guest and "FAKE_MUVM_ARGV_LOG" not in guest


# --- interpretation -------------------------------------------------------------------


def test_interpret_ignores_noise_and_reads_status_lines() -> None:
    noise = "Failed to set the new pressure in the guest\n"
    assert interpret(0, None, noise + "hello\n").outcome == "PASS"
    signaled = interpret(137, None, noise + '"/bin/app" process terminated by signal: 9\n')
    assert (signaled.outcome, signaled.guest_signal) == ("FAIL", 9)
    status = interpret(248, None, 'Invalid or Unsupported elf file.\n"/bin/bash" process '
                       "exited with status code: 248\n")  # fmt: skip
    assert (status.outcome, status.guest_status_code) == ("FAIL", 248)
    exec_fail = interpret(1, None, 'Failed to execute "/x" as child process: No such file\n')
    assert exec_fail.outcome == "FAIL" and "could not start" in exec_fail.reason
    vm = interpret(1, None, "Error: Failed to create the microVM\n")
    assert vm.outcome == "INFRA"
    rootfs = interpret(0, None, "Failed to mount FEX rootfs, carrying on without.\nok\n")
    assert rootfs.outcome == "INFRA"
    muvm_err = interpret(1, None, "Error: real user ID or effective user ID is 0\n")
    assert muvm_err.outcome == "INFRA"


# --- host facts -----------------------------------------------------------------------


def test_cpu_facts_aarch64_and_x86() -> None:
    arm = hostinfo.cpu_facts(
        "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd sve sve2 atomics\n"
        "CPU part\t: 0x022\n"
    )
    assert arm.sve and arm.sve2 and arm.avx512 == ()
    m1 = hostinfo.cpu_facts("processor : 0\nFeatures : fp asimd atomics\n")
    assert not m1.sve
    x86 = hostinfo.cpu_facts("model name : Some CPU\nflags : fpu sse avx2 avx512f avx512bw\n")
    assert x86.model == "Some CPU" and x86.avx512 == ("avx512bw", "avx512f")


def test_muvm_version_survives_a_muvm_without_version_flag() -> None:
    # like the real one, the fake rejects --version: the version is unknown, not an error
    assert hostinfo.muvm_version(FAKE_MUVM) == "unknown"
    info = hostinfo.collect(FAKE_MUVM)
    assert info.muvm == str(FAKE_MUVM) and info.page_size > 0 and info.kernel
