"""Probes: what the guest sees of the display and the GPU, run in the app's own context.

A probe is a run (:func:`runner.launch.run_app` with ``command=``): the same layers,
preflight, backend and evidence as the app, but the guest command is a bash script made of
builtins only (the FEX RootFS keeps bash; no other tool is assumed). The script prints
lines starting with :data:`MARK`; they are parsed from ``run.log`` into ``probe.json``
(schema ``probe``) next to the run's own files, together with host-side facts.

- ``display``: DISPLAY, XAUTHORITY, XDG_SESSION_TYPE, WAYLAND_DISPLAY (and HOME,
  XDG_RUNTIME_DIR) as the guest sees them, whether the X11 socket of that display exists,
  and what the host's variables imply: muvm's X11 bridge gives the guest DISPLAY=:1
  whenever the host has DISPLAY, and WAYLAND_DISPLAY is never forwarded.
- ``gpu``: the renderer from whichever of ``glxinfo -B``, ``eglinfo -B`` and
  ``vulkaninfo --summary`` the guest has; a missing tool is recorded as
  ``{"present": false, "package": ...}`` (the Fedora package that provides it; the
  ``probe-tools`` stack lists them), never as a failure.

Every probe run gets ``FEXSTACK_GPU_MODE=<mode>`` in the guest environment, so the guest
side can tell which ``--gpu-mode`` it was started with.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fexstack import __version__, jsonio
from fexstack.errors import ConfigError
from runner import capture, evidence
from runner.evidence import Outcome
from runner.launch import RunResult, run_app
from runner.options import RunOptions
from runner.profile import Profile

PROBES = ("display", "gpu")
PROBE_NAME = "probe.json"
PROBE_SCHEMA = "probe"
MARK = "FEXSTACK-PROBE"
GUEST_SHELL = "/bin/bash"
GPU_MODE_ENV = "FEXSTACK_GPU_MODE"
DEFAULT_TIMEOUT = 60.0
MUVM_GUEST_DISPLAY = ":1"  # what muvm's X11 bridge sets in the guest

DISPLAY_VARS = (
    "DISPLAY", "XAUTHORITY", "XDG_SESSION_TYPE", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "HOME",
)  # fmt: skip
GPU_VARS = (
    GPU_MODE_ENV, "MESA_LOADER_DRIVER_OVERRIDE", "LIBGL_ALWAYS_SOFTWARE", "LIBGL_DRIVERS_PATH",
    "GALLIUM_DRIVER", "VK_ICD_FILENAMES", "LD_LIBRARY_PATH",
)  # fmt: skip


@dataclass(frozen=True)
class GpuTool:
    name: str
    args: tuple[str, ...]
    package: str  # the Fedora package that provides it


GPU_TOOLS = (
    GpuTool("glxinfo", ("-B",), "glx-utils"),
    GpuTool("eglinfo", ("-B",), "egl-utils"),
    GpuTool("vulkaninfo", ("--summary",), "vulkan-tools"),
)

OUTPUT_TAIL = 60  # lines of a tool's output kept in probe.json


# --- the guest side --------------------------------------------------------------------


def _env_loop(names: Sequence[str]) -> str:
    return (
        f"for v in {' '.join(names)}; do "
        'if [ -n "${!v+x}" ]; then printf \'%s env %s=%s\\n\' "$m" "$v" "${!v}"; '
        'else printf \'%s unset %s\\n\' "$m" "$v"; fi; done; '
    )


def display_script() -> str:
    """The display probe: bash builtins only (printf, test, parameter expansion)."""
    return (
        f"m={MARK}; "
        + _env_loop(DISPLAY_VARS)
        + 'if [ -n "${DISPLAY-}" ]; then n=${DISPLAY#*:}; n=${n%%.*}; s=/tmp/.X11-unix/X$n; '
        'if [ -S "$s" ]; then printf \'%s x11-socket %s present\\n\' "$m" "$s"; '
        'else printf \'%s x11-socket %s absent\\n\' "$m" "$s"; fi; fi; '
        'if [ -n "${XAUTHORITY-}" ]; then if [ -r "$XAUTHORITY" ]; then '
        "printf '%s xauthority readable\\n' \"$m\"; "
        "else printf '%s xauthority unreadable\\n' \"$m\"; fi; fi; "
        'if [ -n "${WAYLAND_DISPLAY-}" ]; then w=$WAYLAND_DISPLAY; '
        "case $w in /*) ;; *) w=${XDG_RUNTIME_DIR-}/$w;; esac; "
        'if [ -S "$w" ]; then printf \'%s wayland-socket %s present\\n\' "$m" "$w"; '
        'else printf \'%s wayland-socket %s absent\\n\' "$m" "$w"; fi; fi; '
        "printf '%s done\\n' \"$m\""
    )


def gpu_script() -> str:
    """The GPU probe: each tool run when the guest has it, its absence said otherwise."""
    tools = "; ".join(f"t {tool.name} {' '.join(tool.args)}" for tool in GPU_TOOLS)
    return (
        f"m={MARK}; "
        + _env_loop(GPU_VARS)
        + 'for d in /dev/dri/*; do [ -e "$d" ] && printf \'%s dri %s\\n\' "$m" "$d"; done; '
        't() { n=$1; shift; p=$(type -P "$n"); '
        'if [ -z "$p" ]; then printf \'%s tool %s absent\\n\' "$m" "$n"; return 0; fi; '
        'printf \'%s tool %s present %s\\n\' "$m" "$n" "$p"; '
        'printf \'%s begin %s\\n\' "$m" "$n"; '
        '"$p" "$@" </dev/null 2>&1; c=$?; '
        'printf \'\\n%s end %s %d\\n\' "$m" "$n" "$c"; }; '
        f"{tools}; "
        "printf '%s done\\n' \"$m\""
    )


def guest_command(kind: str) -> list[str]:
    """The guest argv of a probe (absolute, as muvm needs)."""
    if kind == "display":
        return [GUEST_SHELL, "-c", display_script()]
    if kind == "gpu":
        return [GUEST_SHELL, "-c", gpu_script()]
    raise ConfigError(f"unknown probe {kind!r}", f"use one of: {', '.join(PROBES)}")


# --- parsing ---------------------------------------------------------------------------


def marked_lines(text: str) -> list[str]:
    """The probe's own lines (``MARK ...``) of the output, in order, marker stripped."""
    prefix = MARK + " "
    return [line[len(prefix) :].rstrip() for line in text.splitlines() if line.startswith(prefix)]


