"""Facts about the host a run happened on: kernel, arch, CPU, page size, muvm and FEX.

muvm has no ``--version`` option (its parser rejects it like any unknown option), so its
version comes from ``muvm --version`` only when that works, else from the package that
owns the binary (``rpm -qf``), else it is ``unknown``.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import command
from fexstack.errors import ToolError

FEX_BINARIES = ("FEX", "FEXInterpreter")
FEX_DIRS = (Path("/usr/bin"),)
CPUINFO = Path("/proc/cpuinfo")
UNKNOWN = "unknown"

_VERSION = re.compile(r"\b(\d+(?:\.\d+)+)\b")


@dataclass(frozen=True)
class CpuFacts:
    model: str
    features: tuple[str, ...]  # aarch64 "Features", x86 "flags"
    sve: bool
    sve2: bool
    avx512: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "features": list(self.features),
            "sve": self.sve,
            "sve2": self.sve2,
            "avx512": list(self.avx512),
        }


@dataclass(frozen=True)
class HostInfo:
    kernel: str
    arch: str
    page_size: int
    cpu: CpuFacts
    muvm: str | None  # the binary's path
    muvm_version: str
    fex_binaries: tuple[str, ...]  # absolute paths of FEX / FEXInterpreter found
    fex_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "arch": self.arch,
            "page_size": self.page_size,
            "cpu": self.cpu.to_json(),
            "muvm": self.muvm,
            "muvm_version": self.muvm_version,
            "fex_binaries": list(self.fex_binaries),
            "fex_version": self.fex_version,
        }


def cpu_facts(text: str) -> CpuFacts:
    """CPU model and features from ``/proc/cpuinfo`` text (first CPU listed)."""
    model = UNKNOWN
    features: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key in ("model name", "cpu model") and model == UNKNOWN and value:
            model = value
        elif key in ("features", "flags") and not features:
            features = value.split()
        elif key == "cpu part" and model == UNKNOWN and value:
            model = f"cpu part {value}"
    feats = tuple(sorted(set(features)))
    return CpuFacts(
        model=model,
        features=feats,
        sve="sve" in feats,
        sve2="sve2" in feats,
        avx512=tuple(f for f in feats if f.startswith("avx512")),
    )


def read_cpu_facts(path: Path = CPUINFO) -> CpuFacts:
    try:
        return cpu_facts(path.read_text(errors="replace"))
    except OSError:
        return cpu_facts("")


def _first_version(text: str) -> str | None:
    m = _VERSION.search(text)
    return m.group(1) if m else None


def muvm_version(muvm: Path | None) -> str:
    """muvm's version: ``--version`` if it answers, else its package's, else unknown."""
    if muvm is None or not muvm.exists():
        return UNKNOWN
    proc: subprocess.CompletedProcess[bytes] | None
    try:
        proc = command.run([muvm, "--version"], check=False, timeout=10)
    except ToolError:
        proc = None
    if proc is not None and proc.returncode == 0:
        found = _first_version((proc.stdout or b"").decode("utf-8", "replace"))
        if found:
            return found
    if command.which("rpm") is not None:
        rpm: subprocess.CompletedProcess[bytes] | None
        try:
            rpm = command.run(
                ["rpm", "-qf", "--queryformat", "%{VERSION}\n", muvm], check=False, timeout=10
            )
        except ToolError:
            rpm = None
        if rpm is not None and rpm.returncode == 0:
            found = _first_version((rpm.stdout or b"").decode("utf-8", "replace"))
            if found:
                return found
    return UNKNOWN


def fex_binaries() -> tuple[Path, ...]:
    """``FEX`` and ``FEXInterpreter`` found on PATH or in /usr/bin (each path once)."""
    found: list[Path] = []
    for name in FEX_BINARIES:
        candidates = [command.which(name)] + [d / name for d in FEX_DIRS]
        for cand in candidates:
            if cand is not None and cand.is_file() and os.access(cand, os.X_OK):
                if cand not in found:
                    found.append(cand)
                break
    return tuple(found)


def fex_version(binaries: tuple[Path, ...]) -> str:
    for binary in binaries:
        try:
            proc = command.run([binary, "--version"], check=False, timeout=10)
        except ToolError:
            continue
        text = ((proc.stdout or b"") + (proc.stderr or b"")).decode("utf-8", "replace").strip()
        if proc.returncode == 0 and text:
            return text.splitlines()[0]
    return UNKNOWN


def collect(muvm: Path | None = None) -> HostInfo:
    """The facts of this host (``muvm``: the binary the run will use, if any)."""
    uname = os.uname()
    fex = fex_binaries()
    return HostInfo(
        kernel=f"{uname.sysname} {uname.release} {uname.version}",
        arch=platform.machine(),
        page_size=os.sysconf("SC_PAGE_SIZE"),
        cpu=read_cpu_facts(),
        muvm=str(muvm) if muvm is not None else None,
        muvm_version=muvm_version(muvm),
        fex_binaries=tuple(str(p) for p in fex),
        fex_version=fex_version(fex),
    )
