"""The stack loader: real files in temp folders, loaded and checked; bad input is reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from fexstack import jsonio
from fexstack.errors import ConfigError
from overlays import stack as stackmod
from overlays.stack import (
    discover,
    inputs_digest,
    load_base,
    load_repos,
    load_stack,
    resolution_inputs,
)

ROOT = Path(__file__).resolve().parent.parent
REAL_STACKS = ROOT / "stacks"

REPOS = """
[repos.local]
baseurl = ["file:///srv/repo/$releasever/$basearch"]

[repos.fedora]
metalink = "https://mirrors.example/metalink?repo=fedora-$releasever&arch=$basearch"
gpgcheck = true
gpgkey = ["file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-primary", "keys/extra.asc"]
"""

BASE = """
[base]
image = "../images/base.erofs"
packages = "../images/base.packages"
overlays = ["/usr/share/fex-emu/overlays/mesa-x86_64.erofs"]
"""

DEMO = """
[stack]
description = "demo"
base = "tiny"
include = ["extra"]

[source]
release = "44"
repos = ["local"]

[seeds]
libfoo = "the app links libfoo.so.1"
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def stacks(tmp_path: Path, **files: str) -> Path:
    """A stacks folder with repos.toml, bases/tiny.toml and the given ``name=text`` stacks."""
    folder = tmp_path / "stacks"
    write(folder, {"repos.toml": REPOS, "bases/tiny.toml": BASE})
    write(folder, {f"{name}.toml": text for name, text in files.items()})
    return folder


def demo(extra_app: str = "", **files: str) -> dict[str, str]:
    base = {"demo": DEMO + extra_app, "extra": '[seeds]\nlibbar = "needed by libfoo"\n'}
    base.update(files)
    return base


def error(folder: Path, name: str = "demo") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_stack(folder, name)
    return info.value


# --- a good stack ----------------------------------------------------------------------


def test_includes_merge_and_own_seeds_win(tmp_path: Path) -> None:
    folder = stacks(
        tmp_path,
        demo="""
        [stack]
        description = "demo"
        base = "tiny"
        include = ["gui", "media"]

        [source]
        release = "44"
        repos = ["fedora", "local"]

        [seeds]
        libfoo = "own reason"
        zlib = "own zlib"

        [exclude]
        packages = ["bubblewrap"]

        [[policy.waiver]]
        invariant = "library-focus"
        path = "/usr/bin/demo"
        reason = "own waiver"
        """,
        gui="""
        [stack]
        description = "only used through include: no base, no source"
        include = ["common"]

        [source]
        release = "40"
        repos = ["local"]

        [seeds]
        libfoo = "gui reason (loses to the including stack)"
        gtk3 = "gui toolkit"

        [exclude]
        packages = ["xdg-dbus-proxy"]

        [[policy.allow_elf]]
        path = "/usr/lib64/bpf/*.o"
        reason = "eBPF objects"
        """,
        media="""
        [seeds]
        gtk3 = "media's gtk3 (loses to gui, listed first)"
        gstreamer1 = "media"

        [[policy.waiver]]
        invariant = "library-focus"
        package = "gstreamer1"
        reason = "gst tools"
        """,
        common="""
        [seeds]
        "glib2.0-compat" = "a name with a dot, quoted"
        """,
    )
    loaded = load_stack(folder, "demo")
    assert dict(loaded.seeds) == {
        "glib2.0-compat": "a name with a dot, quoted",
        "gstreamer1": "media",
        "gtk3": "gui toolkit",
        "libfoo": "own reason",
        "zlib": "own zlib",
    }
    assert list(loaded.seeds) == sorted(loaded.seeds)
    assert isinstance(loaded.seeds, MappingProxyType)
    assert loaded.exclude == ("bubblewrap", "xdg-dbus-proxy")
    assert loaded.includes == ("gui", "media")
    assert loaded.included == ("gui", "common", "media")
    assert [w.reason for w in loaded.waivers] == ["own waiver", "gst tools"]
    assert loaded.waivers[1].package == "gstreamer1" and loaded.waivers[1].path is None
    assert [(a.path, a.reason) for a in loaded.allow_elf] == [
        ("/usr/lib64/bpf/*.o", "eBPF objects")
    ]
    # the including stack's own [source] governs
    assert loaded.release == "44"
    assert [r.id for r in loaded.repos] == ["fedora", "local"]
    assert loaded.klass == "deps" and loaded.arch == "x86_64" and not loaded.weak_deps
    assert loaded.compression == "lz4hc" and loaded.app is None
    assert loaded.files == (
        folder / "demo.toml",
        folder / "gui.toml",
        folder / "common.toml",
        folder / "media.toml",
        folder / "repos.toml",
        folder / "bases" / "tiny.toml",
    )
    assert all(p.is_file() for p in loaded.files)


