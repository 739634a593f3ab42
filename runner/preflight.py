"""Checks before a run (and ``doit doctor``): is everything there and configured right?

Each check has a name, a status (ok, warn, fail), a detail and a hint. A failing check
stops the run before it starts: the outcome is INFRA and the evidence says why. What is
checked: muvm is there and runs; every image exists and is an EROFS image the guest can
mount (4096-byte blocks); deps overlays match their manifests; no muvm VM is running for
the user (a new call would be handed to it and ignore every ``-f``), else the run gets its
own XDG_RUNTIME_DIR; the FEX binary fits the muvm version; no RootFS override in
``~/.fex-emu/Config.json`` or FEX_ROOTFS; the display variables. The native backend needs
root and ``unshare``/``mount`` instead of muvm and FEX.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fexstack import command, jsonio
from fexstack.digest import sha256_file
from fexstack.errors import FexstackError, ImageError, ToolError
from overlays.manifest import read_manifest
from overlays.validator import validate_image
from runner import hostinfo
from runner.muvm import MAX_IMAGES
from runner.profile import GPU_ABSENT_REASON, Layer, Profile, build_profile

OK, WARN, FAIL = "ok", "warn", "fail"
DOCTOR_SCHEMA = "doctor"
MUVM_FEXINTERPRETER_VERSION = (0, 6, 0)  # muvm 0.6.0 looks for FEXInterpreter, later ones FEX


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "hint": self.hint}


@dataclass(frozen=True)
class Preflight:
    """The checks' results, and what the run must do about a running muvm VM."""

    backend: str
    checks: tuple[Check, ...]
    private_runtime_dir: bool = False  # give the run its own XDG_RUNTIME_DIR
    hashes: Mapping[Path, str] = field(default_factory=dict)  # image path -> sha256

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == FAIL)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "ok": self.ok,
            "backend": self.backend,
            "checks": [c.to_json() for c in self.checks],
        }


def _version_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return None


def _vm_running(runtime_dir: Path, env: Mapping[str, str]) -> str | None:
    """Why a muvm VM looks like it is running for this user, or None."""
    if env.get("MUVM_SERVER_PORT"):
        return "MUVM_SERVER_PORT is set (this shell runs inside a muvm VM)"
    lock = runtime_dir / "muvm.lock"
    if lock.exists():
        try:
            with open(lock, "rb") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return f"{lock} is locked by a running muvm"
                fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:
            return f"{lock} cannot be opened ({exc.strerror}); assuming a running muvm"
    return None


def check_muvm(profile: Profile, host: hostinfo.HostInfo) -> list[Check]:
    out: list[Check] = []
    muvm = profile.muvm
    if muvm is None or not muvm.is_file() or not os.access(muvm, os.X_OK):
        where = str(muvm) if muvm is not None else "muvm (not on PATH)"
        return [
            Check(
                "muvm",
                FAIL,
                f"{where} is not an executable file",
                "install muvm (dnf install muvm) or point FEXSTACK_MUVM at it",
            )
        ]
    try:
        proc = command.run([muvm, "--help"], check=False, timeout=15)
        runs = proc.returncode == 0
        why = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()[-200:]
    except ToolError as exc:
        runs, why = False, exc.message
    if runs:
        out.append(Check("muvm", OK, f"{muvm} (version {host.muvm_version})"))
    else:
        out.append(Check("muvm", FAIL, f"{muvm} --help fails: {why}", "reinstall muvm"))
    if os.geteuid() == 0:
        out.append(
            Check(
                "muvm-user",
                WARN,
                "running as root: muvm refuses to run as root",
                "run fexstack as your own user",
            )
        )
    return out


