"""Least privilege of the native backend: a fixture AppImage reports who it runs as.

Its AppRun (tests/data/privreport.c, on the glibc base of tests/test_native.py) prints what
``id -u`` and ``id -G`` would, its capability sets from /proc/self/status, and whether it
can open for writing /proc/sys/vm/drop_caches, a block device under /dev and a root-owned
file in a shared folder; then it starts a bwrap sandbox when /usr/bin/bwrap is there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fexstack import jsonio
from runner.launch import RunResult, run_app
from runner.options import RunOptions
from runner.profile import Profile, build_profile
from tests.test_native import PROFILE_ENV, gcc, layout  # noqa: F401  (the fixture)

SOURCE = Path(__file__).parent / "data" / "privreport.c"
HOST_LIBS = "/usr/lib/x86_64-linux-gnu"
ZERO_CAPS = "0000000000000000"


@pytest.fixture(scope="module")
def appimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testkit.packer import build_appimage

    work = tmp_path_factory.mktemp("privreport")
    appdir = work / "AppDir"
    appdir.mkdir()
    gcc("-O1", "-o", appdir / "AppRun", SOURCE)
    return build_appimage(appdir, work / "privreport.AppImage")


@pytest.fixture
def shared_root_file() -> Iterator[Path]:
    """A root-owned 0644 file in a folder of the shared /tmp."""
    folder = Path(tempfile.mkdtemp(prefix="fexstack-shared-", dir="/tmp"))
    folder.chmod(0o755)
    target = folder / "root-owned"
    target.write_text("root's\n")
    target.chmod(0o644)
    try:
        yield target
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def no_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)


def profile(layout: dict[str, object], appimage: Path, target: Path) -> Profile:  # noqa: F811
    return build_profile(
        "privreport", appimage=appimage, base=layout["base"], gpu=[],  # type: ignore[arg-type]
        env=PROFILE_ENV, backend="native", args=[str(target)],
    )  # fmt: skip


def facts(result: RunResult) -> dict[str, str]:
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "PASS", log
    out = {}
    for line in log.splitlines():
        if m := re.match(r"^([A-Za-z_-]+):\s*(.*?)\s*$", line):
            out.setdefault(m.group(1), m.group(2))
    return out


def report(result: RunResult) -> dict[str, object]:
    doc = jsonio.read(result.evidence_dir / "run.report.json")
    jsonio.validate(doc, "run-report")
    assert isinstance(doc, dict)
    return doc


def assert_unprivileged(seen: dict[str, str]) -> None:
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert seen[cap] == ZERO_CAPS, (cap, seen)
    assert seen["NoNewPrivs"] == "1"
    assert seen["write-drop_caches"] == "no"
    assert seen["block-device"].startswith("/dev/")
    assert seen["write-block-device"] == "no"
    assert seen["write-shared-root-file"] == "no"
    assert seen["home"].endswith("writable yes") and seen["tmp-writable"] == "yes"


def test_sudo_user_without_capabilities(
    privileged: None, layout: dict[str, object], appimage: Path,  # noqa: F811
    shared_root_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("SUDO_UID", "4242")
    monkeypatch.setenv("SUDO_GID", "4343")
    before = set(Path("/tmp").glob("fexstack-user-*"))  # other runs on the machine may have some
    result = run_app(
        profile(layout, appimage, shared_root_file),
        RunOptions(evidence_root=tmp_path, echo=False),
    )  # fmt: skip
    seen = facts(result)
    assert seen["id-u"] == "4242" and seen["id-G"] == "4343"
    assert_unprivileged(seen)
    assert seen["runtime-dir"] == "owner 4242 mode 700 writable yes"
    doc = report(result)
    identity = doc["identity"]
    assert isinstance(identity, dict)
    assert (identity["uid"], identity["gid"], identity["groups"]) == (4242, 4343, [])
    assert identity["source"] == "sudo" and identity["no_new_privs"] is True
    assert set(identity["capabilities"].values()) == {ZERO_CAPS}
    assert doc["warnings"] == []
    left = set(Path("/tmp").glob("fexstack-user-*")) - before
    assert not left, f"per-run user folders are removed: {sorted(left)}"


def test_nobody_without_an_invoking_user(
    privileged: None, layout: dict[str, object], appimage: Path,  # noqa: F811
    shared_root_file: Path, tmp_path: Path, no_sudo: None,
) -> None:  # fmt: skip
    result = run_app(
        profile(layout, appimage, shared_root_file),
        RunOptions(evidence_root=tmp_path, echo=False),
    )  # fmt: skip
    seen = facts(result)
    assert seen["id-u"] == "65534" and seen["id-G"] == "65534"
    assert_unprivileged(seen)
    assert report(result)["identity"]["source"] == "run-as"  # type: ignore[index]


def test_owner_of_the_output_folder(
    privileged: None, layout: dict[str, object], appimage: Path,  # noqa: F811
    shared_root_file: Path, tmp_path: Path, no_sudo: None,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 5151, 5252)
    result = run_app(
        profile(layout, appimage, shared_root_file),
        RunOptions(out_dir=out, echo=False),
    )
    seen = facts(result)
    assert seen["id-u"] == "5151" and seen["id-G"] == "5252"
    assert_unprivileged(seen)


def test_privileged_runs_as_root_with_a_warning(
    privileged: None, layout: dict[str, object], appimage: Path,  # noqa: F811
    shared_root_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("SUDO_UID", "4242")
    result = run_app(
        profile(layout, appimage, shared_root_file),
        RunOptions(evidence_root=tmp_path, echo=False, privileged=True),
    )  # fmt: skip
    seen = facts(result)
    assert seen["id-u"] == "0" and seen["CapEff"] != ZERO_CAPS
    assert seen["write-drop_caches"] == "yes" and seen["write-shared-root-file"] == "yes"
    doc = report(result)
    assert doc["identity"] is None or doc["identity"]["privileged"]  # type: ignore[index]
    assert any("as root" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_bwrap_from_the_host_fallback_runs_unprivileged(
    privileged: None, layout: dict[str, object], appimage: Path,  # noqa: F811
    shared_root_file: Path, tmp_path: Path, no_sudo: None,
) -> None:  # fmt: skip
    """The root is a mount point of its own (pivot_root), so bwrap can make its user
    namespace; bwrap and its libraries come from the host through host_provides."""
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap is missing from the toolchain root (.devroot/packages.txt)")
    # a layer that has a file in the host's library folder: the folder is merged
    layer = tmp_path / "layer"
    (layer / HOST_LIBS.lstrip("/")).mkdir(parents=True)
    (layer / HOST_LIBS.lstrip("/") / "fexstack-layer-only.txt").write_text("layer\n")
    image = tmp_path / "layer.erofs"  # an image, as real layers are: the merge nests overlays
    subprocess.run(["mkfs.erofs", str(image), str(layer)], check=True, capture_output=True)
    base = profile(layout, appimage, shared_root_file)
    with_host = dataclasses.replace(
        base, gpu=(image,), host_provides=("/usr/bin/bwrap", HOST_LIBS)
    )
    result = run_app(with_host, RunOptions(evidence_root=tmp_path, echo=False))
    seen = facts(result)
    assert seen["root-fs"] == "overlay"  # the root is a mount point, entered by pivot_root
    assert "fexstack-native: pivot_root " in (result.evidence_dir / "run.log").read_text()
    assert seen["bwrap"] == "exit 0", seen
    assert seen["bwrap-inner"] == "uid 65534"
    fallback = {f["path"]: f for f in report(result)["host_fallback"]}  # type: ignore[union-attr]
    assert fallback["/usr/bin/bwrap"]["mode"] == "host"
    assert fallback["/usr/bin/bwrap"]["listed"] == ["/usr/bin/bwrap"]
    libs = fallback[HOST_LIBS]
    assert libs["mode"] == "merged" and libs["files"] > 10
    assert f"{HOST_LIBS}/fexstack-layer-only.txt" not in libs["listed"]
    # without the declaration the host's bwrap is not there (the default: no fallback)
    plain = run_app(base, RunOptions(evidence_root=tmp_path, echo=False))
    assert facts(plain)["bwrap"] == "absent"
    assert report(plain)["host_fallback"] is None


def test_declared_host_path_missing_is_infra(
    privileged: None, layout: dict[str, object], appimage: Path,  # noqa: F811
    shared_root_file: Path, tmp_path: Path,
) -> None:  # fmt: skip
    missing = dataclasses.replace(
        profile(layout, appimage, shared_root_file), host_provides=("/usr/bin/no-such-tool",)
    )
    result = run_app(missing, RunOptions(evidence_root=tmp_path, echo=False))
    assert result.outcome == "INFRA"
    assert result.reason.startswith("preflight: host:/usr/bin/no-such-tool")
    # the namespace side refuses it too, should a path vanish after preflight
    from runner import native

    run = native.run(missing, ["/bin/true"], echo=False)
    status = native.interpret(run.exit_status, run.signal, run.text)
    assert status.outcome == "INFRA" and "/usr/bin/no-such-tool" in status.reason


def test_native_preflight_describes_the_display() -> None:
    from runner import preflight

    check = preflight.check_display({"DISPLAY": ":3", "WAYLAND_DISPLAY": "w-0"}, "native")
    assert check.status == preflight.OK and "DISPLAY=:3, WAYLAND_DISPLAY=w-0" in check.detail
    assert "bridge" in preflight.check_display({"DISPLAY": ":3"}).detail  # muvm's


# --- who the app runs as: the rules, without running anything --------------------------


def test_resolve_prefers_sudo_then_the_output_owner_then_run_as(tmp_path: Path) -> None:
    from runner import identity

    sudo = {"SUDO_UID": "1000", "SUDO_GID": "1001"}
    assert identity.resolve(sudo, euid=0) == identity.Identity(1000, 1001, "sudo")
    assert identity.resolve({"SUDO_UID": "1000"}, euid=0).gid == 1000
    owned = tmp_path / "owned"
    owned.mkdir()
    if os.geteuid() == 0:
        os.chown(owned, 2000, 2001)
        assert identity.resolve({}, owned, euid=0) == identity.Identity(2000, 2001, "output-owner")
    # root's own folder and SUDO_UID=0 say nothing about the user: run_as decides
    root_owned = Path("/")
    assert identity.resolve({"SUDO_UID": "0"}, root_owned, euid=0).source == "run-as"
    assert identity.resolve({}, None, euid=0, run_as=(3000, 3001)).uid == 3000
    assert identity.resolve({"SUDO_UID": "x"}, None, euid=0).uid == 65534
    assert identity.resolve(sudo, euid=0, privileged=True).privileged
    assert identity.resolve(sudo, euid=1234).source == "current"


def test_run_as_root_is_refused_without_privileged() -> None:
    from fexstack.errors import RunError
    from runner import identity

    with pytest.raises(RunError) as err:
        identity.resolve({}, None, euid=0, run_as=(0, 0))
    assert "--privileged" in (err.value.hint or "")


def test_searchable_follows_the_mode_bits(tmp_path: Path) -> None:
    from runner import identity

    st = os.stat(tmp_path)
    uid, gid = st.st_uid, st.st_gid
    mode = st.st_mode & ~0o777
    fake = os.stat_result((mode | 0o700, *tuple(st)[1:]))
    assert identity.searchable(fake, uid, gid)
    assert not identity.searchable(fake, uid + 1, gid + 1)
    fake = os.stat_result((mode | 0o711, *tuple(st)[1:]))
    assert identity.searchable(fake, uid + 1, gid + 1)


def test_stack_keys_reach_the_profile(tmp_path: Path) -> None:
    """[app] privileged / run_as and [base] host_provides are typed, validated and carried
    into the run profile; a bad host path is refused with the file named."""
    from fexstack.errors import ConfigError
    from overlays.stack import load_base

    bases = tmp_path / "bases"
    bases.mkdir()
    (bases / "asahi.toml").write_text(
        '[base]\nimage = "base.erofs"\nhost_provides = ["/usr/bin/bwrap", "/usr/share/mime"]\n'
    )
    base = load_base(bases, "asahi")
    assert base.host_provides == ("/usr/bin/bwrap", "/usr/share/mime")
    made = build_profile("x", base=base, gpu=[], backend="native")
    assert made.host_provides == ("/usr/bin/bwrap", "/usr/share/mime")
    assert made.privileged is False and made.run_as == (65534, 65534)
    assert made.to_json()["host_provides"] == ["/usr/bin/bwrap", "/usr/share/mime"]
    assert made.with_overrides(privileged=True).privileged
    (bases / "bad.toml").write_text('[base]\nimage = "b"\nhost_provides = ["usr/../etc"]\n')
    with pytest.raises(ConfigError) as err:
        load_base(bases, "bad")
    assert "bad.toml" in err.value.message


def test_app_privileged_and_run_as_keys(tmp_path: Path) -> None:
    from overlays.stack import load_stack
    from runner.profile import from_stack
    from tests.test_stack import demo, error, stacks

    keys = '[app]\nappimage = "/a"\nprivileged = true\nrun_as = [4000, 4001]\n'
    folder = stacks(tmp_path, **demo(keys))
    made = from_stack(load_stack(folder, "demo"), backend="native")
    assert made.privileged and made.run_as == (4000, 4001)
    folder = stacks(tmp_path / "2", **demo('[app]\nappimage = "/a"\nrun_as = [0, 0]\n'))
    assert "run_as" in error(folder).message


def test_user_dirs_and_the_display_environment(privileged: None, tmp_path: Path) -> None:
    """The user's HOME, a private 0700 runtime dir and a private copy of root's 0600 X
    cookie; the session's runtime dir (and Wayland socket) only when it is the user's."""
    from runner import identity, native

    cookie = tmp_path / "Xauthority"
    cookie.write_bytes(b"cookie")
    cookie.chmod(0o600)
    who = identity.Identity(4242, 4343, "sudo")
    host = {"HOME": "/root", "DISPLAY": ":5", "XAUTHORITY": str(cookie),
            "WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/0"}  # fmt: skip
    dirs = native.user_dirs(who, host)
    try:
        for folder in (dirs.home, dirs.runtime_dir):
            st = folder.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o700)
        assert dirs.xauthority is not None
        st = dirs.xauthority.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (4242, 0o600)
        assert dirs.xauthority.read_bytes() == b"cookie"
        assert dirs.wayland_display is None  # root's runtime dir is out of the user's reach
        env = dirs.env()
        assert env["HOME"] == str(dirs.home) and env["XDG_RUNTIME_DIR"] == str(dirs.runtime_dir)
        # the session's runtime dir, when it is the user's own 0700 one, is used as it is
        own = tmp_path / "run-4242"
        own.mkdir(mode=0o700)
        os.chown(own, 4242, 4343)
        mine = native.user_dirs(who, {**host, "XDG_RUNTIME_DIR": str(own)})
        try:
            assert mine.runtime_dir == own and mine.wayland_display == "wayland-0"
        finally:
            shutil.rmtree(mine.folder)
    finally:
        shutil.rmtree(dirs.folder)
    # the app's environment: the display passed through, the user's dirs in place
    env = native.guest_environment({}, host)
    assert {k: env[k] for k in native.DISPLAY_ENV} == {k: host[k] for k in native.DISPLAY_ENV}
