"""Preflight checks and ``doit doctor``."""

from __future__ import annotations

import fcntl
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from fexstack import jsonio
from runner import hostinfo, preflight
from runner.profile import Layer, build_profile
from tests.test_muvm import FAKE_MUVM, make_erofs, write_manifest


def host(muvm_version: str = "unknown", fex: tuple[str, ...] = ()) -> hostinfo.HostInfo:
    return hostinfo.HostInfo(
        kernel="Linux 6.18",
        arch="aarch64",
        page_size=16384,
        cpu=hostinfo.cpu_facts("Features : fp asimd\n"),
        muvm="/usr/bin/muvm",
        muvm_version=muvm_version,
        fex_binaries=fex,
        fex_version="unknown",
    )


@pytest.mark.parametrize(
    ("version", "fex", "status"),
    [
        ("0.6.0", ("/usr/bin/FEXInterpreter",), "ok"),
        ("0.6.0", ("/usr/bin/FEX",), "fail"),
        ("0.7.1", ("/usr/bin/FEX",), "ok"),
        ("0.7.1", ("/usr/bin/FEXInterpreter",), "fail"),
        ("0.7.1", (), "fail"),
        ("unknown", ("/usr/bin/FEX",), "warn"),
    ],
)
def test_fex_binary_must_match_the_muvm_version(
    version: str, fex: tuple[str, ...], status: str
) -> None:
    profile = build_profile("x", muvm=FAKE_MUVM, backend="muvm")
    check = preflight.check_fex(profile, host(version, fex))
    assert check.status == status, check
    if status == "fail":
        assert check.hint


def test_rootfs_override_is_a_warning(tmp_path: Path) -> None:
    assert preflight.check_rootfs_override({}, tmp_path).status == "ok"
    config = tmp_path / ".fex-emu" / "Config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"Config": {"RootFS": "/home/u/.fex-emu/RootFS/Ubuntu"}}))
    check = preflight.check_rootfs_override({}, tmp_path)
    assert check.status == "warn" and "Ubuntu" in check.detail and check.hint
    config.write_text(json.dumps({"Config": {"Multiblock": "1"}}))
    assert preflight.check_rootfs_override({}, tmp_path).status == "ok"
    env_check = preflight.check_rootfs_override({"FEX_ROOTFS": "/x"}, tmp_path)
    assert env_check.status == "warn" and "FEX_ROOTFS" in env_check.detail


def test_display_checks() -> None:
    assert preflight.check_display({"DISPLAY": ":0"}).status == "ok"
    wayland = preflight.check_display({"WAYLAND_DISPLAY": "wayland-0"})
    assert wayland.status == "warn" and "not forward" in wayland.detail
    both = preflight.check_display({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})
    assert both.status == "ok" and "not forwarded" in both.detail


