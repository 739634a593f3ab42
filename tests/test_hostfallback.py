"""The host-fallback model: declared host paths beneath the layers, in the checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fexstack import jsonio
from invariants import hostfallback
from invariants.view import Layer, View, index
from runner.appcheck import check_appdir
from tests.test_native import layout, libfoo  # noqa: F401  (the fixture)


def _appcheck(layout: dict[str, object], layers: list[Layer], host: list[str],  # noqa: F811
              search: list[str]) -> dict[str, object]:  # fmt: skip
    app = layout["app"]
    assert isinstance(app, Path)
    report = check_appdir(app.parent, view_layers=layers, lib_dirs=["/usr/lib64"],
                          ld_library_path=search, host_provides=host)  # fmt: skip
    jsonio.validate(report, "appcheck")
    return report


def test_appcheck_takes_what_no_layer_has_from_the_declared_host_paths(
    layout: dict[str, object], tmp_path: Path,  # noqa: F811
) -> None:
    base = layout["base"]
    assert isinstance(base, Path)
    host_dir = tmp_path / "hostlib"
    host_dir.mkdir()
    libfoo(host_dir / "libfoo.so.1", "from the host")
    layers = [Layer("base", base, "base")]
    search = [str(host_dir)]
    # not declared: the host's copy does not count
    alone = _appcheck(layout, layers, [], search)
    assert alone["blocking"] == 1 and alone["from_host"] == []
    # declared: the app takes it from the host, and the report says so
    with_host = _appcheck(layout, layers, [str(host_dir)], search)
    assert with_host["blocking"] == 0
    assert with_host["from_host"] == [f"{host_dir}/libfoo.so.1"]
    kinds = {(f["kind"], f["path"]) for f in with_host["findings"]}  # type: ignore[union-attr]
    assert ("host", f"{host_dir}/libfoo.so.1") in kinds
    # a layer that has the file wins: nothing from the host
    layer = tmp_path / "layer"
    (layer / str(host_dir).lstrip("/")).mkdir(parents=True)
    libfoo(layer / str(host_dir).lstrip("/") / "libfoo.so.1", "from the layer")
    layered = _appcheck(layout, [*layers, Layer("deps", layer, "deps")], [str(host_dir)], search)
    assert layered["blocking"] == 0 and layered["from_host"] == []


def test_host_tree_holds_exactly_the_declared_paths(tmp_path: Path) -> None:
    (tmp_path / "usr/share/mime/packages").mkdir(parents=True)
    (tmp_path / "usr/share/mime/mime.cache").write_bytes(b"cache")
    (tmp_path / "usr/share/other").mkdir()
    (tmp_path / "usr/bin").mkdir()
    (tmp_path / "usr/bin/bwrap").write_bytes(b"\x7fELF")
    (tmp_path / "usr/bin/sh").write_bytes(b"\x7fELF")
    (tmp_path / "usr/bin/link").symlink_to("bwrap")
    tree = hostfallback.host_tree(
        ["/usr/share/mime", "/usr/bin/bwrap", "/usr/bin/link", "/usr/no/such"], tmp_path
    )
    assert sorted(tree.nodes) == [
        "/", "/usr", "/usr/bin", "/usr/bin/bwrap", "/usr/bin/link", "/usr/share",
        "/usr/share/mime", "/usr/share/mime/mime.cache", "/usr/share/mime/packages",
    ]  # fmt: skip
    assert tree.nodes["/usr/bin/link"].target == "bwrap"
    # beneath a layer that has its own mime.cache: the layer's wins
    layer = tmp_path / "layer"
    (layer / "usr/share/mime").mkdir(parents=True)
    (layer / "usr/share/mime/mime.cache").write_bytes(b"layer")
    layers, trees = hostfallback.with_host(
        [Layer("base", layer, "base")], [index(layer, "base")], ["/usr/share/mime"]
    )
    assert [x.name for x in layers] == ["host", "base"] and trees[0].layer == "host"
    # with_host indexes the real host: the view below uses tmp_path as the host instead
    view = View(layers, [hostfallback.host_tree(["/usr/share/mime"], tmp_path), trees[1]])
    assert hostfallback.taken_from_host(view, ["/usr/share/mime/mime.cache"]) == []
    shutil.rmtree(layer / "usr/share/mime")
    view = View(layers, [hostfallback.host_tree(["/usr/share/mime"], tmp_path),
                         index(layer, "base")])  # fmt: skip
    assert hostfallback.taken_from_host(view, ["/usr/share/mime/mime.cache"]) == [
        "/usr/share/mime/mime.cache"
    ]
    assert hostfallback.with_host([], [], []) == ([], [])


# --- which host package provides a declared path: rpm -qf, three ways -------------------


def test_rpm_query_argv() -> None:
    from runner import hostpackages

    assert hostpackages.query_argv("/usr/bin/bwrap") == [
        "rpm", "-qf", "--queryformat", "%{NEVRA}\\n", "/usr/bin/bwrap"
    ]  # fmt: skip
    assert hostpackages.query_argv("/x", Path("/r"))[:3] == ["rpm", "--root", "/r"]


def test_rpm_owners_from_a_real_rpmdb(privileged: None, factory: object, tmp_path: Path) -> None:
    """A package installed into a scratch rpmdb root: its file is owned, another is not,
    a missing one is said to be missing."""
    import subprocess

    from runner import hostpackages
    from testkit.factory.factory import Factory
    from testkit.factory.spec import File, Package

    assert isinstance(factory, Factory)
    pkg = Package("bubblewrap", "0.11.0", "2", arch="noarch",
                  contents=(File("/usr/bin/bwrap", b"#!/bin/sh\n", 0o755),))  # fmt: skip
    rpm = factory.rpm(pkg)
    root = tmp_path / "host"
    (root / "usr/share/mime").mkdir(parents=True)
    subprocess.run(["rpm", "--root", str(root), "-i", "--nodeps", "--noscripts",
                    "--nosignature", "--nodigest", str(rpm)],
                   check=True, capture_output=True)  # fmt: skip
    found = hostpackages.owners(["/usr/bin/bwrap", "/usr/share/mime", "/usr/no/such"], root)
    assert found[0].package == "bubblewrap-0.11.0-2.noarch"
    assert found[1].package is None and "not owned" in (found[1].note or "")
    assert found[2].package is None and "no such file" in (found[2].note or "")


def test_rpm_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fexstack.errors import RunError
    from runner import hostpackages

    root = tmp_path / "broken"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/bwrap").write_bytes(b"x")
    for folder in ("var/lib/rpm", "usr/lib/sysimage/rpm"):
        (root / folder).mkdir(parents=True)
        (root / folder / "rpmdb.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(RunError) as err:
        hostpackages.owners(["/usr/bin/bwrap"], root)
    assert "/usr/bin/bwrap" in err.value.message and err.value.hint
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = hostpackages.owners(["/usr/bin/bwrap"])
    assert missing[0].package is None and "rpm is not installed" in (missing[0].note or "")
