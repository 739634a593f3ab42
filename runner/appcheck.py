"""appcheck: before launching, prove the AppImage's ELF files can load in the merged view.

The extracted AppDir is placed at its absolute path on top of the layers the run uses
(base, gpu, compat, deps: the guest sees the host's /, so the AppDir is there at the same
path). For every x86_64 ELF file in it:

- interpreter: its PT_INTERP resolves in the view (blocking);
- linkability: every DT_NEEDED of an executable's closure is found the way the loader
  searches (blocking), and of a bundled library (reported: a plugin may be unused);
- ISA: an x86-64-v4 / AVX-512 requirement, which FEX cannot execute (blocking);
- ABI conflicts: a closure that loads both sonames of a pair of
  :data:`invariants.conflict.CONFLICTS` (libsoup 2 and 3) into one process (blocking for
  an executable);
- executable stack: a shared library asking for one, which glibc 2.41+ refuses to dlopen
  (reported, with the recommendation ``[app] allow_execstack = true`` unless the run's
  GLIBC_TUNABLES already has ``glibc.rtld.execstack=2``).

The environment is what the app really gets: AppRun's own changes are modelled
(:mod:`runner.apprun`), so libraries reached through the LD_LIBRARY_PATH AppRun sets count
as satisfied, and a profile variable AppRun unsets or overwrites is reported as having no
effect. The ELF files of the profile's plugin folders (``[app].plugin_dirs``, e.g. Bambu's
downloaded network plugin) are checked like the AppImage's, as libraries the app opens.

The report (``appcheck.json`` in the evidence) lists every resolution.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fexstack import jsonio
from fexstack.errors import RunError
from invariants import conflict, elf, hostfallback, runtimefiles
from invariants.loader import FEX_HWCAPS, Loader, Search
from invariants.view import Layer, Node, Tree, View, index
from overlays.stack import Stack
from runner import apprun
from runner.options import AppcheckResult
from runner.profile import EXECSTACK_TUNABLE, with_execstack

FORMAT = 1
SCHEMA = "appcheck"  # runner/schemas/appcheck.schema.json (launch.py writes appcheck.json)
EVIDENCE_NAME = "appcheck.json"


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
    env: Mapping[str, str] | None = None,
    plugin_dirs: Sequence[Path] = (),
    host_provides: Sequence[str] = (),
) -> dict[str, Any]:
    """The appcheck report of ``appdir`` on top of ``view_layers`` (muvm order), with the
    host paths a base declares (``host_provides``) beneath them, as FEX falls back.

    ``env``: the run profile's environment (its LD_LIBRARY_PATH unless ``ld_library_path``
    is given); AppRun's changes to it are applied before the search.
    """
    appdir = appdir.resolve()
    profile_env = dict(env or {})
    incoming = dict(profile_env)
    if ld_library_path:
        incoming["LD_LIBRARY_PATH"] = ":".join(ld_library_path)
    model = apprun.read(appdir, incoming)
    effective = model.environment(incoming)
    library_path = tuple(p for p in effective.get("LD_LIBRARY_PATH", "").split(":") if p)
    trees = [index(layer.root, layer.name) for layer in view_layers]
    view_layers, trees = hostfallback.with_host(view_layers, trees, host_provides)
    app = app_tree(appdir)
    plugins = [app_tree(d) for d in plugin_dirs if d.is_dir()]
    view = View(
        [*view_layers, Layer("app", appdir, "app"),
         *(Layer("plugins", d.resolve(), "app") for d in plugin_dirs if d.is_dir())],
        [*trees, app, *plugins],
    )
    opened: set[str] = set()
    loaded: set[str] = set()  # sonames an executable of the app loads
    loader = Loader(
        view,
        Search(
            lib_dirs=tuple(lib_dirs),
            ld_library_path=library_path,
            hwcaps=tuple(hwcaps),
        ),
    )
    findings: list[dict[str, Any]] = []
    files: dict[str, Any] = {}
    execstack_allowed = EXECSTACK_TUNABLE in effective.get("GLIBC_TUNABLES", "").split(":")
    recommendations: list[str] = []
    for item in model.no_effect(profile_env):
        findings.append(_finding("env", str(model.path),
                                 f"[app].env.{item['var']} has no effect: {item['detail']}",
                                 False))
    for folder in plugin_dirs:
        if not folder.is_dir():
            findings.append(_finding(
                "plugins", str(folder.absolute()),
                "plugin folder does not exist (yet): nothing in it was checked; an app that "
                "downloads its plugins on first start (Bambu's network plugin) fills it then",
                False))
    plugin_files = [(p, n, True) for tree in plugins for p, n in tree.nodes.items()]
    for path, node, plugin in [*((p, n, False) for p, n in app.nodes.items()), *plugin_files]:
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
        if plugin:
            entry["plugin"] = True
        if not executable and facts.e_type == "ET_DYN" and elf.exec_stack(node.source):
            entry["execstack"] = True
            allowed = execstack_allowed
            findings.append(_finding(
                "execstack", path,
                "asks for an executable stack (PT_GNU_STACK with PF_X, or none): glibc 2.41+ "
                "refuses to dlopen it"
                + (f"; allowed by GLIBC_TUNABLES={EXECSTACK_TUNABLE}" if allowed else
                   "; set [app] allow_execstack = true (GLIBC_TUNABLES="
                   f"{EXECSTACK_TUNABLE}) or clear the flag (patchelf --clear-execstack)"),
                False))
            if not allowed:
                recommendations.append(
                    f"allow_execstack = true under [app]: {path} needs an executable stack")
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
        for detail in conflict.clashes(path, closure):
            findings.append(_finding("abi-conflict", path, detail, executable))
        opened.update(r.path for r in closure.resolutions if r.path)
        loaded.update(r.soname for r in closure.resolutions if r.path and executable)
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
    runtime = _runtime_needs(view, loaded, opened, findings)
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
            "ld_library_path": list(library_path),
            "hwcaps": list(hwcaps),
        },
        "apprun": model.to_json(profile_env),
        "plugin_dirs": [str(d) for d in plugin_dirs],
        "recommendations": sorted(set(recommendations)),
        "files": files,
        "findings": sorted(findings, key=lambda f: (f["path"], f["kind"], f["detail"])),
        "blocking": len(blocking),
        "host_provides": list(host_provides),
        "from_host": from_host,
        "runtime_needs": runtime,
    }


def _runtime_needs(view: View, loaded: set[str], opened: set[str],
                   findings: list[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """Programs and files the loaded libraries need at run time
    (:data:`invariants.runtimefiles.NEEDS`): met ones join ``opened`` (so the report says
    which come from the host); a missing one is a blocking finding naming the path."""
    rows = []
    for soname, need in runtimefiles.needs_of(sorted(loaded)):
        found = next((m for p in need.paths if (m := runtimefiles.met(view, p, need.kind))),
                     None)  # fmt: skip
        missing = runtimefiles.lacking(view, found, need) if found is not None else []
        rows.append({"soname": soname, "kind": need.kind, "paths": list(need.paths),
                     "met_by": None if missing else found})  # fmt: skip
        if found is not None:
            opened.add(found)
        if found is not None and missing:
            findings.append(_finding(
                "runtime-need", found,
                f"{soname} reads {found}, which lacks {', '.join(missing)}: {need.why}", True))
            continue
        if found is not None:
            continue
        what = "runs" if need.kind == "exec" else "reads"
        findings.append(_finding(
            "runtime-need", need.paths[0],
            f"{soname} {what} {' or '.join(need.paths)}, which no layer has and the host is "
            f"not declared to provide: {need.why}", True))
    return rows


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
    wanted = sorted({r.split(":", 1)[0] for r in report.get("recommendations", ())})
    if wanted:
        summary += f"; recommended in the stack: {', '.join(wanted)}"
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
    env: Mapping[str, str] | None = None,
    plugin_dirs: Sequence[Path] = (),
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
            env=env,
            plugin_dirs=plugin_dirs,
            host_provides=host_provides,
        )
        return summarize(report)

    return check


def make_appcheck(stack: Stack, *, view_layers: Layers) -> Callable[[Path], AppcheckResult]:
    """The hook ``run_app`` calls with the extracted AppDir, for ``stack``'s run profile."""
    env = dict(stack.app.env) if stack.app else {}
    if stack.app is not None and stack.app.allow_execstack:
        env["GLIBC_TUNABLES"] = with_execstack(env.get("GLIBC_TUNABLES", ""))
    return hook(
        view_layers=view_layers,
        lib_dirs=stack.base.lib_dirs,
        env=env,
        plugin_dirs=stack.app.plugin_dirs if stack.app else (),
        host_provides=stack.base.host_provides,
    )


def read_evidence(evidence_dir: Path) -> dict[str, Any] | None:
    """A run's ``appcheck.json`` (None when the run made none), validated: its one
    reader (:mod:`runner.suggest`); a malformed one is a :class:`RunError` naming it."""
    path = evidence_dir / EVIDENCE_NAME
    if not path.is_file():
        return None
    doc: dict[str, Any] = jsonio.read_record(
        path,
        SCHEMA,
        error=RunError,
        what="appcheck report",
        hint="run the app again to make its evidence anew",
    )
    return doc
