"""The start-up bench: N cold and N warm starts of an app, min/median/max per phase.

A cold start boots a fresh VM (the run gets its own XDG_RUNTIME_DIR, so no running muvm
VM is reused) after dropping the AppImage's extraction cache (and its sanitized copy);
a warm start keeps the cache. Runs alternate cold, warm, cold, warm, ... so every warm
run follows a cold one that refilled the cache. Each run is a full evidence bundle under
the bench's folder ``evidence/bench-<name>/<UTC timestamp>/`` (``cold-1/``, ``warm-1/``,
...); ``bench.json`` (schema ``bench``) holds the runs and, per kind and phase, min,
median and max. Phases are those of run.report.json: preflight, extract, appcheck,
launch (to exit, or to the ``--ready`` pattern when given: the app is then stopped),
ready and total.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fexstack import __version__, atomic, jsonio
from fexstack.errors import ConfigError
from runner import evidence
from runner.evidence import Outcome
from runner.launch import PHASES, RunResult, run_app, sanitized_dir
from runner.options import RunOptions
from runner.profile import Profile

BENCH_NAME = "bench.json"
BENCH_SCHEMA = "bench"
KINDS = ("cold", "warm")
DEFAULT_RUNS = 3


@dataclass(frozen=True)
class BenchResult:
    dir: Path
    doc: dict[str, Any]
    runs: tuple[RunResult, ...]

    @property
    def all_pass(self) -> bool:
        return bool(self.doc["all_pass"])


def drop_extraction(profile: Profile) -> list[str]:
    """Remove ``profile``'s AppImage extraction (and sanitized copy) from the cache."""
    if profile.appimage is None or not profile.appimage.is_file():
        return []
    from runner import appimage

    entry = appimage.default_cache() / appimage.cache_key(profile.appimage)
    dropped = []
    if profile.sanitize:
        sanitized = sanitized_dir(entry / appimage.APPDIR_NAME, profile.sanitize)
        if sanitized.exists():
            atomic.remove(sanitized)
            dropped.append(str(sanitized))
    if entry.exists():
        atomic.remove(entry)
        dropped.append(str(entry))
    return dropped


def stats(values: Sequence[float | None]) -> dict[str, Any] | None:
    """n, min, median and max of the known values (None when there are none)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {
        "n": len(known),
        "min": round(min(known), 3),
        "median": round(statistics.median(known), 3),
        "max": round(max(known), 3),
    }


def _record(
    kind: str, index: int, run: RunResult, parent: Path, dropped: list[str]
) -> dict[str, Any]:
    report = evidence.Evidence(run.evidence_dir).read_report()
    extraction = report.get("extraction")
    phases = report.get("phases") or {}
    return {
        "kind": kind,
        "index": index,
        "evidence": str(run.evidence_dir.relative_to(parent)),
        "outcome": report["outcome"],
        "reason": report["reason"],
        "cache_hit": extraction["cache_hit"] if extraction else None,
        "cache_dropped": dropped,
        "fresh_vm": kind == "cold",
        "runtime_dir": report["runtime_dir"],
        "ready": phases.get("ready") is not None,
        "phases": {p: phases.get(p) for p in PHASES},
    }


def run_bench(
    profile: Profile,
    options: RunOptions,
    *,
    name: str | None = None,
    runs: int = DEFAULT_RUNS,
) -> BenchResult:
    """Run ``runs`` cold and ``runs`` warm starts of ``profile``'s app, each with
    ``options`` (a cold one with ``fresh_runtime``); write bench.json; print the table.
    ``options.ready`` ends each launch at that pattern. ``name`` labels the evidence."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"--runs {runs} is not positive", "pass --runs N with N >= 1")
    out = options.stream or sys.stdout
    profile = options.apply(profile)
    ready = options.ready
    label = name or profile.app
    parent = evidence.create(f"bench-{label}", out_dir=options.out_dir, root=options.evidence_root)
    parent.append_log(
        f"== fexstack {__version__}: bench of {label}: {runs} cold and {runs} warm starts "
        f"({profile.backend} backend" + (f", ready: {ready!r}" if ready else "") + ")"
    )
    results: list[RunResult] = []
    records: list[dict[str, Any]] = []
    for i in range(1, runs + 1):
        for kind in KINDS:
            dropped = drop_extraction(profile) if kind == "cold" else []
            folder = parent.dir / f"{kind}-{i}"
            parent.append_log(f"== {kind} {i}: {folder}" + (
                f" (dropped {', '.join(dropped)})" if dropped else ""))  # fmt: skip
            run = run_app(
                profile, replace(options, out_dir=folder, fresh_runtime=kind == "cold", stream=out)
            )
            results.append(run)
            records.append(_record(kind, i, run, parent.dir, dropped))
            parent.append_log(f"== {kind} {i}: {run.outcome}: {run.reason}")
    summary = {
        kind: {p: stats([r["phases"][p] for r in records if r["kind"] == kind]) for p in PHASES}
        for kind in KINDS
    }
    doc = {
        "format": 1,
        "fexstack_version": __version__,
        "name": label,
        "backend": profile.backend,
        "runs_per_kind": runs,
        "ready": ready,
        "timeout_seconds": profile.timeout_seconds,
        "command": list(options.command) if options.command is not None else None,
        "appimage": str(profile.appimage) if profile.appimage is not None else None,
        "runs": records,
        "summary": summary,
        "all_pass": all(r["outcome"] == Outcome.PASS for r in records),
    }
    jsonio.write(parent.dir / BENCH_NAME, doc, BENCH_SCHEMA)
    table = format_table(doc)
    parent.append_log(table)
    out.write(table)
    out.write(f"bench: {parent.dir / BENCH_NAME}\n")
    out.flush()
    return BenchResult(parent.dir, doc, tuple(results))


def _cell(s: Mapping[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}"


def format_table(doc: Mapping[str, Any]) -> str:
    """Per phase: cold and warm min / median / max, in seconds."""
    head = ["phase", "cold min / median / max", "warm min / median / max"]
    rows = [[p, _cell(doc["summary"]["cold"][p]), _cell(doc["summary"]["warm"][p])]
            for p in PHASES]  # fmt: skip
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(3)]
    passed = sum(1 for r in doc["runs"] if r["outcome"] == Outcome.PASS)
    lines = [
        f"bench:{doc['name']} ({doc['backend']} backend): {doc['runs_per_kind']} cold, "
        f"{doc['runs_per_kind']} warm; {passed}/{len(doc['runs'])} PASS (seconds)",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"
