"""What a GUI app showed: its top-level windows and a screenshot, from the X server.

:class:`WindowMonitor` connects to ``$DISPLAY`` (with ``$XAUTHORITY``) before the launch,
notes the top-level windows already there, and while the app runs notes every NEW
top-level window that is mapped and viewable, with its title. A window that only exists in
the X tree does not count: GTK creates (and never maps) a leader window even when it is
about to abort. When the ready marker matches or the timeout is about to end the run, the
monitor writes a screenshot of the root window as PNG (zlib; no image tool needed).

It speaks X11 through python3-xlib; without it, or without a display, the monitor records
why it saw nothing and the run goes on.
"""

from __future__ import annotations

import contextlib
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fexstack import atomic

POLL_SECONDS = 0.25
SCREENSHOT_NAME = "screenshot.png"


@dataclass
class Seen:
    """A top-level window seen mapped: its id and title (empty when it has none)."""

    window: int
    title: str


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """A PNG (8-bit RGB, no interlace) of ``rgb`` (``width*height*3`` bytes, row-major)."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"{len(rgb)} bytes is not {width}x{height} RGB")
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1 if mask else 0


def zpixmap_to_rgb(
    data: bytes, width: int, height: int, masks: tuple[int, int, int], bpp: int, lsb: bool
) -> bytes:
    """RGB bytes of a TrueColor ZPixmap image (24/32 bits per pixel, padded rows)."""
    step = bpp // 8
    stride = len(data) // height if height else 0
    if bpp == 32 and lsb and masks == (0xFF0000, 0xFF00, 0xFF) and stride == width * 4:
        # the common case (BGRX): byte slicing instead of a loop per pixel
        fast = bytearray(width * height * 3)
        pixels = data[: width * height * 4]
        fast[0::3], fast[1::3], fast[2::3] = pixels[2::4], pixels[1::4], pixels[0::4]
        return bytes(fast)
    order: Literal["little", "big"] = "little" if lsb else "big"
    out = bytearray(width * height * 3)
    shifts = [_shift(m) for m in masks]
    scales = [(m >> s) or 1 for m, s in zip(masks, shifts, strict=True)]
    i = 0
    for y in range(height):
        row = data[y * stride : y * stride + width * step]
        for x in range(0, width * step, step):
            pixel = int.from_bytes(row[x : x + step], order)
            for c in range(3):
                out[i + c] = ((pixel & masks[c]) >> shifts[c]) * 255 // scales[c]
            i += 3
    return bytes(out)


@dataclass
class WindowMonitor:
    """See the module docstring. ``screenshot``: where the PNG goes."""

    env: Mapping[str, str]
    screenshot: Path
    seen: list[Seen] = field(default_factory=list)
    note: str | None = None  # why nothing could be watched, if so
    shot_reason: str | None = None  # "ready" or "timeout" once a screenshot was taken
    _conn: Any = None
    _before: frozenset[int] = frozenset()
    _next: float = 0.0

    def start(self) -> bool:
        """Connect and note the windows already there; False (with ``note``) if it
        cannot."""
        name = self.env.get("DISPLAY")
        if not name:
            self.note = "no DISPLAY: no windows watched"
            return False
        try:
            from Xlib import display as xdisplay
        except ImportError:
            self.note = "python3-xlib is not installed: no windows watched"
            return False
        import os

        saved = os.environ.get("XAUTHORITY")
        try:
            if self.env.get("XAUTHORITY"):
                os.environ["XAUTHORITY"] = self.env["XAUTHORITY"]
            self._conn = xdisplay.Display(name)
        except Exception as exc:  # python-xlib raises several unrelated types
            self.note = f"cannot connect to display {name}: {exc}"
            return False
        finally:
            if saved is None:
                os.environ.pop("XAUTHORITY", None)
            else:
                os.environ["XAUTHORITY"] = saved
        self._before = frozenset(w.id for w in self._toplevels())
        return True

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _toplevels(self) -> list[Any]:
        root = self._conn.screen().root
        return list(root.query_tree().children)

    def _title(self, window: Any) -> str:
        from Xlib import Xatom

        for atom in (self._conn.intern_atom("_NET_WM_NAME"), Xatom.WM_NAME):
            with contextlib.suppress(Exception):
                prop = window.get_full_property(atom, 0)
                if prop is not None and prop.value:
                    value = prop.value
                    if isinstance(value, bytes):
                        return value.decode("utf-8", "replace")
                    return str(value)
        # a window manager's frame: the client inside carries the title
        with contextlib.suppress(Exception):
            for child in window.query_tree().children:
                title = self._title(child)
                if title:
                    return title
        return ""

    def poll(self) -> None:
        """Note the new top-level windows that are mapped and viewable."""
        if self._conn is None:
            return
        from Xlib import X
        from Xlib.error import XError

        known = {s.window for s in self.seen}
        try:
            for window in self._toplevels():
                if window.id in self._before or window.id in known:
                    continue
                try:
                    attrs = window.get_attributes()
                except XError:
                    continue  # gone meanwhile
                if attrs.map_state == X.IsViewable and not attrs.override_redirect:
                    self.seen.append(Seen(window.id, self._title(window)))
        except Exception as exc:
            self.note = f"lost the display: {exc}"
            self.close()

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + POLL_SECONDS
            self.poll()

    def before_stop(self, reason: str) -> None:
        self.poll()
        if self._conn is None or self.shot_reason is not None:
            return
        try:
            self.take_screenshot()
            self.shot_reason = reason
        except Exception as exc:
            self.note = f"screenshot failed: {exc}"

    def take_screenshot(self) -> Path:
        from Xlib import X

        screen = self._conn.screen()
        width, height = screen.width_in_pixels, screen.height_in_pixels
        image = screen.root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF)
        visual = next(
            v
            for d in screen.allowed_depths
            for v in d.visuals
            if v.visual_id == screen.root_visual
        )
        fmt = next(f for f in self._conn.display.info.pixmap_formats if f.depth == image.depth)
        lsb = self._conn.display.info.image_byte_order == X.LSBFirst
        rgb = zpixmap_to_rgb(
            bytes(image.data), width, height,
            (visual.red_mask, visual.green_mask, visual.blue_mask), fmt.bits_per_pixel, lsb,
        )  # fmt: skip
        atomic.write_bytes(self.screenshot, png_bytes(width, height, rgb))
        return self.screenshot

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": [s.title for s in self.seen],
            "screenshot": self.screenshot.name if self.shot_reason is not None else None,
            "screenshot_taken_at": self.shot_reason,
            "note": self.note,
        }
