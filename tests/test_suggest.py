"""The runtime audit: ``doit suggest:<app>`` traces a run and prints the seeds that fix it.

Unit level: the loader's own trace (LD_DEBUG of the real loader, natively and through the
fake muvm's ``-e``) and the app error table. End to end on the real-world corpus: a thin
AppImage of Debian's gst-launch-1.0 on a stack that lacks first libgstreamer (a missing
soname), then the plugin packages (elements the pipeline names); the test pastes the
printed seed lines into the stack each time until ``doit run:`` passes with its frames.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from fexstack import jsonio
from fexstack.errors import LockError
from overlays import provides
from overlays.stack import Stack, load_stack
from runner import muvm as muvm_cli
from runner import suggest, trace
from runner.launch import run_app
from runner.options import RunOptions
from tests.realworld import apps
from tests.realworld import corpus as rw
from tests.realworld.corpus import Corpus
from tests.test_probe import fake_muvm_profile

CHECKOUT = Path(__file__).resolve().parent.parent
ABSENT = "libfexstack-absent.so.3"
# Python's ctypes dlopens a library that exists nowhere: the loader traces the search.
DLOPEN_ABSENT = ["-c", f"import ctypes\ntry:\n    ctypes.CDLL('{ABSENT}')\nexcept OSError as e:\n"
                 "    print('dlopen:', e)\n"]  # fmt: skip


def test_loader_trace_of_the_real_loader_names_a_failed_dlopen() -> None:
    env = {**os.environ, **trace.TRACE_ENV}
    proc = subprocess.run([sys.executable, *DLOPEN_ABSENT], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    text = proc.stdout + proc.stderr
    missed = {m.name: m for m in trace.loader_misses(text)}
    assert ABSENT in missed
    assert missed[ABSENT].kind == trace.SONAME
    assert "dlopens" in missed[ABSENT].reason and sys.executable.split("/")[-1] in text
    # what the loader did find and map is not reported
    assert "libc.so.6" not in missed
    # dlerror's own text, as the app printed it, is in the error table too
    named = {(m.kind, m.name) for m in trace.named_by_errors(text)}
    assert (trace.SONAME, ABSENT) in named


def test_strace_argv_and_what_it_finds_of_the_real_strace(tmp_path: Path) -> None:
    folder = tmp_path / "strace"
    argv = trace.strace_argv(folder)
    assert argv == [
        "strace", "-ff", "-qq", "-s", "4096",
        "-e", "trace=open,openat,openat2,execve,execveat,clone,clone3,fork,vfork",
        "-e", "signal=none", "-o", str(folder / "trace"),
    ]  # fmt: skip
    script = (
        "cat /usr/share/fexstack-absent/data.txt 2>/dev/null; "
        "( /usr/bin/fexstack-absent-tool 2>/dev/null ); "
        "cat /tmp/fexstack-absent-scratch 2>/dev/null; true"
    )
    # a wrapper execs the app, like the namespace side does: its own opens do not count
    wrapper = ["/bin/sh", "-c", 'cat /usr/share/fexstack-wrapper-absent 2>/dev/null; exec "$@"',
               "wrapper", "/bin/bash", "-c", script]  # fmt: skip
    subprocess.run([*argv, *wrapper], check=True)
    assert len(list(folder.glob("trace.*"))) >= 2  # one file a process
    missed = {m.name: m for m in trace.syscall_misses(folder, "/bin/bash")}
    assert "/usr/share/fexstack-absent/data.txt" in missed
    assert "opens" in missed["/usr/share/fexstack-absent/data.txt"].reason
    assert "/usr/bin/fexstack-absent-tool" in missed  # in a child of the app
    assert "execs" in missed["/usr/bin/fexstack-absent-tool"].reason
    assert "/usr/share/fexstack-wrapper-absent" not in missed  # before the app's exec
    assert not [p for p in missed if p.startswith("/tmp/")]  # not a package's path
    assert trace.syscall_misses(folder, "/usr/bin/not-this-app") == []


def test_error_table_names_elements_and_libraries() -> None:
    text = (
        'WARNING: erroneous pipeline: no element "videotestsrc"\r\n'
        "0:00:00.01 123 0x1 ERROR GST_PIPELINE grammar.y:851:priv_gst_parse_yyparse: "
        'no element "pngenc"\n'
        "/usr/bin/app: error while loading shared libraries: libfoo.so.2: cannot open shared "
        "object file: No such file or directory\n"
        "Gtk-Message: Failed to load module: /usr/lib/gtk-3.0/x.so: cannot open shared object "
        "file: No such file or directory\n"
        "(gtk3-widget-factory:12): GLib-GIO-ERROR **: 20:01:02.345: No GSettings schemas are "
        "installed on the system\n"
        "app: TLS support is not available\n"
        "GLib-GIO-ERROR **: Settings schema 'org.gnome.desktop.interface' is not installed\n"
        "all fine here\n"
    )
    found = [(m.kind, m.name) for m in trace.named_by_errors(text)]
    assert found == [
        (trace.GST_ELEMENT, "videotestsrc"),
        (trace.GST_ELEMENT, "pngenc"),
        (trace.SONAME, "libfoo.so.2"),
        (trace.FILE, "/usr/lib/gtk-3.0/x.so"),
        (trace.FILE, "/usr/share/glib-2.0/schemas/gschemas.compiled"),
        (trace.FILE, "/usr/lib*/gio/modules/libgio*tls*.so"),
        (trace.FILE, "/usr/share/glib-2.0/schemas/org.gnome.desktop.interface.gschema.xml"),
    ]


def test_seed_lines_are_toml_one_per_package_with_every_reason() -> None:
    def finding(name: str, packages: tuple[str, ...], note: str = "") -> suggest.Finding:
        return suggest.Finding(trace.GST_ELEMENT, name, "app-error", f'no element "{name}"',
                               "line", "q", packages, note)  # fmt: skip

    lines = suggest.seed_lines([
        finding("videotestsrc", ("gstreamer1.0-plugins-base",)),
        finding("videoconvert", ("gstreamer1.0-plugins-base",)),
        finding("x", ("gst-good", "gst-other")),
        finding("y", ("libc6",), note="libc6 is in the base already"),
        finding("z", ()),
    ])  # fmt: skip
    seeds = tomllib.loads("\n".join(lines))
    assert seeds == {
        "gstreamer1.0-plugins-base": 'no element "videotestsrc"; no element "videoconvert"',
        "gst-good": 'no element "x" (also in gst-other)',
    }


def test_trace_variables_reach_muvm_as_env_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = fake_muvm_profile(tmp_path, monkeypatch, name="traced")
    traced = dataclasses.replace(
        profile, env=MappingProxyType({**profile.env, **trace.TRACE_ENV})
    )
    argv = muvm_cli.muvm_argv(traced, [sys.executable, *DLOPEN_ABSENT])
    images = [a for i in traced.images() for a in ("-f", str(i))]
    assert argv == [
        str(traced.muvm), "--emu=fex", *images, "--gpu-mode", traced.gpu_mode,
        "-e", "GST_DEBUG=GST_PIPELINE:1", "-e", "GST_DEBUG_NO_COLOR=1",
        "-e", "LD_DEBUG=libs,files", "--", sys.executable, *DLOPEN_ABSENT,
    ]  # fmt: skip
    # the fake muvm runs the guest command with those variables: the loader traces
    result = run_app(
        traced,
        RunOptions(command=[sys.executable, *DLOPEN_ABSENT], out_dir=tmp_path / "ev", echo=False),
    )  # fmt: skip
    report = jsonio.read(result.evidence_dir / "run.report.json")
    assert report["command"] == argv
    log = (result.evidence_dir / "run.log").read_text()
    assert ABSENT in {m.name for m in trace.loader_misses(log)}


# --- end to end on the real-world corpus ----------------------------------------------------

GST_TOOL = "gst-launch-1.0"


def _gst_appimage(found: Corpus, work: Path) -> Path:
    """A thin AppImage of Debian's gst-launch-1.0: the program and an AppRun, no library."""
    return apps.from_deb(found.deb("gstreamer1.0-tools"), work / "gst-launch.AppImage",
                         program=f"/usr/bin/{GST_TOOL}")  # fmt: skip


