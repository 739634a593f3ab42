"""Write the install-time caches of an overlay for the merged view (the stage step).

For each kind of :data:`invariants.cachekinds.KINDS`: when the overlay adds inputs (or the
layers below carry inputs but no cache, as a base installed without scriptlets does),
and the cache's path is neither a lower layer's (precedence: the base's file wins, the
check reports it stale) nor one the base declares the host provides (the overlay's cache
would hide the host's), the kind's tool runs on the merged view and its outputs are
copied into the staging tree. The tool is the view's own x86_64 tool when the view has
one (run in a chroot of an overlayfs of staging + lower layers), else the host's for an
arch-independent format. Outputs whose order follows readdir are normalized, so the
bytes depend only on the inputs and the tool.

Each kind's outcome is a record (``stage.json`` ``caches``, the manifest's ``caches``):
``made`` with tool, where it ran, version, tool sha256, inputs sha256 and the files; or
``skipped`` with why (the check turns those into findings).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fexstack import command, jsonio
from fexstack.digest import sha256_file
from fexstack.errors import StageError
from invariants.cachekinds import KINDS
from invariants.cachekinds.kind import Kind
from invariants.view import View

RECIPE = 1  # bump when what is generated or how changes


def _lines(data: bytes) -> bytes:
    lines = sorted(line for line in data.decode().splitlines() if line)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _blocks(data: bytes) -> bytes:
    """Header comment lines first, then the blank-line separated blocks, sorted."""
    lines = data.decode().splitlines()
    head: list[str] = []
    while lines and lines[0].startswith("#"):
        head.append(lines.pop(0))
    blocks, block = [], []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line)
        elif block:
            blocks.append("\n".join(block))
            block = []
    text = "\n".join(head) + "\n" + "".join(b + "\n\n" for b in sorted(blocks))
    return text.encode()


NORMALIZERS: Mapping[str, Callable[[bytes], bytes]] = {"lines": _lines, "blocks": _blocks}


def _under(path: str, roots: Iterable[str]) -> str | None:
    return next((r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")), None)


def _staged_inputs(staging: Path, kind: Kind) -> list[str]:
    top = kind.inputs[:-3] if kind.inputs.endswith("/**") else kind.inputs
    folder = staging / top.lstrip("/")
    if not folder.is_dir():
        return []
    out = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = "/" + str(Path(dirpath, name).relative_to(staging))
            if kind.is_input(path):
                out.append(path)
    return sorted(out)


def _lower_inputs(lower: View, kind: Kind) -> list[str]:
    top = kind.inputs[:-3] if kind.inputs.endswith("/**") else kind.inputs
    return sorted(p for p, n in lower.walk(top) if n.kind != "dir" and kind.is_input(p))


def _inputs_digest(staging: Path, lower: View, paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        disk = staging / path.lstrip("/")
        if not disk.exists():
            found = lower.disk(path)
            if found is None:
                continue
            disk = found
        h.update(f"{path}\0{sha256_file(disk)}\n".encode())
    return h.hexdigest()


def _view_tool(staging: Path, lower: View, kind: Kind) -> tuple[str, Path] | None:
    for candidate in kind.tools:
        disk = staging / candidate.lstrip("/")
        if disk.is_file() and not disk.is_symlink():
            return candidate, disk
        found = lower.resolve(candidate)
        if found.node is not None and found.node.kind == "file":
            return candidate, found.node.source
    return None


def plan(
    staging: Path, lower: View, host_provides: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(jobs, skipped): what to run and what not, with why."""
    jobs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for kind in KINDS.values():
        added = _staged_inputs(staging, kind)
        below = _lower_inputs(lower, kind)
        lower_cache = lower.resolve(kind.cache).node is not None
        if not added and (not below or lower_cache):
            continue
        row: dict[str, Any] = {"kind": kind.name, "cache": kind.cache, "inputs_added": added}
        if lower_cache:
            skipped.append({**row, "reason": "stale-below", "detail": "a lower layer has the "
                            "cache; the overlay cannot replace it (precedence)"})  # fmt: skip
            continue
        host = _under(kind.cache, host_provides) or _under(kind.inputs.removesuffix("/**"),
                                                           host_provides)  # fmt: skip
        if host is not None:
            skipped.append({**row, "reason": "host-provided", "detail": f"the host provides "
                            f"{host}: its cache would be hidden by the overlay's"})  # fmt: skip
            continue
        if not kind.generate:
            skipped.append({**row, "reason": "not-generated", "detail": kind.meets})
            continue
        tool = _view_tool(staging, lower, kind)
        if tool is not None:
            jobs.append({**row, "tool": tool[0], "tool_sha256": sha256_file(tool[1]),
                         "where": "view", "argv": [tool[0], *kind.argv], "chroot": True,
                         "inputs_sha256": _inputs_digest(staging, lower, sorted(
                             {*added, *below}))})  # fmt: skip
            continue
        host_tool = shutil.which(kind.host_tool) if kind.host_tool else None
        if host_tool is not None:
            jobs.append({**row, "tool": host_tool, "tool_sha256": sha256_file(Path(host_tool)),
                         "where": "host", "argv": [host_tool, *kind.argv], "chroot": False,
                         "version": command.tool_version([host_tool, "--version"]),
                         "inputs_sha256": _inputs_digest(staging, lower, sorted(
                             {*added, *below}))})  # fmt: skip
            continue
        skipped.append({**row, "reason": "no-tool", "detail": f"no {kind.name} tool in the "
                        f"view ({', '.join(kind.tools)}) nor on the host"})  # fmt: skip
    return jobs, skipped


