"""Runtime audit: run the app with tracing on, and say which seeds would fix what it missed.

``doit suggest:<app>`` runs the app once, like ``run:<app>`` but with the trace variables
of :mod:`runner.trace` in its environment and despite blocking appcheck findings (it
wants to see as much as it can). Then it collects what the run missed:

- sonames appcheck's linkability model found missing (appcheck.json),
- libraries the loader was asked for (DT_NEEDED or dlopen) and never mapped (run.log),
- what the app's own errors name (GStreamer's ``no element "videotestsrc"``, dlerror text),
- on the native backend, files and programs the app's processes failed to open or exec
  (strace; only those a package of the repositories ships become findings),

and asks the stack's repositories (libdnf5, :mod:`overlays.provides`) who provides each:
``<soname>()(64bit)`` for a soname, the path for a file, the plugin library for a
GStreamer element (:data:`GST_PLUGINS`: element -> plugin file). The answer is printed as
seed lines ready to paste under ``[seeds]``, each with the reason it was found, and kept
in the evidence as suggest.json beside run.log (the raw trace).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from fexstack import jsonio
from overlays import provides
from overlays.stack import Stack
from runner import appcheck, evidence, trace
from runner.options import RunOptions

SUGGEST_EVIDENCE = "suggest.json"
_LINKABILITY = re.compile(r"^(?P<soname>\S+) \(needed by (?P<by>\S+)\) is not found")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# GStreamer element -> the plugin library that registers it (libgst<plugin>.so), where
# the two names differ; any other element is looked for as libgst<element>.so.
GST_PLUGINS: dict[str, str] = {
    **dict.fromkeys(("filesrc", "filesink", "fakesrc", "fakesink", "queue", "tee", "identity",
                     "capsfilter", "fdsrc", "fdsink", "queue2", "multiqueue", "valve",
                     "input-selector", "output-selector", "typefind"), "coreelements"),
    **dict.fromkeys(("videoconvert", "videoscale", "videoconvertscale"), "videoconvertscale"),
    **dict.fromkeys(("pngenc", "pngdec"), "png"),
    **dict.fromkeys(("jpegenc", "jpegdec"), "jpeg"),
    **dict.fromkeys(("avimux", "avidemux", "avisubtitle"), "avi"),
    **dict.fromkeys(("matroskamux", "matroskademux", "webmmux"), "matroska"),
    **dict.fromkeys(("multifilesink", "multifilesrc", "splitmuxsink", "splitmuxsrc"),
                    "multifile"),
    **dict.fromkeys(("oggmux", "oggdemux"), "ogg"),
    **dict.fromkeys(("vorbisenc", "vorbisdec"), "vorbis"),
    **dict.fromkeys(("theoraenc", "theoradec"), "theora"),
    **dict.fromkeys(("flacenc", "flacdec", "flacparse"), "flac"),
    **dict.fromkeys(("qtmux", "mp4mux", "qtdemux"), "isomp4"),
    **dict.fromkeys(("decodebin", "decodebin3", "uridecodebin", "playbin", "playbin3"),
                    "playback"),
    **dict.fromkeys(("autovideosink", "autoaudiosink", "autovideosrc"), "autodetect"),
    "ximagesink": "ximage",
    "xvimagesink": "xvimage",
    "textoverlay": "pango",
    "wavparse": "wavparse",
    "wavenc": "wavenc",
}
GST_PLUGIN_GLOB = "/usr/lib*/gstreamer-1.0/libgst{plugin}.so"
# Caches that package scriptlets and triggers generate (no package ships them): a missing
# one is asked as its inputs, relative to the cache's folder.
CACHE_INPUTS: tuple[tuple[str, str], ...] = (
    ("*/mime/mime.cache", "packages/*.xml"),  # shared-mime-info's database
    ("*/glib-2.0/schemas/gschemas.compiled", "*.gschema.xml"),  # GSettings schemas
    ("*/gdk-pixbuf-2.0/*/loaders.cache", "loaders/*.so"),  # gdk-pixbuf loaders
    ("*/gio/modules/giomodule.cache", "*.so"),  # GIO modules
    ("*/gtk-3.0/*/immodules.cache", "immodules/*.so"),  # GTK 3 input methods
)
LIB_GLOB = "/usr/lib*/{name}"


@dataclass(frozen=True)
class Finding:
    """One thing the run missed, where it was seen, and the repositories' answer."""

    kind: str  # runner.trace SONAME, FILE or GST_ELEMENT
    name: str
    source: str  # appcheck, loader-trace or app-error
    reason: str
    evidence: str  # the line (or appcheck finding) that shows it
    question: str = ""  # the capability or path asked of the repositories
    packages: tuple[str, ...] = ()
    note: str = ""  # why there is no seed line (in the base, already locked, no provider)


