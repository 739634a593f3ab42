"""GUI apps through the native backend, on a real Xvfb with an X authority cookie.

The apps are real X clients run as the unprivileged user: xmessage (the toolchain root's,
with its libraries copied into a layer) and tests/data/xwindow.c (libX11 dlopen'd; maps its
window or only creates it). The display's cookie file is root's (0600): the app reaches the
display through the per-run copy the native backend makes for the user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fexstack import jsonio
from runner import display
from runner.launch import RunResult, run_app
from runner.options import RunOptions
from runner.profile import Profile, build_profile
from tests.conftest import in_ci
from tests.test_native import PROFILE_ENV, gcc, layout  # noqa: F401  (the fixture)

DATA = Path(__file__).parent / "data"
SKIP_LIBS = ("libc.so.6", "ld-linux-x86-64.so.2", "linux-vdso.so.1")


def _xauth_entry(family: int, address: bytes, number: bytes, cookie: bytes) -> bytes:
    out = struct.pack(">H", family)
    for field in (address, number, b"MIT-MAGIC-COOKIE-1", cookie):
        out += struct.pack(">H", len(field)) + field
    return out


@pytest.fixture(scope="module")
def xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private Xvfb (black root, 320x240x24) that demands a cookie; its DISPLAY and
    XAUTHORITY are put in the environment for the module."""
    if shutil.which("Xvfb") is None:
        if in_ci():
            pytest.fail("Xvfb is missing from the toolchain root (.devroot/packages.txt)")
        pytest.skip("needs Xvfb")
    work = tmp_path_factory.mktemp("xvfb")
    cookie = secrets.token_bytes(16)
    auth = work / "Xauthority"
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "320x240x24", "-br",
         "-nolisten", "tcp", "-auth", str(auth)],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    # the cookie file must exist before a client connects; Xvfb reads it on reset too
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    assert number.isdigit(), "Xvfb did not report its display"
    entries = _xauth_entry(256, socket.gethostname().encode(), number.encode(), cookie)
    entries += _xauth_entry(65535, b"", number.encode(), cookie)
    auth.write_bytes(entries)
    auth.chmod(0o600)
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "XAUTHORITY")}
    os.environ["DISPLAY"] = f":{number}"
    os.environ["XAUTHORITY"] = str(auth)
    try:
        yield {"DISPLAY": f":{number}", "XAUTHORITY": str(auth)}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gui(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A layer with xmessage and its libraries (the base has glibc), and the xwindow
    AppImage."""
    from testkit.packer import build_appimage

    work = tmp_path_factory.mktemp("gui")
    layer = work / "x11-layer"
    (layer / "usr/lib64").mkdir(parents=True)
    (layer / "usr/bin").mkdir(parents=True)
    xmessage = shutil.which("xmessage")
    assert xmessage is not None, "x11-utils is missing from the toolchain root"
    shutil.copy2(xmessage, layer / "usr/bin/xmessage")
    ldd = subprocess.run(["ldd", xmessage], capture_output=True, text=True, check=True)
    for line in ldd.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[0] not in SKIP_LIBS:
            shutil.copy2(parts[2], layer / "usr/lib64" / parts[0])
    assert (layer / "usr/lib64/libX11.so.6").exists()
    appdir = work / "AppDir"
    appdir.mkdir()
    gcc("-O1", "-o", appdir / "AppRun", DATA / "xwindow.c", "-ldl")
    return {"layer": layer, "appimage": build_appimage(appdir, work / "xwindow.AppImage")}


def profile(layout: dict[str, object], gui: dict[str, Path], *args: str,  # noqa: F811
            timeout: float | None = None) -> Profile:  # fmt: skip
    return build_profile(
        "gui", appimage=gui["appimage"], base=layout["base"],  # type: ignore[arg-type]
        gpu=[gui["layer"]], env=PROFILE_ENV, backend="native", args=list(args),
        timeout_seconds=timeout,
    )  # fmt: skip


def report(result: RunResult) -> dict[str, object]:
    doc = jsonio.read(result.evidence_dir / "run.report.json")
    jsonio.validate(doc, "run-report")
    assert isinstance(doc, dict)
    return doc


def png_colours(path: Path) -> set[bytes]:
    """The distinct RGB pixels of a PNG written by :func:`runner.display.png_bytes`."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", body[:4])[0]
            assert body[8:10] == b"\x08\x02"  # 8-bit RGB
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * 3
    colours = set()
    for y in range(len(raw) // stride):
        row = raw[y * stride : (y + 1) * stride]
        assert row[0] == 0  # no filter
        colours.update(row[1 + x * 3 : 4 + x * 3] for x in range(width))
    return colours


def test_xmessage_window_seen_on_timeout(
    privileged: None, xvfb: dict[str, str], layout: dict[str, object],  # noqa: F811
    gui: dict[str, Path], tmp_path: Path,
) -> None:  # fmt: skip
    """A real Xt client that never exits: its mapped window makes the timeout WINDOW_SEEN."""
    result = run_app(
        profile(layout, gui, timeout=4),
        RunOptions(
            evidence_root=tmp_path,
            echo=False,
            command=["/usr/bin/xmessage", "-title", "fexstack says", "hello"],
        ),
    )  # fmt: skip
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "WINDOW_SEEN", log
    doc = report(result)
    assert doc["timed_out"] is True
    seen = doc["display"]
    assert isinstance(seen, dict)
    assert seen["windows"] == ["fexstack says"]
    assert seen["screenshot"] == display.SCREENSHOT_NAME
    assert seen["screenshot_taken_at"] == "timeout"
    colours = png_colours(result.evidence_dir / display.SCREENSHOT_NAME)
    assert len(colours) > 1 and b"\x00\x00\x00" in colours  # the black root and the window
    identity = doc["identity"]
    assert isinstance(identity, dict) and identity["uid"] != 0 and not identity["privileged"]


def test_ready_marker_takes_the_screenshot(
    privileged: None, xvfb: dict[str, str], layout: dict[str, object],  # noqa: F811
    gui: dict[str, Path], tmp_path: Path,
) -> None:  # fmt: skip
    result = run_app(
        profile(layout, gui, "map", timeout=30),
        RunOptions(evidence_root=tmp_path, echo=False, ready="window mapped"),
    )  # fmt: skip
    log = (result.evidence_dir / "run.log").read_text()
    assert result.outcome == "PASS", log
    seen = report(result)["display"]
    assert isinstance(seen, dict)
    assert seen["windows"] == ["fexstack xwindow"]
    assert seen["screenshot_taken_at"] == "ready"
    colours = png_colours(result.evidence_dir / display.SCREENSHOT_NAME)
    assert b"\x33\xaa\x55" in colours and b"\x00\x00\x00" in colours  # green window on black


def test_unmapped_window_is_not_seen(
    privileged: None, xvfb: dict[str, str], layout: dict[str, object],  # noqa: F811
    gui: dict[str, Path], tmp_path: Path,
) -> None:  # fmt: skip
    """A window in the X tree that is never mapped (GTK's leader) is not a window seen."""
    result = run_app(
        profile(layout, gui, "nomap", timeout=8),
        RunOptions(evidence_root=tmp_path, echo=False),
    )  # fmt: skip
    log = (result.evidence_dir / "run.log").read_text()
    assert "window created, not mapped" in log
    assert result.outcome == "FAIL" and "timed out" in result.reason
    seen = report(result)["display"]
    assert isinstance(seen, dict) and seen["windows"] == []
    assert seen["screenshot_taken_at"] == "timeout"  # taken anyway: it shows nothing


def test_app_exiting_without_a_window(
    privileged: None, xvfb: dict[str, str], layout: dict[str, object],  # noqa: F811
    gui: dict[str, Path], tmp_path: Path,
) -> None:  # fmt: skip
    result = run_app(
        profile(layout, gui, "nomap", "exit", timeout=20),
        RunOptions(evidence_root=tmp_path, echo=False),
    )  # fmt: skip
    assert result.outcome == "PASS"  # it exited 0: no timeout, no screenshot
    seen = report(result)["display"]
    assert isinstance(seen, dict) and seen["windows"] == [] and seen["screenshot"] is None
    assert not (result.evidence_dir / display.SCREENSHOT_NAME).exists()


def test_png_bytes_round_trip() -> None:
    rgb = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 1, 2, 3])
    path_colours = {rgb[i : i + 3] for i in range(0, 12, 3)}
    png = display.png_bytes(2, 2, rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert zlib.decompress(png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]) == (
        b"\x00" + rgb[:6] + b"\x00" + rgb[6:]
    )
    assert len(path_colours) == 4
    with pytest.raises(ValueError):
        display.png_bytes(3, 2, rgb)


def test_zpixmap_conversion_general_and_fast_paths() -> None:
    # two BGRX pixels, little-endian, 32 bits per pixel
    data = bytes([0x55, 0xAA, 0x33, 0, 0x01, 0x02, 0x03, 0])
    masks = (0xFF0000, 0xFF00, 0xFF)
    assert display.zpixmap_to_rgb(data, 2, 1, masks, 32, True) == bytes(
        [0x33, 0xAA, 0x55, 0x03, 0x02, 0x01]
    )
    # 16-bit 565: the general path scales each channel to 0..255
    pixel = (0b11111 << 11) | (0 << 5) | 0b11111
    out = display.zpixmap_to_rgb(pixel.to_bytes(2, "little"), 1, 1, (0xF800, 0x7E0, 0x1F), 16,
                                 True)  # fmt: skip
    assert out == bytes([255, 0, 255])