@dataclasses.dataclass
class GstProject:
    root: Path
    cache: Path
    frames: Path
    appimage: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FEXSTACK_CACHE"] = str(self.cache)
        env["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def doit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tasks", *args], cwd=self.root, env=self.env(),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    def write_stack(self, found: Corpus, seeds: list[str]) -> None:
        pipeline = [
            "videotestsrc", "num-buffers=3", "!", "videoconvert", "!", "pngenc", "!",
            "multifilesink", f"location={self.frames}/frame-%02d.png",
        ]
        (self.root / "stacks" / "gst.toml").write_text(
            "[stack]\ndescription = \"gst-launch-1.0 pipeline\"\nclass = \"deps\"\n"
            f'base = "{rw.BASE_ID}"\n\n[source]\nrelease = "{found.release}"\n'
            f'repos = ["{rw.REPO_ID}"]\n\n[seeds]\n' + "\n".join(seeds) + "\n\n"
            f'[app]\nappimage = "{self.appimage}"\ntimeout_seconds = 120\n'
            f"args = {pipeline!r}\n".replace("'", '"')
        )


@pytest.fixture(scope="module")
def gst_project(
    realworld_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GstProject]:
    work = tmp_path_factory.mktemp("suggest-gst")
    root = work / "project"
    realworld_corpus.write_stacks_dir(root / "stacks")
    # in /tmp, which the app sees as the host's; writable by the unprivileged app user
    frames = Path(tempfile.mkdtemp(prefix="fexstack-gst-frames-"))
    frames.chmod(0o1777)
    try:
        yield GstProject(root, work / "cache", frames, _gst_appimage(realworld_corpus, work))
    finally:
        shutil.rmtree(frames, ignore_errors=True)


