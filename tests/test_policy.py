"""The check policy: one object built from a stack, read by the check step and its inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from invariants.policy import CheckPolicy, ElfAllowance, KeptExecutable, Waiver
from overlays.project import Project
from overlays.stack import load_stack
from tasks import inputs as step_inputs
from tasks import stackinfo
from tests.test_stack import demo, stacks

POLICY = """
[policy]
allow_32bit = true

[[policy.waiver]]
invariant = "precedence"
path = "/usr/lib64/libz.so.*"
reason = "the app needs its own zlib"

[[policy.allow_elf]]
path = "/usr/lib64/bpf/*.o"
reason = "eBPF programs, never loaded"

[[policy.keep_executable]]
path = "/usr/bin/helper"
reason = "the app runs it"

[app]
appimage = "apps/Demo.AppImage"
env = { LD_LIBRARY_PATH = "/opt/app/lib::/opt/app/lib64" }
"""


def check_inputs(root: Path) -> object:
    info = stackinfo.stacks(Project(root))["demo"]
    return step_inputs.check_inputs(info)


def test_policy_from_a_stack_is_what_the_check_inputs_hold(tmp_path: Path) -> None:
    folder = stacks(tmp_path, **demo(POLICY))
    policy = load_stack(folder, "demo").check_policy()
    assert policy == CheckPolicy(
        stack_class="deps",
        waivers=(Waiver("precedence", "the app needs its own zlib", path="/usr/lib64/libz.so.*"),),
        allow_elf=(ElfAllowance("/usr/lib64/bpf/*.o", "eBPF programs, never loaded"),),
        allow_32bit=True,
        keep_executables=(KeptExecutable("/usr/bin/helper", "the app runs it"),),
        ld_library_path=("/opt/app/lib", "/opt/app/lib64"),
        lib_dirs=policy.lib_dirs,
    )
    # a kept executable accounts for its library-focus finding, after the stack's waivers
    assert policy.all_waivers() == (
        *policy.waivers,
        Waiver("library-focus", "kept executable: the app runs it", path="/usr/bin/helper"),
    )
    inputs = check_inputs(tmp_path)
    assert isinstance(inputs, dict) and inputs["policy"] == policy.inputs()
    assert set(inputs["policy"]) == {f.name for f in dataclasses.fields(CheckPolicy)}


def test_each_policy_setting_changes_the_check_inputs(tmp_path: Path) -> None:
    stacks(tmp_path, **demo(POLICY))
    before = check_inputs(tmp_path)
    edits = [
        ("allow_32bit = true", "allow_32bit = false"),
        ("the app needs its own zlib", "another reason"),
        ("/usr/lib64/bpf/*.o", "/usr/lib64/fw/*"),
        ('path = "/usr/bin/helper"', 'path = "/usr/bin/other"'),
        ("/opt/app/lib64", "/opt/app/lib32"),
    ]
    text = (tmp_path / "stacks" / "demo.toml").read_text()
    for old, new in edits:
        assert old in text
        (tmp_path / "stacks" / "demo.toml").write_text(text.replace(old, new))
        assert check_inputs(tmp_path) != before, old
