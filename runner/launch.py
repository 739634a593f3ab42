"""Running an app end to end, always leaving evidence.

:func:`run_app` creates the evidence directory, records the inputs, runs preflight,
extracts the AppImage (and sanitizes it if asked), runs the appcheck hook, re-checks the
deps overlays against their manifests right before the launch, launches through the
chosen backend under a PTY, reads the outcome and writes the report. Whatever happens
on the way, a report is written: PASS (the app ran and exited 0), FAIL (the app ran and
failed, or timed out) or INFRA (the run never reached the app: something is missing or
misconfigured), or WINDOW_SEEN (a GUI app that does not exit showed a mapped top-level
window until the timeout ended it), and where the evidence went is printed. With a
display, the report lists the app's windows and the evidence holds a screenshot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fexstack import __version__, jsonio, paths
from fexstack.digest import sha256_file
from fexstack.errors import FexstackError, ImageError, RunError
from runner import capture, display, evidence, hostinfo, identity, native, preflight, trace
from runner import muvm as muvm_cli
from runner.evidence import Outcome
from runner.options import AppcheckResult, RunOptions
from runner.profile import GPU_ABSENT_REASON, Layer, Profile

LOG_TAIL_LINES = 40
SANITIZE_EVIDENCE = "sanitize.json"
# run.report.json "phases": preflight (checks and image hashes), extract (the AppImage,
# sanitizing included), appcheck, launch (start to exit, or to the ready marker), ready (when
# the --ready pattern first appeared, from the launch), total (the whole run_app call).
PHASES = ("preflight", "extract", "appcheck", "launch", "ready", "total")
LOADER_ERRORS = ("error while loading shared libraries", "CPU ISA level is lower than required")


@dataclass(frozen=True)
class RunResult:
    evidence_dir: Path
    outcome: Outcome
    reason: str


@dataclass
class _State:
    """The report being filled in as the run goes."""

    profile: Profile
    stage: str = "preflight"
    outcome: Outcome = Outcome.INFRA
    reason: str = "the run stopped before it finished"
    command: list[str] | None = None
    guest_command: list[str] | None = None
    exit_status: int | None = None
    guest_status_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    duration_seconds: float = 0.0
    preflight: list[dict[str, Any]] = field(default_factory=list)
    appcheck: dict[str, Any] | None = None
    extraction: dict[str, Any] | None = None
    runtime_dir: str | None = None
    log_tail: list[str] = field(default_factory=list)
    identity: dict[str, Any] | None = None  # who the app ran as (native backend)
    display: dict[str, Any] | None = None  # windows seen, screenshot (runner.display)
    host_fallback: list[dict[str, Any]] | None = None  # files taken from the host
    warnings: list[str] = field(default_factory=list)
    # seconds per phase (None: the phase did not run); see PHASES
    phases: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(PHASES, None))


def sanitized_dir(appdir: Path, steps: Sequence[str]) -> Path:
    """Where the sanitized copy of ``appdir`` for ``steps`` is kept in the cache."""
    key = hashlib.sha256(f"{appdir}\0{','.join(steps)}".encode()).hexdigest()
    return paths.cache_dir() / "sanitized" / key[:32]


def _image_record(layer: Layer, hashes: Mapping[Path, str]) -> dict[str, Any]:
    path = layer.path
    kind = "directory" if path.is_dir() else "file" if path.is_file() else "missing"
    sha = hashes.get(path)
    if sha is None and kind == "file":
        sha = sha256_file(path)
    return {"role": layer.role, "name": layer.name, "path": str(path), "kind": kind, "sha256": sha}


def inputs_document(
    profile: Profile, host: hostinfo.HostInfo, hashes: Mapping[Path, str]
) -> dict[str, Any]:
    """inputs.json: the profile verbatim, resolved paths, image hashes, tools, host."""
    images = []
    for layer in profile.layers():
        rec = _image_record(layer, hashes)
        size = layer.path.stat().st_size if rec["kind"] == "file" else None
        manifest_sha, manifest_error = None, None
        if layer.manifest is not None and layer.manifest.is_file():
            try:
                manifest_sha = preflight.manifest_sha256(layer.manifest)
            except ImageError as exc:  # recorded, not hidden
                manifest_error = f"{type(exc).__name__}: {exc.message}"
        images.append(
            {
                **rec,
                "realpath": os.path.realpath(layer.path),
                "size": size,
                "manifest": str(layer.manifest) if layer.manifest is not None else None,
                "manifest_sha256": manifest_sha,
                "manifest_error": manifest_error,
            }
        )
    return {
        "format": 1,
        "fexstack_version": __version__,
        "profile": profile.to_json(),
        "resolved": {
            "images": images,
            "muvm": os.path.realpath(profile.muvm) if profile.muvm is not None else None,
            "appimage": (
                os.path.realpath(profile.appimage) if profile.appimage is not None else None
            ),
            "absent": [
                {"role": "gpu", "path": str(p), "reason": GPU_ABSENT_REASON}
                for p in profile.gpu_absent
            ],
        },
        "tools": {
            "muvm": host.muvm_version,
            "fex": host.fex_version,
            "python": platform.python_version(),
        },
        "host": host.to_json(),
    }


def _report(
    state: _State,
    host: hostinfo.HostInfo,
    images: list[dict[str, Any]],
    started: dt.datetime,
) -> dict[str, Any]:
    return {
        "format": 1,
        "fexstack_version": __version__,
        "app": state.profile.app,
        "backend": state.profile.backend,
        "outcome": state.outcome,
        "reason": state.reason,
        "stage": state.stage,
        "command": state.command,
        "guest_command": state.guest_command,
        "exit_status": state.exit_status,
        "guest_status_code": state.guest_status_code,
        "signal": state.signal,
        "timed_out": state.timed_out,
        "duration_seconds": round(state.duration_seconds, 3),
        "started": evidence.iso(started),
        "finished": evidence.iso(),
        "images": images,
        "preflight": state.preflight,
        "appcheck": state.appcheck,
        "extraction": state.extraction,
        "runtime_dir": state.runtime_dir,
        "phases": {k: (round(v, 3) if v is not None else None) for k, v in state.phases.items()},
        "environment": host.to_json(),
        "log": evidence.LOG_NAME,
        "log_tail": state.log_tail,
        "identity": state.identity,
        "display": state.display,
        "host_fallback": state.host_fallback,
        "warnings": state.warnings,
    }


def _infra(state: _State, reason: str) -> None:
    state.outcome = Outcome.INFRA
    state.reason = reason


def _extract(state: _State, ev: evidence.Evidence) -> Path:
    state.stage = "extract"
    profile = state.profile
    if profile.appimage is None:
        raise RunError(
            f"no AppImage to run for {profile.app}", "set [app].appimage in the stack"
        )
    from runner import appimage

    ev.append_log(f"== extract {profile.appimage}")
    extraction = appimage.extract(profile.appimage)
    appdir = Path(extraction.appdir)
    state.extraction = {
        "appdir": str(appdir),
        "cache_hit": bool(extraction.cache_hit),
        "seconds": round(float(extraction.seconds), 3),
        "sanitized": None,
    }
    if profile.sanitize:
        state.stage = "sanitize"
        from runner import sanitize

        out = sanitized_dir(appdir, profile.sanitize)
        ev.append_log(f"== sanitize {appdir} -> {out} ({', '.join(profile.sanitize)})")
        done = sanitize.sanitize(appdir, out, steps=profile.sanitize)
        jsonio.write(ev.dir / SANITIZE_EVIDENCE, done.evidence, sanitize.SCHEMA)
        state.extraction["sanitized"] = str(done.appdir)
        appdir = Path(done.appdir)
    return appdir


def _recheck_deps(state: _State) -> str | None:
    """Right before the launch: do the deps images still match their manifests?"""
    state.stage = "hashcheck"
    hashes: dict[Path, str] = {}
    for layer in state.profile.layers():
        if layer.role != "deps":
            continue
        check = preflight.check_manifest(layer, hashes)
        if check.status != preflight.OK:
            return check.detail
    return None


def _private_runtime_dir() -> Path:
    parent = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(parent) if parent and Path(parent).is_dir() else Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix="fexstack-run-", dir=base))
    path.chmod(0o700)
    return path


def _launch(
    state: _State,
    ev: evidence.Evidence,
    guest_argv: list[str],
    *,
    private_runtime: bool,
    binds: Sequence[Path],
    echo: bool | None,
    ready: re.Pattern[str] | None = None,
    syscall_trace: bool = False,
) -> None:
    state.stage = "launch"
    profile = state.profile
    state.guest_command = guest_argv
    runtime_dir: Path | None = None
    monitor = display.WindowMonitor(os.environ, ev.dir / display.SCREENSHOT_NAME)
    watching = monitor.start()
    try:
        with open(ev.log, "ab") as log_file:
            if profile.backend == "muvm":
                argv = muvm_cli.muvm_argv(profile, guest_argv)
                env = dict(os.environ)
                if private_runtime:
                    runtime_dir = _private_runtime_dir()
                    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
                    state.runtime_dir = str(runtime_dir)
                state.command = argv
                log_file.write(f"== launch {shlex.join(argv)}\n".encode())
                log_file.flush()
                result = capture.run_pty(
                    argv, env=env, timeout_seconds=profile.timeout_seconds,
                    log_file=log_file, echo=echo, ready=ready, stop_on_ready=ready is not None,
                    monitor=monitor if watching else None,
                )  # fmt: skip
                status = muvm_cli.interpret(
                    result.exit_status, result.signal, result.text, timed_out=result.timed_out
                )
            else:
                log_file.write(f"== launch (native) {shlex.join(guest_argv)}\n".encode())
                log_file.flush()
                who = identity.resolve(
                    os.environ, _output_owner_dir(ev), run_as=profile.run_as,
                    privileged=profile.privileged,
                )  # fmt: skip
                if who.privileged:
                    state.warnings.append(identity.PRIVILEGED_WARNING)
                result = native.run(
                    profile, guest_argv, binds=binds, log_file=log_file,
                    timeout_seconds=profile.timeout_seconds, echo=echo, ready=ready,
                    user=who, monitor=monitor if watching else None,
                    wrap=trace.strace_argv(ev.dir / trace.STRACE_DIR) if syscall_trace else (),
                )  # fmt: skip
                state.identity = native.identity_report(result.text)
                state.host_fallback = _with_owners(native.fallback_report(result.text))
                state.command = list(result.argv)
                status = native.interpret(
                    result.exit_status, result.signal, result.text, timed_out=result.timed_out
                )
    finally:
        monitor.close()
        state.display = monitor.to_json() if watching or monitor.note else None
        if runtime_dir is not None:
            shutil.rmtree(runtime_dir, ignore_errors=True)
    state.exit_status = result.exit_status
    state.signal = result.signal
    state.timed_out = result.timed_out
    state.duration_seconds = result.duration_seconds
    state.phases["launch"] = result.duration_seconds
    state.phases["ready"] = result.ready_seconds
    state.guest_status_code = status.guest_status_code
    state.outcome = status.outcome
    reason = status.reason
    if result.stopped_on_ready and not result.timed_out and ready is not None:
        # ended by fexstack at the marker: the app got that far, which is the point
        state.outcome = Outcome.PASS
        reason = (
            f"the ready marker {ready.pattern!r} appeared after {result.ready_seconds} s; "
            "the app was then stopped"
        )
    lines = [ln for ln in muvm_cli.meaningful_lines(result.text) if ln.strip()]
    if status.outcome == Outcome.FAIL:
        loader = [ln.strip() for ln in lines if any(e in ln for e in LOADER_ERRORS)]
        if loader:
            reason += f" ({loader[-1]})"
    if result.timed_out and monitor.seen and state.outcome == Outcome.FAIL:
        # a GUI app that does not exit: its window was shown, which is what it should do
        titles = ", ".join(repr(s.title) for s in monitor.seen)
        state.outcome = Outcome.WINDOW_SEEN
        reason = f"the app showed its window ({titles}) and was ended by the timeout"
    state.reason = reason
    state.log_tail = lines[-LOG_TAIL_LINES:]


def _with_owners(records: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The host fallback records with the host package of each path (the host's rpmdb)."""
    if not records:
        return records
    from runner import hostpackages

    paths = [r["path"] for r in records]
    try:
        found = hostpackages.owners(paths)
    except FexstackError as exc:  # the run happened: record why the owners are unknown
        found = [hostpackages.HostOwner(p, None, exc.message) for p in paths]
    return [
        {**r, "package": o.package, "package_note": o.note}
        for r, o in zip(records, found, strict=True)
    ]