def check_fex(profile: Profile, host: hostinfo.HostInfo) -> Check:
    names = {Path(p).name for p in host.fex_binaries}
    found = ", ".join(host.fex_binaries) or "none"
    version = _version_tuple(host.muvm_version)
    if not names:
        return Check(
            "fex-binary",
            FAIL,
            "neither FEX nor FEXInterpreter is installed",
            "install fex-emu (dnf install fex-emu)",
        )
    if version is None:
        return Check(
            "fex-binary",
            WARN,
            f"found {found}; the muvm version is unknown, so whether it looks for FEX or "
            "FEXInterpreter cannot be told",
            "muvm 0.6.0 needs FEXInterpreter, later versions need FEX",
        )
    wanted = "FEXInterpreter" if version <= MUVM_FEXINTERPRETER_VERSION else "FEX"
    if wanted in names:
        return Check("fex-binary", OK, f"muvm {host.muvm_version} uses {wanted}: found {found}")
    return Check(
        "fex-binary",
        FAIL,
        f"muvm {host.muvm_version} looks for {wanted}, but only {found} is installed",
        "install matching muvm and fex-emu versions (muvm 0.6.0 with fex-emu before 2608 "
        "(FEXInterpreter); muvm after 0.6.0 with fex-emu 2608 or later (FEX))",
    )


def check_rootfs_override(env: Mapping[str, str], home: Path) -> Check:
    found: list[str] = []
    if env.get("FEX_ROOTFS"):
        found.append(f"FEX_ROOTFS={env['FEX_ROOTFS']} in the environment")
    config = home / ".fex-emu" / "Config.json"
    if config.is_file():
        try:
            doc = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            found.append(f"{config} is unreadable ({exc})")
        else:
            conf = doc.get("Config") if isinstance(doc, dict) else None
            if isinstance(conf, dict) and conf.get("RootFS"):
                found.append(f'{config} sets "RootFS": {conf["RootFS"]!r}')
    if found:
        return Check(
            "fex-rootfs-override",
            WARN,
            "; ".join(found) + ": it overrides the RootFS muvm configures from the -f images",
            'remove the "RootFS" key from ~/.fex-emu/Config.json and unset FEX_ROOTFS',
        )
    return Check("fex-rootfs-override", OK, "no RootFS override (Config.json, FEX_ROOTFS)")


def check_display(env: Mapping[str, str], backend: str = "muvm") -> Check:
    display = env.get("DISPLAY")
    wayland = env.get("WAYLAND_DISPLAY")
    if backend == "native" and (display or wayland):
        shown = ", ".join(f"{k}={env[k]}" for k in ("DISPLAY", "WAYLAND_DISPLAY") if env.get(k))
        return Check("display", OK, f"{shown}: the app uses the session's display directly")
    if display:
        detail = f"DISPLAY={display}: the X11 bridge is used (the guest sees DISPLAY=:1)"
        if wayland:
            detail += f"; WAYLAND_DISPLAY={wayland} is not forwarded to the guest"
        return Check("display", OK, detail)
    if wayland:
        return Check(
            "display",
            WARN,
            f"only WAYLAND_DISPLAY={wayland} is set, and muvm does not forward it",
            "enable XWayland so DISPLAY is set; muvm bridges X11 only",
        )
    return Check(
        "display", WARN, "neither DISPLAY nor WAYLAND_DISPLAY is set", "GUI apps will not show"
    )


def check_host_path(path: str) -> Check:
    """A path the base declares in host_provides must exist on the host."""
    if os.path.lexists(path):
        return Check(f"host:{path}", OK, "provided by the host beneath the layers")
    return Check(
        f"host:{path}", FAIL, f"the base declares host_provides {path}, the host has no such path",
        "install the host package that provides it, or drop it from host_provides in the base",
    )


def check_runtime_dir(env: Mapping[str, str], private_runtime: bool) -> tuple[Check, bool]:
    """The running-VM check; True when the run needs its own XDG_RUNTIME_DIR."""
    raw = env.get("XDG_RUNTIME_DIR")
    if not raw:
        if private_runtime:
            return Check(
                "muvm-vm", WARN, "XDG_RUNTIME_DIR is unset: the run gets its own", None
            ), True
        return Check(
            "muvm-vm",
            FAIL,
            "XDG_RUNTIME_DIR is unset (muvm needs it)",
            "log in through a session that sets it, or allow a private runtime directory",
        ), False
    why = _vm_running(Path(raw), env)
    if why is None:
        return Check("muvm-vm", OK, f"no muvm VM running ({raw})"), False
    if private_runtime:
        return Check(
            "muvm-vm",
            WARN,
            f"{why}: it would ignore every -f, so this run gets its own XDG_RUNTIME_DIR "
            "and boots a fresh VM",
            None,
        ), True
    return Check(
        "muvm-vm",
        FAIL,
        f"{why}: a new muvm call would be handed to it and silently ignore every -f image",
        "close the apps running in muvm (or pkill the muvm VM), or run with a private "
        "XDG_RUNTIME_DIR (the default)",
    ), False