def test_running_vm_detection(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    check, private = preflight.check_runtime_dir(env, private_runtime=False)
    assert check.status == "ok" and not private
    lock = tmp_path / "muvm.lock"
    lock.write_bytes(b"0123456789abcdef")  # left behind by a muvm that exited: stale
    check, private = preflight.check_runtime_dir(env, private_runtime=False)
    assert check.status == "ok" and not private
    with open(lock, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused, private = preflight.check_runtime_dir(env, private_runtime=False)
        assert refused.status == "fail" and refused.hint and not private
        own, private = preflight.check_runtime_dir(env, private_runtime=True)
        assert own.status == "warn" and private
    inside, _ = preflight.check_runtime_dir({**env, "MUVM_SERVER_PORT": "3334"}, False)
    assert inside.status == "fail" and "MUVM_SERVER_PORT" in inside.detail


def test_manifest_must_match_the_image(tmp_path: Path) -> None:
    image = make_erofs(tmp_path / "d.erofs", {"usr/lib64/libd.so.1": "d"})
    manifest = write_manifest(image)
    layer = Layer("deps", "d", image, manifest)
    assert preflight.check_manifest(layer, {}).status == "ok"
    write_manifest(image, manifest, image_sha256="0" * 64)
    stale = preflight.check_manifest(layer, {})
    assert stale.status == "fail" and "manifest records" in stale.detail and stale.hint
    missing = preflight.check_manifest(replace(layer, manifest=tmp_path / "no.json"), {})
    assert missing.status == "fail" and "does not exist" in missing.detail
    assert preflight.check_manifest(replace(layer, manifest=None), {}).status == "fail"
    # not a manifest: read through the manifest's reader, the file and the key are named
    manifest.write_text(json.dumps({"image": {"sha256": "0" * 64}}))
    bad = preflight.check_manifest(layer, {})
    assert bad.status == "fail" and str(manifest) in bad.detail and "manifest schema" in (
        bad.detail
    ) and "doit overlay:d" in (bad.hint or "")


def test_run_checks_flags_missing_muvm_and_bad_images(tmp_path: Path) -> None:
    not_erofs = tmp_path / "base.erofs"
    not_erofs.write_bytes(b"\0" * 8192)
    profile = build_profile(
        "x", base=not_erofs, gpu=[], muvm=tmp_path / "no-muvm", backend="muvm"
    )
    result = preflight.run_checks(
        profile, host=host(), env={"XDG_RUNTIME_DIR": str(tmp_path)}, home=tmp_path
    )
    failed = {c.name for c in result.failed}
    assert {"muvm", "image:base:base", "fex-binary"} <= failed
    assert not result.ok
    base_check = next(c for c in result.checks if c.name == "image:base:base")
    assert "not an EROFS image" in base_check.detail


def test_missing_images_say_who_provides_them(tmp_path: Path) -> None:
    profile = build_profile(
        "x",
        base=tmp_path / "no-rootfs.erofs",
        gpu=[tmp_path / "no-mesa.erofs"],
        deps=[("app", tmp_path / "no-app.erofs", None)],
        muvm=FAKE_MUVM,
        backend="muvm",
    )
    result = preflight.run_checks(
        profile, host=host(), env={"XDG_RUNTIME_DIR": str(tmp_path)}, home=tmp_path
    )
    images = [c for c in result.failed if c.name.startswith("image:")]
    hints = {c.name.split(":")[1]: c.hint or "" for c in images}
    assert "fex-emu-rootfs-fedora" in hints["base"]
    assert "mesa-fex-emu-overlay-x86_64" in hints["gpu"]
    assert "doit overlay:app" in hints["deps"]


def test_directory_base_only_for_native(tmp_path: Path) -> None:
    profile = build_profile("x", base=tmp_path, gpu=[], muvm=FAKE_MUVM, backend="muvm")
    checks = preflight.run_checks(profile, host=host("0.7.1", ("/usr/bin/FEX",)),
                                  env={"XDG_RUNTIME_DIR": str(tmp_path)}, home=tmp_path)
    assert [c.name for c in checks.failed] == ["image:base:base"]
    native = preflight.run_checks(replace(profile, backend="native"), host=host(), env={},
                                  home=tmp_path)  # fmt: skip
    assert next(c for c in native.checks if c.name == "image:base:base").status == "ok"


def test_doctor_json_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    base = make_erofs(tmp_path / "base.erofs", {"usr/lib64/libc.so.6": "c"})
    profile = build_profile("x", base=base, gpu=[], muvm=FAKE_MUVM, backend="muvm")
    out = io.StringIO()
    ok = preflight.doctor(profile, json_output=True, stream=out)
    doc = json.loads(out.getvalue())
    jsonio.validate(doc, "doctor")
    assert doc["ok"] is ok
    names = [c["name"] for c in doc["checks"]]
    # muvm refuses root: the muvm-user warning follows the muvm check exactly then
    first = ["muvm", "muvm-user"] if os.geteuid() == 0 else ["muvm"]
    assert names[: len(first)] == first and names.count("muvm-user") == len(first) - 1
    assert "image:base:base" in names and "display" in names
    table = io.StringIO()
    preflight.doctor(profile, stream=table)
    lines = table.getvalue().splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "DETAIL"]
    assert any(line.startswith("ok") and "image:base:base" in line for line in lines)
    assert lines[-1].startswith("doctor: ")
    # the system defaults: no FEX RootFS is installed here, so doctor fails
    monkeypatch.setenv("FEXSTACK_MUVM", str(FAKE_MUVM))
    assert preflight.doctor(stream=io.StringIO()) is False


def test_doctor_warns_for_a_missing_mesa_overlay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Fedora-44-like machine: the RootFS is installed, the Mesa overlay is not."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(hostinfo, "fex_binaries", lambda: (Path("/usr/bin/FEX"),))
    rootfs = make_erofs(tmp_path / "default.erofs", {"usr/lib64/libc.so.6": "c"})
    mesa = tmp_path / "overlays" / "mesa-x86_64.erofs"
    profile = build_profile(
        "doctor", base=rootfs, muvm=FAKE_MUVM, backend="muvm", system_gpu=(mesa,)
    )
    assert profile.gpu == () and profile.gpu_absent == (mesa,)
    out = io.StringIO()
    assert preflight.doctor(profile, stream=out) is True
    text = out.getvalue()
    line = next(row for row in text.splitlines() if "image:gpu:mesa-x86_64" in row)
    assert line.startswith("warn") and "Fedora 43" in line and "skipped" in line
    assert text.splitlines()[-1] == "doctor: ok"
    doc_out = io.StringIO()
    preflight.doctor(profile, json_output=True, stream=doc_out)
    doc = json.loads(doc_out.getvalue())
    jsonio.validate(doc, "doctor")
    assert doc["ok"] is True
    # installed but broken: a failure, as before
    mesa.parent.mkdir()
    mesa.write_bytes(b"\0" * 8192)
    broken = build_profile(
        "doctor", base=rootfs, muvm=FAKE_MUVM, backend="muvm", system_gpu=(mesa,)
    )
    assert preflight.doctor(broken, stream=io.StringIO()) is False