def _output_owner_dir(ev: evidence.Evidence) -> Path:
    """The run's output folder whose owner stands for the invoking user: ``--out-dir``
    itself, else the evidence root (``evidence/<app>/<stamp>`` is made by fexstack)."""
    with contextlib.suppress(OSError):
        if ev.dir.stat().st_uid != 0:
            return ev.dir
    return ev.dir.parent.parent


def run_app(profile: Profile, options: RunOptions) -> RunResult:
    """Run the app of ``profile`` the way ``options`` say, and leave evidence.

    A stack becomes a profile with :func:`runner.profile.from_stack` (its deps overlays
    and compat layer); see :class:`~runner.options.RunOptions` for the options.
    """
    profile = options.apply(profile)
    command, binds, appcheck = options.command, options.binds, options.appcheck
    stream = options.stream
    ready_re = options.ready_pattern()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    ev = evidence.create(
        profile.app, out_dir=options.out_dir, root=options.evidence_root, now=started
    )
    state = _State(profile)
    host = hostinfo.collect(profile.muvm if profile.backend == "muvm" else None)
    hashes: dict[Path, str] = {}
    images: list[dict[str, Any]] = []
    error: BaseException | None = None
    try:
        ev.append_log(
            f"== fexstack {__version__}: {profile.app} ({profile.backend} backend), "
            f"started {evidence.iso(started)}"
        )
        t_pre = time.monotonic()
        checks = preflight.run_checks(
            profile, host=host, private_runtime=options.private_runtime,
            need_appimage=command is None,
        )
        # images are hashed once: preflight hashed the valid ones, the rest are hashed here
        hashes = dict(checks.hashes)
        hashes.update(
            {p: sha256_file(p) for p in profile.images() if p.is_file() and p not in hashes}
        )
        images = [_image_record(layer, hashes) for layer in profile.layers()]
        state.phases["preflight"] = time.monotonic() - t_pre
        ev.write_inputs(inputs_document(profile, host, hashes))
        state.preflight = [c.to_json() for c in checks.checks]
        ev.append_log("== preflight\n" + preflight.format_table(checks.checks))
        if not checks.ok:
            first = checks.failed[0]
            _infra(state, f"preflight: {first.name}: {first.detail}")
            return _finish(ev, state, host, images, started, t0, stream)
        if command is not None:
            guest_argv = list(command)
            extra_binds = list(binds)
        else:
            t_extract = time.monotonic()
            appdir = _extract(state, ev)
            state.phases["extract"] = time.monotonic() - t_extract
            state.stage = "appcheck"
            if appcheck is not None:
                t_check = time.monotonic()
                found: AppcheckResult = appcheck(appdir)
                state.phases["appcheck"] = time.monotonic() - t_check
                state.appcheck = {
                    "blocking": found.blocking,
                    "summary": found.summary,
                    "findings": list(found.findings),
                    "forced": bool(found.blocking and options.force),
                }
                ev.append_log(f"== appcheck: {found.summary}")
                if found.report is not None:
                    jsonio.write(ev.dir / "appcheck.json", found.report, "appcheck")
                if found.blocking and not options.force:
                    _infra(state, f"appcheck: {found.summary} (use force to run anyway)")
                    return _finish(ev, state, host, images, started, t0, stream)
            from runner import entrypoint

            entry = entrypoint.entrypoint(appdir)
            guest_argv = [*entry.argv, *profile.args]
            extra_binds = [appdir, *binds]
        mismatch = _recheck_deps(state)
        if mismatch is not None:
            _infra(state, f"deps overlay changed since preflight: {mismatch}")
            return _finish(ev, state, host, images, started, t0, stream)
        _launch(
            state,
            ev,
            guest_argv,
            private_runtime=checks.private_runtime_dir or options.fresh_runtime,
            binds=extra_binds,
            echo=options.echo,
            ready=ready_re,
            syscall_trace=options.syscall_trace,
        )
    except FexstackError as exc:
        _infra(state, f"{state.stage}: {exc.message}")
        ev.append_log(f"== error ({type(exc).__name__}): {exc}")
    except BaseException as exc:
        error = exc
        _infra(state, f"{state.stage}: internal error: {type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):  # the report below still says what happened
            ev.append_log(f"== internal error: {type(exc).__name__}: {exc}")
    result = _finish(ev, state, host, images, started, t0, stream)
    if error is not None:
        raise error
    return result


def build_failed(
    profile: Profile, options: RunOptions, *, task: str, stack_name: str, log: str
) -> RunResult:
    """The evidence of a run that never started because building or checking one of
    its overlays failed: INFRA at stage ``build``, naming the failing ``task``
    (``check:<stack>``) and ``stack_name``; ``log`` (that step's output and the check
    summary) goes into run.log."""
    profile = options.apply(profile)
    stream = options.stream
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    ev = evidence.create(
        profile.app, out_dir=options.out_dir, root=options.evidence_root, now=started
    )
    state = _State(profile, stage="build")
    host = hostinfo.collect(None)
    step = task.partition(":")[0]
    ev.append_log(
        f"== fexstack {__version__}: {profile.app}: not started, {task} failed "
        f"(step {step} of stack {stack_name})\n{log}"
    )
    first = next((line for line in log.splitlines() if line.strip()), "failed")
    _infra(state, f"build: {task} (step {step}, stack {stack_name}) failed: {first}")
    state.log_tail = log.splitlines()[-LOG_TAIL_LINES:]
    images = []
    with contextlib.suppress(OSError):  # an unreadable layer: the report has no images
        images = [_image_record(layer, {}) for layer in profile.layers()]
    result = _finish(ev, state, host, images, started, t0, stream)
    report = ev.read_report()
    report["build_failure"] = {"task": task, "step": step, "stack": stack_name}
    ev.write_report(report)
    return result


def _finish(
    ev: evidence.Evidence,
    state: _State,
    host: hostinfo.HostInfo,
    images: list[dict[str, Any]],
    started: dt.datetime,
    t0: float,
    stream: TextIO | None,
) -> RunResult:
    if state.stage != "launch":
        state.duration_seconds = time.monotonic() - t0
    state.phases["total"] = time.monotonic() - t0
    if not ev.inputs.exists():
        # inputs could not be recorded in full (e.g. an unreadable image): record the profile
        with contextlib.suppress(FexstackError, OSError):  # the report says why it ended
            ev.write_inputs(inputs_document(state.profile, host, {}))
    ev.append_log(f"== outcome {state.outcome}: {state.reason}")
    ev.write_report(_report(state, host, images, started))
    evidence.announce(ev, state.outcome, state.reason, stream or sys.stdout)
    return RunResult(ev.dir, state.outcome, state.reason)