# What to do about a missing image, by its role: fexstack builds only compat and deps.
MISSING_IMAGE_HINTS = {
    "base": "install Fedora's FEX RootFS (dnf install fex-emu-rootfs-fedora), or point "
    "[base].image of the stack's base at an EROFS image",
    "gpu": "an explicit gpu overlay must exist: drop it (on Fedora 43+ stock Mesa carries the "
    "x86_64 asahi driver), or install it (dnf install mesa-fex-emu-overlay-x86_64)",
    "compat": "build it: doit compat:<base> (doit overlay:<name> builds it too)",
    "deps": "build it: doit overlay:{name}",
}


def _digest_for(role: str) -> Callable[[Path], str]:
    """How an image's sha256 is taken: deps and compat images afresh (they are checked
    against their manifests); the system base and gpu overlays, which are only recorded,
    from the memo the check step keeps by file identity (no gigabyte hashed per run)."""
    if role in ("base", "gpu"):
        from invariants.view import sha256_file as remembered

        return remembered
    return sha256_file


def _image_check(layer: Layer, backend: str, hashes: dict[Path, str]) -> Check:
    name = f"image:{layer.role}:{layer.name}"
    path = layer.path
    if path.is_dir():
        if backend == "native":
            return Check(name, OK, f"{path}: a directory (native backend only)")
        return Check(
            name,
            FAIL,
            f"{path} is a directory; muvm needs EROFS image files",
            "build the image (doit overlay:<name>) or use the native backend",
        )
    try:
        checked = validate_image(path, sha256_of=_digest_for(layer.role))
    except FexstackError as exc:
        hint = MISSING_IMAGE_HINTS.get(layer.role) if not path.exists() else None
        return Check(name, FAIL, exc.message, (hint or exc.hint or "").format(name=layer.name))
    hashes[path] = checked.sha256
    return Check(
        name, OK, f"{path}: EROFS, {checked.block_size}-byte blocks, sha256 {checked.sha256[:12]}"
    )


def check_absent_gpu(path: Path) -> Check:
    """A gpu overlay of the base that is not installed: skipped, a warning (never INFRA)."""
    return Check(
        f"image:gpu:{path.stem}",
        WARN,
        f"{path}: skipped, {GPU_ABSENT_REASON}",
        "nothing to do on Fedora 43 and later; on older releases install it "
        "(dnf install mesa-fex-emu-overlay-x86_64)",
    )


def manifest_sha256(manifest: Path) -> str:
    """``image.sha256`` recorded in an overlay manifest (:class:`ImageError` naming the
    file when it is missing or not a manifest)."""
    return read_manifest(manifest).image.sha256


def check_manifest(layer: Layer, hashes: dict[Path, str]) -> Check:
    name = f"manifest:{layer.name}"
    if layer.manifest is None:
        return Check(
            name, FAIL, f"{layer.path}: no manifest given", "build it with doit overlay:<name>"
        )
    try:
        recorded = manifest_sha256(layer.manifest)
    except ImageError as exc:
        missing = isinstance(exc.__cause__, FileNotFoundError)
        return Check(
            name,
            FAIL,
            f"{layer.manifest} does not exist" if missing else exc.message,
            f"rebuild the overlay: doit overlay:{layer.name}",
        )
    actual = hashes.get(layer.path)
    if actual is None:
        if not layer.path.is_file():
            return Check(name, FAIL, f"{layer.path} does not exist", f"doit overlay:{layer.name}")
        actual = hashes[layer.path] = sha256_file(layer.path)
    if actual != recorded:
        return Check(
            name,
            FAIL,
            f"{layer.path} has sha256 {actual}, its manifest records {recorded}",
            f"the image changed after it was built: rebuild with doit overlay:{layer.name}",
        )
    return Check(name, OK, f"{layer.path} matches {layer.manifest.name}")