def _env(lines: Sequence[str], names: Sequence[str]) -> dict[str, str | None]:
    env: dict[str, str | None] = dict.fromkeys(names, None)
    for line in lines:
        if line.startswith("env "):
            key, _, value = line[4:].partition("=")
            env[key] = value
    return env


def _socket(lines: Sequence[str], word: str) -> dict[str, Any] | None:
    for line in lines:
        parts = line.split(" ")
        if parts[0] == word and len(parts) >= 3:
            return {"path": " ".join(parts[1:-1]), "present": parts[-1] == "present"}
    return None


def parse_display(text: str) -> dict[str, Any] | None:
    """The guest's display facts from the probe's output, or None if it did not finish."""
    lines = marked_lines(text)
    if "done" not in lines:
        return None
    xauth = next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("xauthority ")), None)
    return {
        "env": _env(lines, DISPLAY_VARS),
        "x11_socket": _socket(lines, "x11-socket"),
        "wayland_socket": _socket(lines, "wayland-socket"),
        "xauthority_readable": None if xauth is None else xauth == "readable",
    }


_RENDERERS = {
    "glxinfo": (re.compile(r"^\s*OpenGL renderer string:\s*(.+)$"),),
    "eglinfo": (
        re.compile(r"^\s*OpenGL(?: core| compatibility| ES)? profile renderer:\s*(.+)$"),
        re.compile(r"^\s*OpenGL renderer string:\s*(.+)$"),
    ),
    "vulkaninfo": (re.compile(r"^\s*deviceName\s*=\s*(.+)$"),),
}
_EXTRA = {
    "glxinfo": {
        "vendor": re.compile(r"^\s*OpenGL vendor string:\s*(.+)$"),
        "version": re.compile(r"^\s*OpenGL (?:core profile )?version string:\s*(.+)$"),
        "direct_rendering": re.compile(r"^\s*direct rendering:\s*(\S+)"),
    },
    "eglinfo": {"vendor": re.compile(r"^\s*EGL vendor string:\s*(.+)$")},
    "vulkaninfo": {
        "driver": re.compile(r"^\s*driverName\s*=\s*(.+)$"),
        "device_type": re.compile(r"^\s*deviceType\s*=\s*(.+)$"),
    },
}


