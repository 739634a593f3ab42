"""What libraries need at run time without a DT_NEEDED (invariants/runtimefiles.py)."""

from __future__ import annotations

from pathlib import Path

from invariants import runtimefiles
from invariants.view import Layer, View


def _view(root: Path) -> View:
    return View([Layer("base", root, "base")])


def _file(root: Path, path: str, data: bytes = b"x", mode: int = 0o644) -> None:
    disk = root / path.lstrip("/")
    disk.parent.mkdir(parents=True, exist_ok=True)
    disk.write_bytes(data)
    disk.chmod(mode)


def test_exec_needs_an_executable_file(tmp_path: Path) -> None:
    _file(tmp_path, "/usr/bin/bwrap", mode=0o644)
    assert runtimefiles.met(_view(tmp_path), "/usr/bin/bwrap", "exec") is None
    (tmp_path / "usr/bin/bwrap").chmod(0o755)
    assert runtimefiles.met(_view(tmp_path), "/usr/bin/bwrap", "exec") == "/usr/bin/bwrap"
    assert runtimefiles.met(_view(tmp_path), "/usr/bin/xdg-dbus-proxy", "exec") is None


def test_a_glob_is_met_by_any_file_through_a_folder_symlink(tmp_path: Path) -> None:
    need = "/usr/share/glvnd/egl_vendor.d/*.json"
    (tmp_path / "usr/share").mkdir(parents=True)
    assert runtimefiles.met(_view(tmp_path), need, "file") is None
    _file(tmp_path, "/opt/egl/50_mesa.json")
    (tmp_path / "usr/share/glvnd").mkdir()
    (tmp_path / "usr/share/glvnd/egl_vendor.d").symlink_to("/opt/egl")
    assert runtimefiles.met(_view(tmp_path), need, "file") == "/opt/egl/50_mesa.json"


def test_contents_a_file_must_hold(tmp_path: Path) -> None:
    [schemas] = [n for n in runtimefiles.NEEDS["libgtk-3.so.0"] if n.contains]
    path = schemas.paths[0]
    _file(tmp_path, path, b"GVariant org.gnome.desktop.interface")
    view = _view(tmp_path)
    assert runtimefiles.lacking(view, path, schemas) == list(schemas.contains)
    _file(tmp_path, path, b"GVariant org.gtk.Settings.ColorChooser org.gtk.Settings.FileChooser")
    assert runtimefiles.lacking(_view(tmp_path), path, schemas) == []
    assert [s for s, _ in runtimefiles.needs_of(["libwebkit2gtk-4.1.so.0", "libc.so.6"])] == [
        "libwebkit2gtk-4.1.so.0", "libwebkit2gtk-4.1.so.0"]
