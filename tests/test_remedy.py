"""Every failing finding's hint ends with stack lines that fix it: each case below pastes
the hint's lines into a real stack file, loads the stack, checks again, and the finding
is gone."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from invariants.check import check_tree
from invariants.policy import CheckPolicy
from invariants.report import Report
from overlays.stack import load_stack
from testkit.factory import Executable, Factory, Library
from tests import pipeline_support as ps
from tests.invariants_support import base_layer, fedora_base

MARK = "paste into the stack file:\n"


@pytest.fixture(scope="module")
def base(factory: Factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fedora_base(factory, tmp_path_factory.mktemp("bases"))


def _file(tree: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    target = tree / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    os.chmod(target, mode)


def aarch64(f: Factory, t: Path) -> None:
    f.elf(t / "usr/lib64/libarm.so.1", Library("libarm.so.1", machine="aarch64"))


def i386(f: Factory, t: Path) -> None:
    f.elf(t / "usr/lib/libold.so.1", Library("libold.so.1", machine="i386"))


def boundary(f: Factory, t: Path) -> None:
    _file(t, "/opt/sneaky/libstdc++.so.6", b"not really", 0o755)


def focus(f: Factory, t: Path) -> None:
    (t / "opt").mkdir(parents=True)
    (t / "opt/run").symlink_to("/bin/bash")


def precedence(f: Factory, t: Path) -> None:
    _file(t, "/etc/ld.so.conf", b"/opt\n")


def privilege(f: Factory, t: Path) -> None:
    _file(t, "/usr/lib64/odd[1]/helper", b"#!/bin/sh\n", 0o4755)  # a glob character


def interpreter(f: Factory, t: Path) -> None:
    f.elf(t / "opt/app/app", Executable("/opt/app/app"))  # PT_INTERP /lib64/...: missing


def isa(f: Factory, t: Path) -> None:
    f.elf(t / "usr/lib64/libv4.so.1", Library("libv4.so.1", isa_level="v4"))


def linkability(f: Factory, t: Path) -> None:
    f.elf(t / "usr/lib64/libtop.so.1", Library("libtop.so.1", needs=("libgone.so.9",)))


CASES: dict[str, tuple[Callable[[Factory, Path], None], str]] = {
    "arch-aarch64": (aarch64, "[[policy.allow_elf]]"),
    "arch-i386": (i386, "allow_32bit = true"),
    "abi-boundary": (boundary, "[[policy.waiver]]"),
    "library-focus": (focus, "[[policy.waiver]]"),
    "precedence": (precedence, "[[policy.waiver]]"),
    "privilege": (privilege, "[[policy.waiver]]"),
    "interpreter": (interpreter, "[[policy.waiver]]"),
    "isa": (isa, "[[policy.waiver]]"),
    "linkability": (linkability, "[[policy.waiver]]"),
}


def check(tree: Path, base: Path, stacks: Path | None = None) -> Report:
    if stacks is None:
        return check_tree(tree, CheckPolicy("deps"), owners={}, view_layers=[base_layer(base)])
    stack = load_stack(stacks, "app")
    return check_tree(tree, stack.check_policy(), owners={}, view_layers=[base_layer(base)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_hint_pasted_into_the_stack_fixes_its_finding(
    case: str, factory: Factory, base: Path, tmp_path: Path
) -> None:
    make, expected = CASES[case]
    tree = tmp_path / "tree"
    tree.mkdir()
    make(factory, tree)
    before = check(tree, base)
    failing = before.failures()
    assert failing, before.summary()
    blocks = []
    for finding in failing:
        assert MARK in finding.hint, finding.hint
        lines = finding.hint.split(MARK, 1)[1]
        assert expected in lines
        if lines not in blocks:
            blocks.append(lines)
    assert MARK.strip() in before.summary()  # the summary shows the lines too
    stacks = tmp_path / "stacks"
    (stacks / "bases").mkdir(parents=True)
    (stacks / "repos.toml").write_text('[repos.fixture]\nbaseurl = ["file:///nowhere"]\n'
                                       "gpgcheck = false\n")
    (stacks / "bases" / "fixture.toml").write_text(ps.base_toml(base, tmp_path / "none"))
    text = ps.stack_toml(seeds={"pipe-c": "the app"})
    (stacks / "app.toml").write_text(text + "\n" + "\n\n".join(blocks) + "\n")
    after = check(tree, base, stacks)
    assert not after.failed, after.summary()
    fixed = {f.invariant for f in failing}
    assert all(after.invariants[name]["status"] in ("accounted", "pass") for name in fixed)