def tool_facts(name: str, output: Sequence[str]) -> dict[str, Any]:
    """Renderer and a few more facts from one tool's output (the first match of each)."""
    facts: dict[str, Any] = {"renderer": None}
    for pattern in _RENDERERS.get(name, ()):
        for line in output:
            if m := pattern.match(line):
                facts["renderer"] = m.group(1).strip()
                break
        if facts["renderer"] is not None:
            break
    for key, pattern in _EXTRA.get(name, {}).items():
        facts[key] = next((m.group(1).strip() for ln in output if (m := pattern.match(ln))), None)
    return facts


def parse_gpu(text: str) -> dict[str, Any] | None:
    """The guest's GPU facts from the probe's output, or None if it did not finish."""
    raw = text.splitlines()
    lines = marked_lines(text)
    if "done" not in lines:
        return None
    packages = {t.name: t.package for t in GPU_TOOLS}
    tools: dict[str, dict[str, Any]] = {}
    prefix = MARK + " "
    for i, line in enumerate(raw):
        if not line.startswith(prefix):
            continue
        words = line[len(prefix) :].rstrip().split(" ")
        if words[0] != "tool" or len(words) < 3:
            continue
        name = words[1]
        if words[2] == "absent":
            tools[name] = {"present": False, "package": packages.get(name)}
            continue
        output: list[str] = []
        status: int | None = None
        begun = False
        for later in raw[i + 1 :]:
            if later.startswith(f"{prefix}begin {name}"):
                begun = True
                continue
            if later.startswith(f"{prefix}end {name} "):
                tail = later.rsplit(" ", 1)[-1].strip()
                status = int(tail) if tail.lstrip("-").isdigit() else None
                break
            if begun:
                output.append(later)
        output = [ln for ln in output if ln.strip()]
        tools[name] = {
            "present": True,
            "package": packages.get(name),
            "path": " ".join(words[3:]) or None,
            "exit_status": status,
            **tool_facts(name, output),
            "output_tail": output[-OUTPUT_TAIL:],
        }
    renderer, source = None, None
    for tool in GPU_TOOLS:
        found = tools.get(tool.name)
        if found and found.get("present") and found.get("renderer"):
            renderer, source = found["renderer"], tool.name
            break
    return {
        "env": _env(lines, GPU_VARS),
        "dri_devices": [ln.split(" ", 1)[1] for ln in lines if ln.startswith("dri ")],
        "tools": tools,
        "renderer": renderer,
        "renderer_source": source,
    }


# --- host facts ------------------------------------------------------------------------


