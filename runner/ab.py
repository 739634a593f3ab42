"""A/B runs: the same app (or probe) under each ``--gpu-mode``, and what differed.

:func:`run_ab` makes a parent evidence directory ``evidence/ab-<name>/<UTC timestamp>/``
with one complete evidence bundle per mode (``drm/``, ``venus/``, ``software/``: run.log,
inputs.json, run.report.json, and probe.json for a probe) and ``diff.json`` (schema
``ab-diff``) lining them up: outcome, status, reason, renderer (GPU probe), timings. The
guest sees the mode as ``FEXSTACK_GPU_MODE``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fexstack import __version__, jsonio
from overlays.stack import GPU_MODES
from runner import evidence, probe
from runner.evidence import Outcome
from runner.launch import PHASES, RunResult, run_app
from runner.options import RunOptions
from runner.profile import Profile

DIFF_NAME = "diff.json"
DIFF_SCHEMA = "ab-diff"
COMPARED = ("outcome", "status", "stage", "reason")  # compared for every run
TIMINGS = ("launch", "total")


@dataclass(frozen=True)
class AbResult:
    dir: Path
    diff: dict[str, Any]
    runs: Mapping[str, RunResult]

    @property
    def all_pass(self) -> bool:
        return bool(self.diff["all_pass"])


def _row(mode: str, run: RunResult, probe_doc: Mapping[str, Any] | None) -> dict[str, Any]:
    report = evidence.Evidence(run.evidence_dir).read_report()
    status = report["guest_status_code"]
    if status is None:
        status = report["exit_status"]
    phases = report.get("phases") or {}
    row: dict[str, Any] = {
        "evidence": mode,
        "outcome": report["outcome"],
        "reason": report["reason"],
        "stage": report["stage"],
        "status": status,
        "signal": report["signal"],
        "timed_out": report["timed_out"],
        "duration_seconds": report["duration_seconds"],
        "phases": {k: phases.get(k) for k in PHASES},
    }
    if probe_doc is not None:
        row["outcome"] = probe_doc["outcome"]  # a probe without its output is not a PASS
        row["reason"] = probe_doc["reason"]
        if probe_doc["probe"] == "gpu":
            row["renderer"] = probe_doc.get("renderer")
    return row


def diff_rows(rows: Mapping[str, Mapping[str, Any]], fields: Sequence[str]) -> dict[str, Any]:
    """Which fields differ across the modes, each with its value per mode; the timings."""
    differences = []
    same = []
    for name in fields:
        values = {mode: row.get(name) for mode, row in rows.items()}
        if len({repr(v) for v in values.values()}) > 1:
            differences.append({"field": name, "values": values})
        else:
            same.append(name)
    timings: dict[str, Any] = {}
    for phase in TIMINGS:
        per_mode = {mode: row["phases"].get(phase) for mode, row in rows.items()}
        known = {m: v for m, v in per_mode.items() if v is not None}
        timings[phase] = {
            "seconds": per_mode,
            "fastest": min(known, key=lambda m: known[m]) if known else None,
            "slowest": max(known, key=lambda m: known[m]) if known else None,
            "spread_seconds": round(max(known.values()) - min(known.values()), 3)
            if known else None,
        }  # fmt: skip
    return {"differences": differences, "same": same, "timings": timings}


def run_ab(
    profile: Profile,
    options: RunOptions,
    *,
    name: str | None = None,
    modes: Sequence[str] = GPU_MODES,
    probe_kind: str | None = None,
    context: str | None = None,
) -> AbResult:
    """Run ``profile``'s app (or ``options.command``, or the ``probe_kind`` probe) once per
    mode, each with ``options`` (its ``gpu_mode`` is the mode's, its ``out_dir`` the
    mode's folder). ``name`` labels the evidence; ``context`` the probe's."""
    out = options.stream or sys.stdout
    profile = profile.with_overrides(backend=options.backend)
    label = name or (f"probe-{probe_kind}" if probe_kind else profile.app)
    parent = evidence.create(f"ab-{label}", out_dir=options.out_dir, root=options.evidence_root)
    parent.append_log(
        f"== fexstack {__version__}: A/B of {label} across --gpu-mode {', '.join(modes)} "
        f"({profile.backend} backend)"
    )
    runs: dict[str, RunResult] = {}
    rows: dict[str, dict[str, Any]] = {}
    for mode in modes:
        mode_dir = parent.dir / mode
        parent.append_log(f"== {mode}: {mode_dir}")
        probe_doc = None
        moded_options = replace(options, gpu_mode=mode, out_dir=mode_dir, stream=out)
        if probe_kind is not None:
            done = probe.run_probe(probe_kind, profile, moded_options, context=context)
            run, probe_doc = done.run, done.probe
        else:
            env = dict(profile.env)
            env[probe.GPU_MODE_ENV] = mode
            moded = replace(profile, env=MappingProxyType(dict(sorted(env.items()))))
            run = run_app(moded, moded_options)
        runs[mode] = run
        rows[mode] = _row(mode, run, probe_doc)
        parent.append_log(f"== {mode}: {run.outcome}: {run.reason}")
    fields = [*COMPARED, "renderer"] if probe_kind == "gpu" else list(COMPARED)
    compared = diff_rows(rows, fields)
    doc = {
        "format": 1,
        "fexstack_version": __version__,
        "name": label,
        "kind": "probe" if probe_kind else "app",
        "probe": probe_kind,
        "backend": profile.backend,
        "modes": list(modes),
        "runs": rows,
        "compared": fields,
        **compared,
        "all_pass": all(row["outcome"] == Outcome.PASS for row in rows.values()),
    }
    jsonio.write(parent.dir / DIFF_NAME, doc, DIFF_SCHEMA)
    table = format_table(doc)
    parent.append_log(table)
    out.write(table)
    out.write(f"diff: {parent.dir / DIFF_NAME}\n")
    out.flush()
    return AbResult(parent.dir, doc, runs)


def format_table(doc: Mapping[str, Any]) -> str:
    """The A/B result as a short aligned table, then the fields that differed."""
    cols = ["mode", "outcome", "status", "launch s"]
    if doc["probe"] == "gpu":
        cols.append("renderer")
    rows = []
    for mode, row in doc["runs"].items():
        line = [mode, row["outcome"], str(row["status"]), str(row["phases"].get("launch"))]
        if doc["probe"] == "gpu":
            line.append(str(row.get("renderer")))
        rows.append(line)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    text = [f"ab:{doc['name']} ({doc['backend']} backend)"]
    text.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in rows:
        text.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    differing = [d["field"] for d in doc["differences"]]
    text.append(f"differs: {', '.join(differing) if differing else 'nothing'}")
    return "\n".join(text) + "\n"