_SEED_LINE = re.compile(r'^("[^"]+"|[A-Za-z0-9_-]+) = ".*"$')


def _seed_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if _SEED_LINE.match(line)]


def _suggest(project: GstProject) -> tuple[list[str], dict[str, object]]:
    proc = project.doit("suggest:gst", "--backend", "native")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"\(trace: (\S+)/run\.log; ", proc.stdout)
    assert match, proc.stdout
    doc = jsonio.read(Path(match[1]) / "suggest.json")
    return _seed_lines(proc.stdout), doc


@pytest.mark.realworld
def test_suggest_loop_finds_a_missing_soname_then_the_gstreamer_plugins(
    realworld_corpus: Corpus, gst_project: GstProject
) -> None:
    project = gst_project
    seeds = ['libogg0 = "an unrelated library: the stack lacks GStreamer"']
    project.write_stack(realworld_corpus, seeds)
    # 1. libgstreamer missing: appcheck's linkability and the loader both say so
    lines, doc = _suggest(project)
    assert doc["run"]["outcome"] != "PASS"  # type: ignore[index]
    assert lines and lines[0].startswith('"libgstreamer1.0-0" = ')
    assert "libgstreamer-1.0.so.0" in lines[0]
    findings = doc["findings"]
    assert any(f["question"] == "libgstreamer-1.0.so.0()(64bit)" and f["source"] == "appcheck"
               for f in findings)  # type: ignore[union-attr]  # fmt: skip
    # 2. the core alone: the run fails, and suggest names the plugin packages
    seeds += [line for line in lines if "libgstreamer1.0-0" in line]
    project.write_stack(realworld_corpus, seeds)
    failed = project.doit("run:gst", "--backend", "native")
    assert failed.returncode != 0
    evidence = re.search(r"see (\S+)/run\.log", failed.stdout)
    assert evidence, failed.stdout
    assert 'no element "videotestsrc"' in (Path(evidence[1]) / "run.log").read_text()
    lines, doc = _suggest(project)
    named = {line.split(" = ")[0].strip('"') for line in lines}
    assert named == {"gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good"}
    base_line = next(line for line in lines if "plugins-base" in line)
    assert "videotestsrc" in base_line and "libgstvideotestsrc.so" in base_line
    good_line = next(line for line in lines if "plugins-good" in line)
    assert "pngenc" in good_line and "multifilesink" in good_line
    # 3. with the printed lines pasted, the pipeline runs and writes its frames
    project.write_stack(realworld_corpus, seeds + lines)
    passed = project.doit("run:gst", "--backend", "native")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    frames = sorted(p.name for p in project.frames.glob("frame-*.png"))
    assert frames == ["frame-00.png", "frame-01.png", "frame-02.png"]
    assert (project.frames / "frame-00.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _corpus_stack(found: Corpus, stacks: Path, baseurl: str | None = None) -> Stack:
    found.write_stacks_dir(stacks)
    if baseurl is not None:
        (stacks / "repos.toml").write_text(
            f'[repos.{rw.REPO_ID}]\nbaseurl = ["{baseurl}"]\ngpgcheck = false\n'
        )
    (stacks / "q.toml").write_text(
        f'[stack]\ndescription = "q"\nclass = "deps"\nbase = "{rw.BASE_ID}"\n\n'
        f'[source]\nrelease = "{found.release}"\nrepos = ["{rw.REPO_ID}"]\n\n'
        '[seeds]\nlibogg0 = "any"\n'
    )
    return load_stack(stacks, "q")


@pytest.mark.realworld
def test_providers_answer_sonames_paths_and_globs_from_the_repositories(
    realworld_corpus: Corpus, tmp_path: Path
) -> None:
    stack = _corpus_stack(realworld_corpus, tmp_path / "stacks")
    questions = [
        provides.Question(provides.SONAME, "libgstreamer-1.0.so.0"),
        provides.Question(provides.FILE, "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstpng.so"),
        provides.Question(provides.FILE, "/usr/lib*/gstreamer-1.0/libgstvideotestsrc.so"),
        provides.Question(provides.SONAME, "libfexstack-absent.so.3"),
    ]
    answers = provides.providers(stack, questions, lambda line: None)
    assert [a.packages for a in answers] == [
        ("libgstreamer1.0-0",), ("gstreamer1.0-plugins-good",),
        ("gstreamer1.0-plugins-base",), (),
    ]  # fmt: skip
    assert answers[2].files == ("/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstvideotestsrc.so",)
    assert questions[0].capability == "libgstreamer-1.0.so.0()(64bit)"


@pytest.mark.realworld
def test_providers_name_a_repository_that_does_not_load(
    realworld_corpus: Corpus, tmp_path: Path
) -> None:
    stack = _corpus_stack(realworld_corpus, tmp_path / "stacks",
                          baseurl=(tmp_path / "no-repo").as_uri())  # fmt: skip
    with pytest.raises(LockError) as failed:
        provides.providers(stack, [provides.Question(provides.SONAME, "libz.so.1")],
                           lambda line: None)  # fmt: skip
    assert rw.REPO_ID in failed.value.message and failed.value.hint


@pytest.mark.realworld
def test_a_missing_cache_is_asked_as_the_packages_that_ship_its_inputs(
    realworld_corpus: Corpus, tmp_path: Path
) -> None:
    stack = _corpus_stack(realworld_corpus, tmp_path / "stacks")
    missed = [
        ("syscall-trace", trace.Missed(trace.FILE, "/usr/share/mime/mime.cache", "opens", "l")),
        ("app-error", trace.Missed(
            trace.FILE, "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders.cache", "o", "l"
        )),
        ("app-error", trace.Missed(
            trace.FILE, "/usr/share/glib-2.0/schemas/org.gnome.desktop.interface.gschema.xml",
            "GLib has no schema", "l",
        )),
    ]  # fmt: skip
    found = suggest.resolve(stack, missed, base=realworld_corpus.base_names)
    assert [f.question for f in found] == [
        "/usr/share/mime/packages/*.xml",
        "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders/*.so",
        "/usr/share/glib-2.0/schemas/org.gnome.desktop.interface.gschema.xml",
    ]
    assert "shared-mime-info" in found[0].packages
    assert any(p.startswith("libgdk-pixbuf") for p in found[1].packages), found[1]
    assert found[2].packages == ("gsettings-desktop-schemas",) and not found[2].note
