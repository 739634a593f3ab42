"""The runtime trace of an audited run, and what it says the app missed.

``doit suggest:<app>`` (:mod:`runner.suggest`) runs the app with :data:`TRACE_ENV`: the
dynamic loader's own tracing (``LD_DEBUG=libs,files``: every library a process asks
for, by DT_NEEDED or by dlopen, and every one it mapped) and GStreamer's pipeline parser
at its error level (it logs each element it cannot make, where gst-launch names only
the first). Both write to the app's stderr, which the run keeps whole in run.log: the
raw trace stays in the evidence. The same variables reach the app on either backend
(the native backend's spec environment, muvm's ``-e``).

:func:`loader_misses` reads the loader's lines; :func:`named_by_errors` matches the app's
own error messages against :data:`ERROR_PATTERNS`.

Neither says which data files or programs the app looked for and did not find
(``/usr/share/mime/mime.cache``, ``/usr/bin/bwrap``): on the native backend fexstack
runs, as root outside the namespace, ``strace -ff`` around the namespace side
(:func:`strace_argv`), one file per process in the evidence's strace/ folder;
:func:`syscall_misses` reads the failed ``open``/``openat``/``execve`` of the app's
processes only (the one that exec'd the app after the exec, and every process it and
its descendants started), not of fexstack's own namespace setup. Under muvm the
loader's trace is all there is (the syscalls are FEX's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

TRACE_ENV: Mapping[str, str] = MappingProxyType({
    "LD_DEBUG": "libs,files",
    "GST_DEBUG": "GST_PIPELINE:1",
    "GST_DEBUG_NO_COLOR": "1",
})  # fmt: skip

STRACE_DIR = "strace"  # in the evidence: trace.<pid>, one per process
STRACE_SYSCALLS = "open,openat,openat2,execve,execveat,clone,clone3,fork,vfork"
# Where a missing file says nothing about packages: the kernel's, the run's own, the user's.
NOT_PACKAGED = ("/proc/", "/sys/", "/dev/", "/tmp/", "/run/", "/home/", "/root/", "/var/")

SONAME = "soname"  # a library asked for by name (the loader searched its paths)
FILE = "file"  # an absolute path
GST_ELEMENT = "gst-element"  # a GStreamer element factory name

# "<pid>:\tfile=<name> [<ns>];  needed by <object> [<ns>]" (DT_NEEDED), "... dynamically
# loaded by <object> [<ns>]" (dlopen), then "file=<name> [<ns>];  generating link map"
# once the loader found and maps it.
_LD_LINE = re.compile(r"^\s*(?P<pid>\d+):\s+file=(?P<name>\S+) \[(?P<ns>\d+)\];\s+(?P<what>.*)$")
_ASKED = re.compile(r"^(?P<how>needed|dynamically loaded) by (?P<by>\S+)")


@dataclass(frozen=True)
class Missed:
    """Something the run needed and did not find, and the evidence line that says so."""

    kind: str  # SONAME, FILE or GST_ELEMENT
    name: str
    reason: str  # short, for a seed line: who asked and how
    line: str  # the raw line of run.log


def loader_misses(text: str) -> list[Missed]:
    """Libraries a process asked the loader for (needed or dlopen) that it never mapped."""
    asked: dict[tuple[str, str], Missed] = {}
    mapped: set[tuple[str, str]] = set()
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        match = _LD_LINE.match(line)
        if match is None:
            continue
        key = (match["pid"], match["name"])
        what = match["what"].strip()
        if what.startswith("generating link map"):
            mapped.add(key)
            continue
        how = _ASKED.match(what)
        if how is None or key in asked:
            continue
        name = match["name"]
        verb = "needs" if how["how"] == "needed" else "dlopens"
        asked[key] = Missed(
            FILE if name.startswith("/") else SONAME,
            name,
            f"{how['by']} {verb} {name} (loader trace: not found)",
            line.strip(),
        )
    missed: dict[str, Missed] = {}
    for key, item in asked.items():
        if key not in mapped and item.name not in missed:
            missed[item.name] = item
    return list(missed.values())


# The app's own error messages that name what it lacked: (pattern, kind, what it says,
# the name when the message has none: the file it is about, its {group}s filled from the
# match); else the group "name".
# Checked line by line on run.log.
ERROR_PATTERNS: tuple[tuple[re.Pattern[str], str, str, str], ...] = (
    # gst-launch-1.0 and GStreamer's parser (GST_DEBUG=GST_PIPELINE:1 logs each one)
    (re.compile(r'no element "(?P<name>[^"]+)"'), GST_ELEMENT, "GStreamer has no element", ""),
    # GStreamer elements made at run time (decodebin, playbin)
    (re.compile(r"[Mm]issing element[: ]+'?(?P<name>[A-Za-z0-9_-]+)'?"), GST_ELEMENT,
     "GStreamer is missing the element", ""),
    # GLib and GTK without the caches package triggers make (runner/suggest.py CACHE_INPUTS)
    (re.compile(r"No GSettings schemas are installed on the system"), FILE,
     "GLib found no", "/usr/share/glib-2.0/schemas/gschemas.compiled"),
    (re.compile(r"Settings schema '(?P<id>[\w.-]+)' is not installed"), FILE,
     "GLib has no schema", "/usr/share/glib-2.0/schemas/{id}.gschema.xml"),
    # GLib's dummy TLS backend: no GIO module gives TLS (glib-networking's, on Fedora and Debian)
    (re.compile(r"TLS support is not available"), FILE,
     "GLib has no TLS backend: no GIO module", "/usr/lib*/gio/modules/libgio*tls*.so"),
    (re.compile(r"Could not load a pixbuf from icon theme.*Unrecognized image file format"),
     FILE, "gdk-pixbuf could not tell image types: no", "/usr/share/mime/mime.cache"),
    # the loader, for DT_NEEDED of a program
    (re.compile(r"error while loading shared libraries: (?P<name>[^:\s]+): cannot open"),
     SONAME, "the loader could not find", ""),
    # dlerror() text as apps print it (GModule, GTK modules, Qt plugins)
    (re.compile(r"(?P<name>/\S+?\.so[.\d]*): cannot open shared object file"), FILE,
     "dlopen failed: no such file", ""),
    (re.compile(r"(?<![/\w.-])(?P<name>lib[\w.+-]+\.so[.\d]*): cannot open shared object file"),
     SONAME, "dlopen failed: not found", ""),
)


def named_by_errors(text: str) -> list[Missed]:
    """What the app's error messages (:data:`ERROR_PATTERNS`) say it lacked."""
    found: dict[tuple[str, str], Missed] = {}
    for raw in text.splitlines():
        line = raw.rstrip("\r").strip()
        for pattern, kind, says, fixed in ERROR_PATTERNS:
            for match in pattern.finditer(line):
                name = fixed.format(**match.groupdict()) if fixed else match["name"]
                if (kind, name) not in found:
                    found[(kind, name)] = Missed(kind, name, f"{says} {name}", line)
    return list(found.values())


