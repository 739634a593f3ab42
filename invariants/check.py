"""The ``check`` step: run the invariants on one tree against the layers below it."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fexstack.errors import CheckError
from invariants import elf, registry, remedy
from invariants.context import CheckContext, Finding
from invariants.loader import Search
from invariants.policy import CheckPolicy, Waiver
from invariants.report import Report
from invariants.view import Layer, Tree, View


def check_tree(
    tree: Path,
    policy: CheckPolicy,
    *,
    owners: Mapping[str, str],
    view_layers: Sequence[Layer],
    name: str | None = None,
    digests: Mapping[str, tuple[str, int]] | None = None,
    dropped: Sequence[Mapping[str, str]] = (),
) -> Report:
    """Check ``tree`` (a staged overlay) placed on top of ``view_layers`` (muvm order:
    base, gpu overlays, compat, earlier deps overlays).

    ``policy`` is the stack's class, waivers, allowances and loader search.
    ``owners`` maps absolute paths of the tree to the package that brought them.
    ``digests`` maps paths of the tree to (sha256, size) as the stage step recorded them
    (the extraction cache's meta.json): ELF facts of those contents come from the
    persistent cache without opening the file. A file whose size differs, or whose mtime
    is not the stage step's 0, was written since: it is read (and hashed) as if unknown.
    ``dropped`` lists the tool executables the stage step left out (path, package, type,
    and for programs what the host has there); the report carries them.
    """
    stack_class = policy.stack_class
    waivers = policy.all_waivers()
    if stack_class not in registry.CLASSES:
        raise CheckError(f"unknown artifact class {stack_class!r}",
                         f"use one of {', '.join(registry.CLASSES)}")
    overlay = Tree.from_dir(tree, name or tree.name)
    lower_trees = [Tree.from_dir(layer.root, layer.name) for layer in view_layers]
    lower = View(view_layers, lower_trees)
    top = Layer(overlay.layer, tree, stack_class)
    view = View([*view_layers, top], [*lower_trees, overlay])
    ctx = CheckContext(
        tree=tree, stack_class=stack_class, owners=owners, overlay=overlay, lower=lower,
        view=view,
        search=Search(lib_dirs=policy.lib_dirs, ld_library_path=policy.ld_library_path,
                      hwcaps=policy.hwcaps),
        allow_elf=policy.allow_elf, allow_32bit=policy.allow_32bit, layers=tuple(view_layers),
        digests=digests or {},
    )
    used: set[int] = set()
    used_allow: set[str] = set()
    findings: list[Finding] = []
    summary: dict[str, dict[str, Any]] = {}
    for inv in registry.INVARIANTS.values():
        mode = inv.policy[stack_class]
        mine: list[Finding] = []
        if mode != "skip":
            for finding in inv.check(ctx):
                if finding.status == "accounted":
                    used_allow.add(finding.path)
                elif mode == "report":
                    finding = dataclasses.replace(finding, status="reported")
                finding = _waive(finding, inv, waivers, used)
                if finding.status == "fail":
                    finding = dataclasses.replace(finding, hint=remedy.with_remedy(finding))
                mine.append(finding)
        counts = {k: sum(f.status == k for f in mine) for k in ("fail", "accounted", "reported")}
        if mode == "skip":
            status = "skipped"
        elif counts["fail"]:
            status = "fail"
        elif counts["reported"]:
            status = "reported"
        elif counts["accounted"]:
            status = "accounted"
        else:
            status = "pass"
        summary[inv.name] = {"letter": inv.letter, "title": inv.title, "policy": mode,
                             "status": status, "counts": counts}
        findings += mine
    warnings = [
        f"waiver for {w.invariant} ({_waiver_scope(w)}) matches nothing: {w.reason}"
        for i, w in enumerate(waivers) if i not in used
    ]
    for allow in policy.allow_elf:
        if not any(fnmatch.fnmatchcase(p, allow.path) for p in used_allow):
            warnings.append(f"allow_elf {allow.path} accounts for no ELF file: {allow.reason}")
    elf.flush()
    return Report(
        tree=str(tree),
        stack_class=stack_class,
        layers=tuple({"name": layer.name, "class": layer.klass, "root": str(layer.root)}
                     for layer in (*view_layers, top)),
        invariants=summary,
        findings=tuple(sorted(findings, key=lambda f: (f.invariant, f.path, f.detail))),
        warnings=tuple(warnings),
        elf={path: _elf_row(facts) for path, facts in ctx.elves()},
        linkability=tuple(ctx.extra.get("linkability", ())),
        dropped=tuple(dict(row) for row in dropped),
    )


def _waiver_scope(w: Waiver) -> str:
    parts = [f"path {w.path}" if w.path else "", f"package {w.package}" if w.package else ""]
    return ", ".join(p for p in parts if p) or "everything"


def _waive(finding: Finding, inv: registry.Invariant, waivers: Sequence[Waiver],
           used: set[int]) -> Finding:
    if finding.status == "accounted":
        return finding
    for i, w in enumerate(waivers):
        if w.invariant not in (inv.name, inv.letter) or not w.invariant:
            continue
        if w.path is not None and not fnmatch.fnmatchcase(finding.path, w.path):
            continue
        if w.package is not None and finding.package != w.package:
            continue
        used.add(i)
        return dataclasses.replace(finding, status="accounted", reason=w.reason)
    return finding


def _elf_row(facts: elf.ElfFacts) -> dict[str, Any]:
    if facts.error is not None:
        return {"error": facts.error}
    return {
        "arch": facts.arch,
        "class": facts.elf_class,
        "machine": facts.machine,
        "type": facts.e_type,
        "interp": facts.interp,
        "soname": facts.soname,
        "needed": list(facts.needed),
        "rpath": facts.rpath,
        "runpath": facts.runpath,
        "isa_needed": facts.isa_level,
        "isa_used": elf.isa_name(facts.isa_used),
        "isa_needed_bits": facts.isa_needed,
        "isa_used_bits": facts.isa_used,
    }