def from_appcheck(report: Any) -> list[trace.Missed]:
    """Missing sonames of appcheck's linkability findings."""
    found: list[trace.Missed] = []
    for item in (report or {}).get("findings", ()):
        if item["kind"] != "linkability":
            continue
        match = _LINKABILITY.match(item.get("detail", ""))
        if match is not None:
            found.append(trace.Missed(
                trace.SONAME, match["soname"],
                f"{match['by']} links {match['soname']} (appcheck: not in the merged view)",
                f"{item['path']}: {item['detail']}",
            ))  # fmt: skip
    return found


def collect(evidence_dir: Path) -> list[tuple[str, trace.Missed]]:
    """(source, missed) from one run's evidence: appcheck.json and run.log."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, trace.Missed]] = []
    log = (evidence_dir / "run.log").read_text(errors="replace")
    report = appcheck.read_evidence(evidence_dir)
    appdir = str(report["appdir"]) if report else None
    sources = [
        ("appcheck", from_appcheck(report)),
        ("loader-trace", trace.loader_misses(log)),
        ("app-error", trace.named_by_errors(log)),
        ("syscall-trace", _syscall_misses(evidence_dir)),
    ]
    for source, items in sources:
        for item in items:
            library = item.kind == trace.SONAME or ".so" in Path(item.name).name
            key = (trace.SONAME, Path(item.name).name) if library else (item.kind, item.name)
            if key in seen:
                continue
            seen.add(key)
            if appdir:  # the extracted AppDir's cache path says nothing to a reader
                item = dataclasses.replace(item, reason=item.reason.replace(appdir, "$APPDIR"))
            out.append((source, item))
    return out


def _syscall_misses(evidence_dir: Path) -> list[trace.Missed]:
    folder = evidence_dir / trace.STRACE_DIR
    report = evidence_dir / "run.report.json"
    if not folder.is_dir() or not report.is_file():
        return []
    guest = evidence.Evidence(evidence_dir).read_report().get("guest_command") or []
    return trace.syscall_misses(folder, guest[0]) if guest else []


def _questions(item: trace.Missed) -> list[provides.Question]:
    if item.kind == trace.SONAME:
        return [provides.Question(provides.SONAME, item.name),
                provides.Question(provides.FILE, LIB_GLOB.format(name=item.name))]
    if item.kind == trace.FILE:
        for cache, inputs in CACHE_INPUTS:
            if fnmatch.fnmatchcase(item.name, cache):
                folder = item.name.rpartition("/")[0]
                return [provides.Question(provides.FILE, f"{folder}/{inputs}")]
        return [provides.Question(provides.FILE, item.name)]
    plugin = GST_PLUGINS.get(item.name, item.name)
    return [provides.Question(provides.FILE, GST_PLUGIN_GLOB.format(plugin=plugin))]


def resolve(
    stack: Stack,
    missed: Sequence[tuple[str, trace.Missed]],
    *,
    present: Iterable[str] = (),
    base: Iterable[str] = (),
    progress: Callable[[str], None] = lambda line: None,
) -> list[Finding]:
    """Each missed item with the packages that provide it (the first question answered)."""
    locked = set(present)
    in_base = set(base)
    asked = [(source, item, _questions(item)) for source, item in missed]
    flat = [q for _, _, qs in asked for q in qs]
    answers = dict(zip(flat, provides.providers(stack, flat, progress), strict=True))
    findings: list[Finding] = []
    for source, item, questions in asked:
        answer = next((answers[q] for q in questions if answers[q].packages), None)
        if answer is None and source == "syscall-trace":
            continue  # most failed opens are searches and optional files: only provided ones
        question = (answer.question if answer else questions[0]).capability
        packages = answer.packages if answer else ()
        note = ""
        if not packages:
            note = f"no package in the stack's repositories provides {question}"
        elif set(packages) & in_base:
            note = f"{', '.join(sorted(set(packages) & in_base))} is in the base already"
        elif set(packages) & locked:
            note = f"{', '.join(sorted(set(packages) & locked))} is in the stack's lock already"
        reason = item.reason
        if item.kind == trace.GST_ELEMENT and answer is not None:
            reason += f" (plugin {', '.join(Path(f).name for f in answer.files) or question})"
        findings.append(Finding(item.kind, item.name, source, reason, item.line, question,
                                packages, note))  # fmt: skip
    return findings


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def seed_lines(findings: Sequence[Finding]) -> list[str]:
    """``pkg = "reason"`` lines for [seeds]: one per package, the reasons joined."""
    reasons: dict[str, list[str]] = {}
    for f in findings:
        if f.note or not f.packages:
            continue
        also = f" (also in {', '.join(f.packages[1:])})" if len(f.packages) > 1 else ""
        reasons.setdefault(f.packages[0], []).append(f.reason + also)
    return [f"{_toml_key(pkg)} = {json.dumps('; '.join(why))}" for pkg, why in reasons.items()]


def document(app: str, run: dict[str, Any], findings: Sequence[Finding]) -> dict[str, Any]:
    """suggest.json: the run it read, each finding, and the seed lines."""
    return {
        "format": 1,
        "app": app,
        "run": run,
        "trace_env": dict(trace.TRACE_ENV),
        "findings": [{**dataclasses.asdict(f), "packages": list(f.packages)} for f in findings],
        "seeds": seed_lines(findings),
    }


def write_and_print(
    evidence_dir: Path, doc: dict[str, Any], stream: TextIO
) -> None:
    """Write suggest.json into the evidence and print the findings and the seed lines."""
    jsonio.write(evidence_dir / SUGGEST_EVIDENCE, doc, "suggest")
    print(f"suggest:{doc['app']}: the run ended {doc['run']['outcome']}; "
          f"{len(doc['findings'])} thing(s) missed", file=stream)  # fmt: skip
    for f in doc["findings"]:
        where = ", ".join(f["packages"]) or "-"
        print(f"  [{f['source']}] {f['kind']} {f['name']}: {where}"
              + (f" ({f['note']})" if f["note"] else ""), file=stream)  # fmt: skip
    if doc["seeds"]:
        print("Seed lines to paste under [seeds]:", file=stream)
        for line in doc["seeds"]:
            print(line, file=stream)
    else:
        print("No seed to add.", file=stream)
    print(f"(trace: {evidence_dir / 'run.log'}; {evidence_dir / SUGGEST_EVIDENCE})", file=stream)


def audit(
    stack: Stack,
    options: RunOptions,
    *,
    deps: Sequence[tuple[str, Path, Path | None]],
    compat: Path | None,
    locked: Iterable[str] = (),
    base: Iterable[str] = (),
) -> dict[str, Any]:
    """Run ``stack``'s app traced (see the module docstring) with ``options`` (forced past
    appcheck's findings); return suggest.json's document."""
    import sys

    from runner.launch import run_app
    from runner.profile import from_stack

    out = options.stream or sys.stdout
    if shutil.which("strace") is None:
        print("suggest: strace is not installed: missing data files and programs are not "
              "traced (the loader's trace still is)", file=out)  # fmt: skip
    profile = from_stack(stack, deps=deps, compat=compat, env=trace.TRACE_ENV)
    result = run_app(profile, replace(
        options, force=True, stream=out, syscall_trace=shutil.which("strace") is not None,
    ))  # fmt: skip
    missed = collect(result.evidence_dir)
    findings = resolve(
        stack, missed, present=locked, base=base,
        progress=lambda line: print(f"suggest: {line}", file=out, flush=True),
    )  # fmt: skip
    run = {"outcome": result.outcome, "reason": result.reason,
           "evidence_dir": str(result.evidence_dir)}  # fmt: skip
    doc = document(stack.name, run, findings)
    write_and_print(result.evidence_dir, doc, out)
    return doc