def test_diamond_include_is_read_once_and_not_a_cycle(tmp_path: Path) -> None:
    folder = stacks(
        tmp_path,
        demo=DEMO.replace('include = ["extra"]', 'include = ["left", "right"]'),
        left='[stack]\ninclude = ["shared"]\n[seeds]\nleft = "l"\n',
        right='[stack]\ninclude = ["shared"]\n[seeds]\nright = "r"\n',
        shared='[seeds]\nshared = "s"\n',
    )
    loaded = load_stack(folder, "demo")
    assert set(loaded.seeds) == {"libfoo", "left", "right", "shared"}
    assert [p.name for p in loaded.files].count("shared.toml") == 1


def test_app_policy_image_and_source_fields(tmp_path: Path) -> None:
    folder = stacks(
        tmp_path,
        **demo(
            """
            [policy]
            allow_32bit = true

            [image]
            compression = "none"

            [app]
            appimage = "apps/Demo.AppImage"
            gpu_mode = "venus"
            env = { ZED = "1", ALPHA = "two words" }
            args = ["--debug", "x y"]
            timeout_seconds = 90
            sanitize = ["strip-gnu-property"]
            """
        ),
    )
    text = (folder / "demo.toml").read_text().replace('repos = ["local"]', (
        'repos = ["local"]\nweak_deps = true'))
    (folder / "demo.toml").write_text(text.replace("[stack]", '[stack]\nclass = "base-refresh"'))
    loaded = load_stack(folder, "demo")
    assert loaded.klass == "base-refresh" and loaded.weak_deps and loaded.allow_32bit
    assert loaded.compression == "none"
    app = loaded.app
    assert app is not None
    assert app.appimage == folder / "apps" / "Demo.AppImage"
    assert app.gpu_mode == "venus"
    assert list(app.env.items()) == [("ALPHA", "two words"), ("ZED", "1")]
    assert isinstance(app.env, MappingProxyType)
    assert app.args == ("--debug", "x y")
    assert app.timeout_seconds == 90
    assert app.sanitize == ("strip-gnu-property",)


