"""appcheck: before launching, prove the AppImage's ELF files can load in the merged view.

The extracted AppDir is placed at its absolute path on top of the layers the run uses
(base, gpu, compat, deps: the guest sees the host's /, so the AppDir is there at the same
path). For every x86_64 ELF file in it:

- interpreter: its PT_INTERP resolves in the view (blocking);
- linkability: every DT_NEEDED of an executable's closure is found the way the loader
  searches (blocking), and of a bundled library (reported: a plugin may be unused);
- ISA: an x86-64-v4 / AVX-512 requirement, which FEX cannot execute (blocking).

The report (``appcheck.json`` in the evidence) lists every resolution.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from invariants import elf, hostfallback
from invariants.loader import FEX_HWCAPS, Loader, Search
from invariants.view import Layer, Node, Tree, View, index
from overlays.stack import Stack
from runner.launch import AppcheckResult

FORMAT = 1
SCHEMA = "appcheck"  # runner/schemas/appcheck.schema.json (launch.py writes appcheck.json)


def app_tree(appdir: Path) -> Tree:
    """The AppDir as a layer whose paths are its absolute paths on the host."""
    appdir = appdir.resolve()
    own = Tree.from_dir(appdir, "app")
    prefix = str(appdir)
    nodes: dict[str, Node] = {}
    parent = posixpath.dirname(prefix)
    while True:
        nodes[parent] = Node("dir", 0o755, None, Path(parent), "app")
        if parent == "/":
            break
        parent = posixpath.dirname(parent)
    for path, node in own.nodes.items():
        nodes[prefix if path == "/" else prefix + path] = replace(node)
    return Tree(Path("/"), "app", dict(sorted(nodes.items())))


def check_appdir(
    appdir: Path,
    *,
    view_layers: Sequence[Layer],
    lib_dirs: Sequence[str],
    ld_library_path: Sequence[str] = (),
    hwcaps: Sequence[str] = FEX_HWCAPS,
    host_provides: Sequence[str] = (),
) -> dict[str, Any]:
    """The appcheck report of ``appdir`` on top of ``view_layers`` (muvm order), with the
    host paths a base declares (``host_provides``) beneath them, as FEX falls back."""
    appdir = appdir.resolve()
    trees = [index(layer.root, layer.name) for layer in view_layers]
    view_layers, trees = hostfallback.with_host(view_layers, trees, host_provides)
    app = app_tree(appdir)
    view = View([*view_layers, Layer("app", appdir, "app")], [*trees, app])
    opened: set[str] = set()
    loader = Loader(
        view,
        Search(
            lib_dirs=tuple(lib_dirs),
            ld_library_path=tuple(ld_library_path),
            hwcaps=tuple(hwcaps),
        ),
    )
    findings: list[dict[str, Any]] = []
    files: dict[str, Any] = {}
    for path, node in app.nodes.items():
        if node.kind != "file":
            continue
        facts = elf.facts(node.source)
        if facts is None:
            continue
        entry: dict[str, Any] = {"machine": facts.machine, "isa": facts.isa_level}
        files[path] = entry
        if facts.error is not None:
            findings.append(_finding("elf", path, f"unparseable ELF: {facts.error}", False))
            continue
        if not facts.is_x86_64:
            findings.append(
                _finding("arch", path, f"{facts.machine} ELF{facts.elf_class}, not x86_64", False)
            )
            continue
        if facts.needs_avx512:
            findings.append(
                _finding(
                    "isa",
                    path,
                    f"needs {facts.isa_level or 'AVX-512'}; FEX runs up to x86-64-v3",
                    True,
                )
            )
        executable = facts.interp is not None
        if executable:
            resolved = view.resolve(facts.interp or "")
            opened.add(facts.interp or "")
            entry["interp"] = facts.interp
            entry["interp_resolves"] = resolved.node is not None and resolved.kind == "file"
            if not entry["interp_resolves"]:
                findings.append(
                    _finding(
                        "interpreter",
                        path,
                        f"interpreter {facts.interp} does not resolve in the merged view"
                        + (f" ({resolved.error})" if resolved.error else ""),
                        True,
                    )
                )
        if not facts.is_dynamic or not facts.needed:
            continue
        closure = loader.closure(path, main=executable)
        entry["needs"] = [r.as_json() for r in closure.resolutions]
        opened.update(r.path for r in closure.resolutions if r.path)
        for miss in closure.missing:
            findings.append(
                _finding(
                    "linkability",
                    path,
                    f"{miss.soname} (needed by {miss.needed_by}) is not found"
                    + (f": {miss.detail}" if miss.detail else ""),
                    executable,
                )
            )
    blocking = [f for f in findings if f["blocking"]]
    from_host = hostfallback.taken_from_host(view, opened) if host_provides else []
    for path in from_host:
        findings.append(_finding("host", path, "taken from the host (host_provides)", False))
    return {
        "format": FORMAT,
        "appdir": str(appdir),
        "layers": [{"name": layer.name, "class": layer.klass} for layer in view_layers],
        "search": {
            "lib_dirs": list(lib_dirs),
            "ld_library_path": list(ld_library_path),
            "hwcaps": list(hwcaps),
        },
        "files": files,
        "findings": sorted(findings, key=lambda f: (f["path"], f["kind"], f["detail"])),
        "blocking": len(blocking),
        "host_provides": list(host_provides),
        "from_host": from_host,
    }


def _finding(kind: str, path: str, detail: str, blocking: bool) -> dict[str, Any]:
    return {"kind": kind, "path": path, "detail": detail, "blocking": blocking}


def summarize(report: Mapping[str, Any]) -> AppcheckResult:
    findings = report["findings"]
    blocking = [f for f in findings if f["blocking"]]
    elves = len(report["files"])
    if blocking:
        first = blocking[0]
        summary = (
            f"{len(blocking)} blocking finding(s) in {elves} ELF files; first: "
            f"{first['path']}: {first['detail']}"
        )
    else:
        summary = f"{elves} ELF files load in the merged view ({len(findings)} note(s))"
    lines = tuple(
        f"{'BLOCKING' if f['blocking'] else 'note'} {f['kind']}: {f['path']}: {f['detail']}"
        for f in findings
    )
    return AppcheckResult(
        blocking=bool(blocking), summary=summary, findings=lines, report=dict(report)
    )


Layers = Sequence[Layer] | Callable[[], Sequence[Layer]]


def hook(
    *,
    view_layers: Layers,
    lib_dirs: Sequence[str],
    ld_library_path: Sequence[str] = (),
    host_provides: Sequence[str] = (),
) -> Callable[[Path], AppcheckResult]:
    """An appcheck hook for ``run_app``: check the extracted AppDir on ``view_layers``.

    ``view_layers`` may be a function: the layers are then prepared (images extracted)
    only when the hook runs, inside ``run_app``, so a failure there still leaves evidence.
    """

    def check(appdir: Path) -> AppcheckResult:
        report = check_appdir(
            appdir,
            view_layers=view_layers() if callable(view_layers) else view_layers,
            lib_dirs=lib_dirs,
            ld_library_path=ld_library_path,
            host_provides=host_provides,
        )
        return summarize(report)

    return check


def make_appcheck(stack: Stack, *, view_layers: Layers) -> Callable[[Path], AppcheckResult]:
    """The hook ``run_app`` calls with the extracted AppDir, for ``stack``'s run profile."""
    env = stack.app.env if stack.app else {}
    library_path = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    return hook(view_layers=view_layers, lib_dirs=stack.base.lib_dirs, ld_library_path=library_path,
                host_provides=stack.base.host_provides)  # fmt: skip