def strace_argv(folder: Path) -> list[str]:
    """The argv prefix that straces a run into ``folder`` (made here), one file a process."""
    folder.mkdir(parents=True, exist_ok=True)
    return ["strace", "-ff", "-qq", "-s", "4096", "-e", f"trace={STRACE_SYSCALLS}",
            "-e", "signal=none", "-o", str(folder / "trace")]  # fmt: skip


_CALL = re.compile(
    r'^(?P<call>\w+)\((?:[^"]*?, )?"(?P<path>[^"]*)".*\) = (?P<ret>-?\d+)(?: (?P<err>E\w+))?'
)
_CHILD = re.compile(r"^(?:clone3?|v?fork)\(.*\) = (?P<pid>\d+)$")


def _app_lines(files: Mapping[int, list[str]], app: str) -> dict[int, list[str]]:
    """The lines of the app's processes: after the exec of ``app``, then every child."""
    exec_of_app = f'execve("{app}", '
    found: dict[int, list[str]] = {}
    for pid, lines in files.items():
        for index, line in enumerate(lines):
            if line.startswith(exec_of_app) and line.rstrip().endswith("= 0"):
                found[pid] = lines[index + 1 :]
                break
    queue = list(found)
    while queue:
        for line in found[queue.pop()]:
            child = _CHILD.match(line.strip())
            if child is not None and int(child["pid"]) in files and int(child["pid"]) not in found:
                found[int(child["pid"])] = files[int(child["pid"])]
                queue.append(int(child["pid"]))
    return found


def syscall_misses(folder: Path, app: str, ignore: Sequence[str] = ()) -> list[Missed]:
    """Absolute paths the app's processes failed to open or exec with ENOENT."""
    files: dict[int, list[str]] = {}
    for one in sorted(folder.glob("trace.*")):
        suffix = one.name.rpartition(".")[2]
        if suffix.isdigit():
            files[int(suffix)] = one.read_text(errors="replace").splitlines()
    missed: dict[str, Missed] = {}
    skip = (*NOT_PACKAGED, *ignore)
    for _pid, lines in sorted(_app_lines(files, app).items()):
        for line in lines:
            match = _CALL.match(line.strip())
            if match is None or match["err"] != "ENOENT":
                continue
            path = match["path"]
            if not path.startswith("/") or path.startswith(skip) or path in missed:
                continue
            verb = "execs" if match["call"].startswith("execve") else "opens"
            missed[path] = Missed(FILE, path, f"the app {verb} {path} (strace: no such file)",
                                  line.strip())  # fmt: skip
    return list(missed.values())