def test_releasever_and_basearch_expand(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    text = (folder / "demo.toml").read_text().replace('["local"]', '["local", "fedora"]')
    (folder / "demo.toml").write_text(text.replace('release = "44"', 'release = "rawhide"'))
    local, fedora = load_stack(folder, "demo").repos
    assert local.baseurl == ("file:///srv/repo/rawhide/x86_64",)
    assert local.metalink is None and not local.gpgcheck
    assert fedora.metalink == "https://mirrors.example/metalink?repo=fedora-rawhide&arch=x86_64"
    assert fedora.gpgkey == (
        "/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-rawhide-primary",
        str(folder / "keys" / "extra.asc"),
    )
    assert fedora.gpgkey_urls[0] == "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-rawhide-primary"
    # load_repos itself keeps the variables for later expansion
    raw = load_repos(folder / "repos.toml")
    assert raw["fedora"].gpgkey[0].endswith("fedora-$releasever-primary")
    assert raw["local"].baseurl == ("file:///srv/repo/$releasever/$basearch",)


def test_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    folder = stacks(tmp_path, **demo('[app]\nappimage = "~/Downloads/App.AppImage"\n'))
    write(
        folder,
        {
            "bases/tiny.toml": """
            [base]
            image = "~/rootfs"
            packages = "lists/*.x86_64.packages"
            overlays = ["../gpu/mesa.erofs", "/abs/mesa-i386.erofs"]
            lib_dirs = ["/usr/lib64"]
            """,
            "repos.toml": '[repos.local]\nbaseurl = ["file:///r"]\ngpgkey = ["~/k.asc", "k2"]\n',
        },
    )
    loaded = load_stack(folder, "demo")
    assert loaded.app is not None and loaded.app.appimage == home / "Downloads" / "App.AppImage"
    base = loaded.base
    assert base.id == "tiny" and base.path == folder / "bases" / "tiny.toml"
    assert base.image == home / "rootfs"
    assert base.packages == folder / "bases" / "lists" / "*.x86_64.packages"
    assert base.overlays == (folder / "gpu" / "mesa.erofs", Path("/abs/mesa-i386.erofs"))
    assert base.lib_dirs == ("/usr/lib64",)
    assert loaded.repos[0].gpgkey == (str(home / "k.asc"), str(folder / "k2"))
    # none of these files exist: loading does not require them
    assert not base.image.exists()


def test_base_defaults(tmp_path: Path) -> None:
    folder = write(tmp_path, {"tiny.toml": '[base]\nimage = "/img.erofs"\n'})
    base = load_base(folder, "tiny")
    assert base.packages is None and base.overlays == ()
    assert base.lib_dirs == ("/lib64", "/usr/lib64")


def test_discover_skips_repos_and_locks(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    (folder / "demo.lock.toml").write_text("[lock]\n")
    (folder / "notes.txt").write_text("")
    assert discover(folder) == ["demo", "extra"]
    assert stackmod.buildable(folder) == ["demo"]


# --- what resolution depends on --------------------------------------------------------


def test_resolution_inputs_ignore_comments_and_descriptions(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[app]\nappimage = "/a.AppImage"\n'))
    path = folder / "demo.toml"
    before = resolution_inputs(load_stack(folder, "demo"), "sha256:base")
    assert before["seeds"] == {"libbar": "needed by libfoo", "libfoo": "the app links libfoo.so.1"}
    assert before["base_packages"] == "sha256:base"
    assert before["repos"][0]["baseurl"] == ["file:///srv/repo/44/x86_64"]

    edited = "# a comment\n" + path.read_text().replace('"demo"', '"a new description"')
    edited = edited.replace('"/a.AppImage"', '"/b.AppImage"\ntimeout_seconds = 5')
    path.write_text(edited)
    after = resolution_inputs(load_stack(folder, "demo"), "sha256:base")
    assert after == before
    assert inputs_digest(after) == inputs_digest(before)

    path.write_text(edited.replace("[seeds]", '[seeds]\nlibnew = "new"'))
    changed = resolution_inputs(load_stack(folder, "demo"), "sha256:base")
    assert "libnew" in changed["seeds"]
    assert inputs_digest(changed) != inputs_digest(before)

    path.write_text(edited.replace("links libfoo.so.1", "links libfoo.so.2"))
    assert inputs_digest(resolution_inputs(load_stack(folder, "demo"), "sha256:base")) != (
        inputs_digest(before)
    )
    assert inputs_digest(resolution_inputs(load_stack(folder, "demo"), "sha256:other")) != (
        inputs_digest(before)
    )


# --- the real stacks -------------------------------------------------------------------


def test_real_stacks_load() -> None:
    names = discover(REAL_STACKS)
    assert {"bambu", "bambu-webkit41", "webkit", "webkit40", "gstreamer"} <= set(names)
    assert {"bambu", "bambu-webkit41"} <= set(stackmod.buildable(REAL_STACKS))
    bambu = load_stack(REAL_STACKS, "bambu")
    assert bambu.klass == "deps" and bambu.release == "44" and bambu.arch == "x86_64"
    # the "fedora" AppImage: WebKitGTK 4.0 and libsoup 2, never libsoup 3
    assert bambu.includes == ("webkit40", "gstreamer")
    assert {"webkit2gtk4.0", "javascriptcoregtk4.0", "libsoup", "glib-networking",
            "gstreamer1", "gstreamer1-plugins-base", "gtk3", "mesa-compat-libOSMesa",
            "libglvnd-opengl", "fuse-libs"} <= set(bambu.seeds)
    assert not {"libsoup3", "webkit2gtk4.1"} & set(bambu.seeds)
    assert bambu.exclude == ("libsoup3",)
    assert all(reason.strip() for reason in bambu.seeds.values())
    repos = {r.id: r for r in bambu.repos}
    assert list(repos) == ["fedora", "updates", "fedora-41", "updates-41"]
    assert all(r.gpgcheck and r.metalink for r in bambu.repos)
    assert repos["fedora"].release == "44" and "repo=fedora-44&" in (repos["fedora"].metalink or "")
    assert "updates-released-f44" in (repos["updates"].metalink or "")
    assert repos["fedora"].gpgkey == ("/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-44-primary",)
    assert repos["fedora-41"].release == "41" and repos["updates-41"].release == "41"
    assert "repo=fedora-41&arch=x86_64" in (repos["fedora-41"].metalink or "")
    assert "updates-released-f41&" in (repos["updates-41"].metalink or "")
    assert repos["fedora-41"].gpgkey == ("/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-41-primary",)
    assert bambu.base.id == "fedora-fex"
    assert bambu.base.image == Path("/usr/share/fex-emu/RootFS/default.erofs")
    assert bambu.base.overlays == (Path("/usr/share/fex-emu/overlays/mesa-x86_64.erofs"),)
    assert bambu.app is not None and bambu.app.gpu_mode == "drm"
    assert bambu.app.env["WEBKIT_DISABLE_DMABUF_RENDERER"] == "1"
    assert bambu.app.appimage is not None and "linux_fedora" in bambu.app.appimage.name
    assert bambu.app.plugin_dirs == (Path.home() / ".config/BambuStudio/plugins",)
    assert bambu.app.allow_execstack is False  # only when the user sets it
    assert {p.name for p in bambu.files} == {
        "bambu.toml", "webkit40.toml", "gstreamer.toml", "repos.toml", "fedora-fex.toml"
    }
    # the WebKitGTK 4.1 builds and the "ubuntu" AppImages
    w41 = load_stack(REAL_STACKS, "bambu-webkit41")
    assert w41.includes == ("webkit", "gstreamer") and w41.exclude == ("libsoup",)
    assert {"webkit2gtk4.1", "libsoup3", "mesa-compat-libOSMesa"} <= set(w41.seeds)
    assert not {"libsoup", "webkit2gtk4.0"} & set(w41.seeds)
    assert [r.id for r in w41.repos] == ["fedora", "updates"]
    assert w41.app is not None and w41.app.appimage is not None
    assert "ubuntu" in w41.app.appimage.name
    # the comments cite the facts they rest on
    for name in ("bambu", "bambu-webkit41", "webkit40"):
        text = (REAL_STACKS / f"{name}.toml").read_text()
        assert "FACTS.md" in text and "issue" in text, name


@pytest.mark.parametrize("fragment", ["webkit", "webkit40", "gstreamer"])
def test_real_include_only_stacks(tmp_path: Path, fragment: str) -> None:
    """They are valid includes, and loading one alone says why it cannot be built."""
    folder = stacks(tmp_path, demo=DEMO.replace('"extra"', f'"{fragment}"'))
    shutil.copy(REAL_STACKS / f"{fragment}.toml", folder / f"{fragment}.toml")
    loaded = load_stack(folder, "demo")
    assert loaded.included == (fragment,) and len(loaded.seeds) > 2
    assert fragment not in stackmod.buildable(REAL_STACKS)
    err = error(REAL_STACKS, fragment)
    assert f"stacks/{fragment}.toml" in err.message
    assert "[stack].base: missing" in err.message and "include" in err.message


def test_schema_enums_match_the_constants() -> None:
    props = jsonio.schema("stack")["properties"]
    assert tuple(props["stack"]["properties"]["class"]["enum"]) == stackmod.CLASSES
    assert tuple(props["app"]["properties"]["gpu_mode"]["enum"]) == stackmod.GPU_MODES
    assert tuple(props["image"]["properties"]["compression"]["enum"]) == stackmod.COMPRESSIONS
    sanitize = props["app"]["properties"]["sanitize"]["items"]["enum"]
    assert tuple(sanitize) == stackmod.SANITIZE_STEPS


# --- bad input -------------------------------------------------------------------------


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    (folder / "demo.toml").write_text('[stack]\nbase = "tiny"\nrelease = 44 44\n')
    err = error(folder)
    assert "demo.toml: line 3, column" in err.message
    assert "not valid TOML" in err.message


def test_unknown_table_suggests_seeds(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace("[seeds]", "[seed]"))
    err = error(folder)
    assert "demo.toml: [seed]: unknown table" in err.message
    assert err.hint is not None and "did you mean 'seeds'?" in err.hint


def test_unknown_key_in_app(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[app]\nappimage = "/a"\ngpu_mod = "drm"\n'))
    err = error(folder)
    assert "demo.toml: [app].gpu_mod: unknown key" in err.message
    assert err.hint is not None and "did you mean 'gpu_mode'?" in err.hint
    assert "appimage" in err.hint  # the allowed keys are listed


def test_wrong_type(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[app]\nappimage = "/a"\ntimeout_seconds = "ten"\n'))
    err = error(folder)
    assert err.message.endswith(
        'demo.toml: [app].timeout_seconds: expected an integer, found string "ten"'
    )
    assert "ValidationError" not in str(err) and "is not of type" not in str(err)


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[app]\nappimage = "/a"\ntimeout_seconds = 0\n'))
    assert "[app].timeout_seconds: expected a number >= 1, found integer 0" in error(folder).message


def test_bad_gpu_mode(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[app]\nappimage = "/a"\ngpu_mode = "venos"\n'))
    err = error(folder)
    assert '[app].gpu_mode: expected one of "drm", "venus", "software", found string "venos"' in (
        err.message
    )
    assert err.hint is not None and "did you mean 'venus'?" in err.hint


def test_release_must_be_a_string(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace('release = "44"', "release = 44"))
    err = error(folder)
    assert "demo.toml: [source].release: expected a string, found integer 44" in err.message
    assert err.hint is not None and 'release = "44"' in err.hint


def test_unquoted_dotted_seed_name(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text() + 'webkit2gtk4.1 = "web views"\n')
    err = error(folder)
    assert "[seeds].webkit2gtk4: expected a string, found a table" in err.message
    assert err.hint is not None and '"webkit2gtk4.1"' in err.hint


def test_empty_reason_and_bad_seed_name(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text() + 'libempty = "  "\n"bad name" = "x"\n')
    err = error(folder)
    assert "[seeds].libempty: expected a non-empty reason" in err.message
    assert '[seeds]."bad name": "bad name" is not an RPM package name' in err.message


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[app]\nappimage = 3\ngpu_mode = "dmr"\n'))
    err = error(folder)
    lines = err.message.splitlines()
    assert [line.split("demo.toml: ", 1)[1] for line in lines] == [
        "[app].appimage: expected a string, found integer 3",
        '[app].gpu_mode: expected one of "drm", "venus", "software", found string "dmr"',
    ]
    assert err.hint is not None
    hints = err.hint.splitlines()
    assert hints[0] == '[app].appimage: write it in double quotes: appimage = "3"'
    assert hints[1].startswith("[app].gpu_mode: did you mean 'drm'?")


def test_duplicates_in_lists(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[exclude]\npackages = ["a", "b", "a"]\n'))
    err = error(folder)
    assert 'demo.toml: [exclude].packages: lists "a" more than once' in err.message


def test_missing_base_file(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace('base = "tiny"', 'base = "tinny"'))
    err = error(folder)
    assert "demo.toml: [stack].base: no base 'tinny'" in err.message
    assert "bases/tinny.toml does not exist" in err.message
    assert err.hint is not None and "did you mean 'tiny'?" in err.hint


def test_stack_without_base_or_source(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace('base = "tiny"\n', ""))
    assert "demo.toml: [stack].base: missing" in error(folder).message
    path.write_text(DEMO.split("[source]")[0] + '[seeds]\nx = "y"\n')
    assert "demo.toml: [source]: missing" in error(folder).message


def test_unknown_repo_id(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace('["local"]', '["local", "fedroa"]'))
    err = error(folder)
    assert "demo.toml: [source].repos[1]: no repo 'fedroa' in" in err.message
    assert "repos.toml" in err.message
    assert err.hint is not None and "did you mean 'fedora'?" in err.hint


def test_include_cycle(tmp_path: Path) -> None:
    folder = stacks(
        tmp_path,
        demo=DEMO.replace('include = ["extra"]', 'include = ["a"]'),
        a='[stack]\ninclude = ["b"]\n[seeds]\na = "a"\n',
        b='[stack]\ninclude = ["x", "a"]\n[seeds]\nb = "b"\n',
        x='[seeds]\nx = "x"\n',
    )
    err = error(folder)
    assert "b.toml: [stack].include[1]: include cycle: a -> b -> a" in err.message


def test_self_include(tmp_path: Path) -> None:
    folder = stacks(tmp_path, demo=DEMO.replace('include = ["extra"]', 'include = ["demo"]'))
    assert "[stack].include[0]: include cycle: demo -> demo" in error(folder).message


def test_include_of_missing_stack(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace('["extra"]', '["extra", "extar2"]'))
    err = error(folder)
    assert "demo.toml: [stack].include[1]: no stack 'extar2'" in err.message
    assert err.hint is not None and "did you mean 'extra'?" in err.hint


def test_included_stack_errors_name_that_file(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo(extra='[seeds]\nlibbar = 1\n'))
    err = error(folder)
    assert "extra.toml: [seeds].libbar: expected a string, found integer 1" in err.message


def test_empty_seeds(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo(extra='[stack]\ndescription = "nothing"\n'))
    path = folder / "demo.toml"
    path.write_text(path.read_text().replace('libfoo = "the app links libfoo.so.1"', ""))
    err = error(folder)
    assert "demo.toml: [seeds]: no seeds (nor from its includes: extra)" in err.message


def test_excluded_seed(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo('[exclude]\npackages = ["libbar"]\n'))
    assert "[exclude].packages: excludes seed(s) libbar" in error(folder).message


def test_waiver_needs_path_or_package(tmp_path: Path) -> None:
    folder = stacks(
        tmp_path, **demo('[[policy.waiver]]\ninvariant = "precedence"\nreason = "why"\n')
    )
    assert "[policy].waiver[0]: needs a path glob or a package" in error(folder).message
    folder2 = stacks(tmp_path / "2", **demo('[[policy.waiver]]\ninvariant = "precedence"\n'
                                           'path = "/x"\n'))
    assert "[policy].waiver[0].reason: missing" in error(folder2).message


def test_unknown_stack_name(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo())
    err = error(folder, "dmeo")
    assert "dmeo.toml: no stack 'dmeo'" in err.message
    assert err.hint is not None and "did you mean 'demo'?" in err.hint


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('baseurl = ["https://a"]\nmetalink = "https://b"', "has both baseurl and metalink"),
        ("gpgcheck = false", "has neither baseurl nor metalink"),
        ('baseurl = "https://a"', "[repos.local].baseurl: expected a list, found string"),
        ('baseurl = ["https://a"]\ngpgcheck = true', "gpgcheck = true but no gpgkey"),
        ('metalink = "https://a"\nmirrorlist = "x"', "[repos.local].mirrorlist: unknown key"),
    ],
)
def test_bad_repo_entries(tmp_path: Path, entry: str, expected: str) -> None:
    folder = stacks(tmp_path, **demo())
    (folder / "repos.toml").write_text(f"[repos.local]\n{entry}\n")
    err = error(folder)
    assert "repos.toml: " in err.message and expected in err.message
    with pytest.raises(ConfigError):
        load_repos(folder / "repos.toml")


def test_bad_base_file(tmp_path: Path) -> None:
    folder = write(tmp_path, {"b.toml": '[base]\nimage = "/i"\nlib_dir = ["usr/lib64"]\n'})
    with pytest.raises(ConfigError) as info:
        load_base(folder, "b")
    assert "b.toml: [base].lib_dir: unknown key" in info.value.message
    assert info.value.hint is not None and "did you mean 'lib_dirs'?" in info.value.hint
    (folder / "b.toml").write_text('[base]\nimage = "/i"\nlib_dirs = ["usr/lib64"]\n')
    with pytest.raises(ConfigError) as info:
        load_base(folder, "b")
    assert '[base].lib_dirs[0]: expected an absolute directory' in info.value.message
    with pytest.raises(ConfigError, match="no such base 'c'"):
        load_base(folder, "c")


def test_doit_list_shows_both_bambu_flavours() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "list"],
        cwd=REAL_STACKS.parent, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    for name in ("bambu", "bambu-webkit41"):
        for step in ("lock", "fetch", "stage", "check", "image", "overlay", "run", "why"):
            assert f"{step}:{name}" in rows, proc.stdout
    assert "lock:webkit40" not in rows  # an include-only stack has no tasks of its own


def test_resolution_inputs_record_local_repos_as_written(tmp_path: Path) -> None:
    """The same project at two paths has the same inputs; a changed path changes them."""
    repos = (
        '[repos.local]\nbaseurl = ["../repo/$releasever"]\ngpgcheck = true\n'
        'gpgkey = ["keys/k.asc"]\n'
    )
    loaded = []
    for where in ("one", "two/deeper"):
        folder = stacks(tmp_path / where, **demo())
        (folder / "repos.toml").write_text(repos)
        loaded.append(load_stack(folder, "demo"))
    first, second = (resolution_inputs(s, "sha256:base") for s in loaded)
    assert first["repos"][0]["baseurl"] == ["../repo/44"]
    assert first["repos"][0]["gpgkey"] == ["keys/k.asc"]
    assert inputs_digest(first) == inputs_digest(second)
    # What is fetched from and checked with is still absolute, in each clone's own place.
    assert loaded[0].repos[0].baseurl == ((tmp_path / "one" / "repo" / "44").as_uri(),)
    assert loaded[1].repos[0].gpgkey == (str(tmp_path / "two/deeper/stacks/keys/k.asc"),)
    folder = tmp_path / "two/deeper/stacks"
    (folder / "repos.toml").write_text(repos.replace("../repo", "../other-repo"))
    moved = resolution_inputs(load_stack(folder, "demo"), "sha256:base")
    assert inputs_digest(moved) != inputs_digest(first)