def _copy_outputs(upper: Path, staging: Path, kind: Kind) -> list[str]:
    made = []
    normalize = NORMALIZERS.get(kind.normalize)
    for output in kind.outputs:
        src = upper / output.lstrip("/")
        found = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) \
            if src.is_dir() else []  # fmt: skip
        for path in found:
            rel = path.relative_to(upper)
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or (st.st_size == 0 and st.st_rdev):
                continue  # overlayfs whiteouts are character devices
            data = path.read_bytes()
            if normalize is not None and path == src:
                data = normalize(data)
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.cache-tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o644)
            os.replace(tmp, dest)
            made.append("/" + str(rel))
    return made


def generate(
    staging: Path,
    lower: View,
    host_provides: Sequence[str] = (),
    progress: Callable[[str], None] = lambda line: None,
) -> list[dict[str, Any]]:
    """Write the caches into ``staging``; return one record per kind considered."""
    jobs, skipped = plan(staging, lower, host_provides)
    records = [{**s, "status": "skipped"} for s in skipped]
    if not jobs:
        return sorted(records, key=lambda r: str(r["kind"]))
    if os.geteuid() != 0:
        raise StageError(
            f"generating {', '.join(j['kind'] for j in jobs)} needs root (an overlayfs of the "
            "merged view)", "run the build as root (./devroot on this project)")
    lowers = [str(staging), *(str(layer.root) for layer in reversed(lower.layers))]
    with tempfile.TemporaryDirectory(prefix="fexstack-caches-") as scratch:
        work = Path(scratch)
        for sub in ("upper", "work", "root"):
            (work / sub).mkdir()
        spec = {"lowers": lowers, "upper": str(work / "upper"), "work": str(work / "work"),
                "root": str(work / "root"),
                "jobs": [{"name": j["kind"], "argv": j["argv"], "chroot": j["chroot"]}
                         for j in jobs]}  # fmt: skip
        jsonio.write(work / "spec.json", spec)
        progress(f"caches: {', '.join(j['kind'] for j in jobs)}")
        command.run(["unshare", "-m", "--propagation", "private", sys.executable, "-m",
                     "overlays.caches.merged", str(work / "spec.json")],
                    hint="cache generation mounts an overlayfs: run as root")  # fmt: skip
        results = {r["name"]: r for r in jsonio.read(work / "spec.result.json")}
        for job in jobs:
            kind = KINDS[job["kind"]]
            result = results[job["kind"]]
            if result["returncode"] != 0:
                raise StageError(
                    f"{job['tool']} failed ({result['returncode']}) writing {kind.cache}: "
                    f"{result['output'].strip()[-500:]}",
                    f"the overlay's {kind.name} inputs break the tool; see its message")
            files = _copy_outputs(work / "upper", staging, kind)
            if kind.cache not in files:
                raise StageError(f"{job['tool']} did not write {kind.cache}",
                                 "the tool's version may write another path; report it")
            rec = {k: v for k, v in job.items() if k not in ("argv", "chroot")}
            rec.setdefault("version", _version_of(staging, kind))
            if result["output"].strip():  # what the tool said (e.g. an input it ignored)
                rec["messages"] = result["output"].strip()[-2000:]
            records.append({**rec, "status": "made", "files": files})
    return sorted(records, key=lambda r: str(r["kind"]))


def _version_of(staging: Path, kind: Kind) -> str:
    """The tool's version as its cache states it (a comment line), else 'see tool_sha256'."""
    path = staging / kind.cache.lstrip("/")
    try:
        head = path.read_bytes()[:400].decode("utf-8", "replace")
    except OSError:
        return "see tool_sha256"
    for line in head.splitlines():
        if line.startswith("# Created by "):
            return line[len("# Created by "):]
    return "see tool_sha256"