def host_display(backend: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The host's display variables, and what the guest should see because of them."""
    env = os.environ if env is None else env
    host = {k: env.get(k) for k in ("DISPLAY", "XAUTHORITY", "XDG_SESSION_TYPE",
                                     "WAYLAND_DISPLAY")}  # fmt: skip
    notes: list[str] = []
    if backend == "muvm":
        bridge = bool(host["DISPLAY"])
        expected = MUVM_GUEST_DISPLAY if bridge else None
        if bridge:
            notes.append(
                f"host DISPLAY is set: muvm's X11 bridge gives the guest DISPLAY={expected}"
            )
        else:
            notes.append("host DISPLAY is unset: no X11 bridge, GUI apps cannot show")
        if host["WAYLAND_DISPLAY"]:
            notes.append("muvm does not forward WAYLAND_DISPLAY: apps must use X11 (XWayland)")
    else:
        bridge = False
        expected = host["DISPLAY"] or None
        notes.append("native backend: no X11 bridge, the guest uses the host's DISPLAY as is")
    return {
        "env": host,
        "x11_bridge": bridge,
        "expected_guest_display": expected,
        "wayland_forwarded": False,
        "notes": notes,
    }


def host_gpu() -> dict[str, Any]:
    dri = Path("/dev/dri")
    devices = sorted(str(p) for p in dri.iterdir()) if dri.is_dir() else []
    return {"dri_devices": devices}


# --- running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    run: RunResult
    probe: dict[str, Any]
    path: Path  # probe.json


def probe_profile(profile: Profile, kind: str, gpu_mode: str | None = None) -> Profile:
    """``profile`` made into a probe's: named probe-<kind>, no AppImage, the mode in env."""
    mode = gpu_mode or profile.gpu_mode
    env = dict(profile.env)
    env[GPU_MODE_ENV] = mode
    return replace(
        profile.with_overrides(gpu_mode=mode),
        app=f"probe-{kind}",
        appimage=None,
        env=MappingProxyType(dict(sorted(env.items()))),
    )


def probe_document(
    kind: str, run: RunResult, profile: Profile, context: str | None
) -> dict[str, Any]:
    """probe.json of a finished probe run (its guest part None when the run failed early)."""
    report = evidence.Evidence(run.evidence_dir).read_report()
    text = capture.clean((run.evidence_dir / evidence.LOG_NAME).read_bytes())
    doc: dict[str, Any] = {
        "format": 1,
        "fexstack_version": __version__,
        "probe": kind,
        "context": context,
        "backend": report["backend"],
        "gpu_mode": profile.gpu_mode,
        "outcome": run.outcome,
        "reason": run.reason,
        "report": evidence.REPORT_NAME,
    }
    if kind == "display":
        guest = parse_display(text)
        host = host_display(profile.backend)
        if guest is not None:
            seen = guest["env"].get("DISPLAY")
            expected = host["expected_guest_display"]
            host["guest_display_as_expected"] = seen == expected
            if guest["env"].get("WAYLAND_DISPLAY") and profile.backend == "muvm":
                host["notes"].append("the guest has WAYLAND_DISPLAY although muvm drops it")
        doc["guest"] = guest
        doc["host"] = host
    else:
        guest = parse_gpu(text)
        doc["guest"] = guest
        doc["host"] = host_gpu()
        doc["renderer"] = guest["renderer"] if guest is not None else None
        missing = []
        if guest is not None:
            missing = [
                f"{name} ({info['package']})"
                for name, info in guest["tools"].items()
                if not info["present"]
            ]
        doc["missing_tools"] = missing
    if doc["guest"] is None and run.outcome == Outcome.PASS:
        # the command exited 0 but its output is incomplete: not a trustworthy probe
        doc["outcome"] = Outcome.FAIL
        doc["reason"] = "the probe's output is incomplete (no end marker in run.log)"
    return doc


def run_probe(
    kind: str, profile: Profile, options: RunOptions, *, context: str | None = None
) -> ProbeResult:
    """Run the ``kind`` probe in ``profile``'s context and write probe.json to its evidence.

    ``options`` as for any run (its ``command`` is the probe's; without a timeout there
    or in the profile, DEFAULT_TIMEOUT). ``context`` names what the probe ran on (a stack
    name, "bare:<stack>") for the record.
    """
    profile = probe_profile(profile.with_overrides(backend=options.backend), kind,
                            options.gpu_mode)  # fmt: skip
    timeout = options.timeout_seconds
    if timeout is None and profile.timeout_seconds is None:
        timeout = DEFAULT_TIMEOUT
    stream = options.stream
    run = run_app(
        profile, replace(options, command=tuple(guest_command(kind)), timeout_seconds=timeout)
    )
    doc = probe_document(kind, run, profile, context)
    path = run.evidence_dir / PROBE_NAME
    jsonio.write(path, doc, PROBE_SCHEMA)
    out = stream or sys.stdout
    out.write(summary(doc) + "\n")
    return ProbeResult(run, doc, path)


def summary(doc: Mapping[str, Any]) -> str:
    """One line about a probe's result."""
    guest = doc.get("guest")
    if guest is None:
        return f"probe:{doc['probe']}: {doc['outcome']}: {doc['reason']}"
    if doc["probe"] == "display":
        env = guest["env"]
        return (
            f"probe:display: guest DISPLAY={env.get('DISPLAY')} "
            f"WAYLAND_DISPLAY={env.get('WAYLAND_DISPLAY')} "
            f"XDG_SESSION_TYPE={env.get('XDG_SESSION_TYPE')} "
            f"(expected DISPLAY={doc['host']['expected_guest_display']})"
        )
    missing = ", ".join(doc.get("missing_tools") or []) or "none"
    return f"probe:gpu: renderer {doc.get('renderer') or 'unknown'}; missing tools: {missing}"