def check_native_tools() -> list[Check]:
    out: list[Check] = []
    if os.geteuid() != 0:
        out.append(
            Check(
                "native-root",
                FAIL,
                "the native backend mounts images and chroots: it needs root",
                "run through ./devroot (root in a private namespace) or as root",
            )
        )
    else:
        out.append(Check("native-root", OK, "running as root"))
    missing = [tool for tool in ("unshare", "mount") if command.which(tool) is None]
    if missing:
        out.append(
            Check(
                "native-tools",
                FAIL,
                f"missing: {', '.join(missing)}",
                "install util-linux and mount (or run through ./devroot)",
            )
        )
    else:
        out.append(Check("native-tools", OK, "unshare and mount are installed"))
    return out


def run_checks(
    profile: Profile,
    *,
    host: hostinfo.HostInfo | None = None,
    private_runtime: bool = True,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    need_appimage: bool = True,
) -> Preflight:
    """Run every check that applies to ``profile``'s backend."""
    env = os.environ if env is None else env
    home = home or Path(env.get("HOME") or Path.home())
    host = host or hostinfo.collect(profile.muvm if profile.backend == "muvm" else None)
    checks: list[Check] = []
    hashes: dict[Path, str] = {}
    private = False
    if profile.backend == "muvm":
        checks += check_muvm(profile, host)
        vm_check, private = check_runtime_dir(env, private_runtime)
        checks.append(vm_check)
        checks.append(check_fex(profile, host))
        checks.append(check_rootfs_override(env, home))
    else:
        checks += check_native_tools()
    layers = profile.layers()
    if len(layers) > MAX_IMAGES:
        checks.append(
            Check(
                "image-count",
                FAIL,
                f"{len(layers)} images; muvm misorders more than {MAX_IMAGES}",
                "merge deps overlays into fewer stacks",
            )
        )
    else:
        checks.append(Check("image-count", OK, f"{len(layers)} images"))
    for layer in layers:
        checks.append(_image_check(layer, profile.backend, hashes))
    checks += [check_absent_gpu(path) for path in profile.gpu_absent]
    for layer in layers:
        if layer.role == "deps":
            checks.append(check_manifest(layer, hashes))
    if need_appimage and profile.appimage is not None:
        if profile.appimage.is_file():
            checks.append(Check("appimage", OK, str(profile.appimage)))
        else:
            checks.append(
                Check(
                    "appimage",
                    FAIL,
                    f"{profile.appimage} does not exist",
                    "fix [app].appimage in the stack",
                )
            )
    checks.append(check_display(env, profile.backend))
    if profile.backend == "native":
        checks += [check_host_path(p) for p in profile.host_provides]
    return Preflight(profile.backend, tuple(checks), private, hashes)


def format_table(checks: tuple[Check, ...] | list[Check]) -> str:
    """The checks as an aligned text table (hints on their own lines)."""
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL"]
    for c in checks:
        lines.append(f"{c.status:<6}  {c.name:<{width}}  {c.detail}")
        if c.hint and c.status != OK:
            lines.append(f"{'':<6}  {'':<{width}}  hint: {c.hint}")
    return "\n".join(lines) + "\n"


def doctor(
    profile: Profile | None = None,
    *,
    json_output: bool = False,
    private_runtime: bool = True,
    stream: TextIO | None = None,
) -> bool:
    """``doit doctor``: print the checks (a table, or JSON per doctor.schema.json).

    Without a profile it checks the system defaults (FEX RootFS, Mesa overlays, muvm on
    PATH). True when nothing failed.
    """
    profile = profile or build_profile("doctor")
    result = run_checks(profile, private_runtime=private_runtime, need_appimage=False)
    out = stream or sys.stdout
    if json_output:
        doc = result.to_json()
        jsonio.validate(doc, DOCTOR_SCHEMA)
        out.write(jsonio.dumps(doc))
    else:
        out.write(format_table(result.checks))
        out.write("doctor: " + ("ok\n" if result.ok else f"{len(result.failed)} failing\n"))
    with contextlib.suppress(OSError):
        out.flush()
    return result.ok
