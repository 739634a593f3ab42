"""Reading a base's package list: kiwi .packages files and base-stack locks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fexstack.errors import ConfigError
from overlays import lockfile
from overlays.basepkgs import BasePackage, digest, load_base_packages, resolve

KIWI = """\
glibc|(none)|2.41|3.fc44|x86_64|obs://build.fedoraproject.org/fedora|LGPL-2.1-or-later
bash||5.2.37|1.fc44|x86_64|(none)|GPL-3.0-or-later

gpg-pubkey|(none)|105ef944|65ca83d1|(none)|(none)|pubkey
shadow-utils|2|4.17.0|2.fc44|x86_64|(none)|BSD-3-Clause
glibc|(none)|2.41|3.fc44|i686|(none)|LGPL-2.1-or-later
"""


def test_kiwi_list(tmp_path: Path) -> None:
    path = tmp_path / "rootfs.x86_64.packages"
    path.write_text(KIWI)
    packages = load_base_packages(path)
    assert packages == (
        BasePackage("bash", 0, "5.2.37", "1.fc44", "x86_64"),
        BasePackage("glibc", 0, "2.41", "3.fc44", "i686"),
        BasePackage("glibc", 0, "2.41", "3.fc44", "x86_64"),
        BasePackage("shadow-utils", 2, "4.17.0", "2.fc44", "x86_64"),
    )
    assert packages[3].nevra == "shadow-utils-2:4.17.0-2.fc44.x86_64"
    assert packages[0].evr == "5.2.37-1.fc44"


def test_older_kiwi_without_license(tmp_path: Path) -> None:
    path = tmp_path / "old.packages"
    path.write_text("zlib-ng-compat|(none)|2.2.3|1.fc44|x86_64|(none)\n")
    expected = BasePackage("zlib-ng-compat", 0, "2.2.3", "1.fc44", "x86_64")
    assert load_base_packages(path) == (expected,)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bash|5.2|1.fc44|x86_64", "expected 7 fields separated by '|', found 4"),
        ("bash|x|5.2|1.fc44|x86_64||GPL", "expected an EPOCH that is a number"),
        ("|(none)|5.2|1.fc44|x86_64||GPL", "expected a NAME without spaces, found ''"),
        ("bash|(none)|5.2||x86_64||GPL", "expected a RELEASE without spaces"),
        ("bash|(none)|5 2|1|x86_64||GPL", "expected a VERSION without spaces, found '5 2'"),
    ],
)
def test_malformed_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.packages"
    path.write_text(f"bash||5.2.37|1.fc44|x86_64|(none)|GPL\n\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_base_packages(path)
    message = info.value.message
    assert f"{path}: line 3: " in message
    assert expected in message
    assert repr(line) in message
    assert info.value.hint is not None and "NAME|EPOCH|VERSION|RELEASE|ARCH" in info.value.hint


def test_glob_must_match_one_file(tmp_path: Path) -> None:
    pattern = tmp_path / "*.x86_64.packages"
    with pytest.raises(ConfigError, match="must match exactly one file, found nothing"):
        load_base_packages(pattern)
    first = tmp_path / "Fedora-FEX-44.x86_64.packages"
    first.write_text("bash||5.2.37|1.fc44|x86_64|(none)|GPL\n")
    assert resolve(pattern) == first
    assert load_base_packages(pattern)[0].name == "bash"
    (tmp_path / "Fedora-FEX-45.x86_64.packages").write_text("")
    with pytest.raises(ConfigError) as info:
        resolve(pattern)
    assert "Fedora-FEX-44" in info.value.message and "Fedora-FEX-45" in info.value.message
    assert resolve(first) == first


def test_missing_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such base package list"):
        load_base_packages(tmp_path / "none.packages")


def test_lock_of_a_base_stack(tmp_path: Path) -> None:
    def locked(name: str, epoch: int) -> lockfile.LockedPackage:
        return lockfile.LockedPackage(
            name=name, epoch=epoch, version="1.0", release="1.fc44", arch="x86_64",
            repo="fedora", url=f"https://example/{name}.rpm", sha256="0" * 64, size=1,
            reasons=(lockfile.Reason(seed="base"),),
        )

    path = tmp_path / "rootfs.lock.toml"
    lockfile.write(path, lockfile.Lock(
        stack="rootfs", release="44", arch="x86_64", inputs="sha256:i", base="sha256:b",
        packages=(locked("zlib", 0), locked("glibc", 1)),
    ))
    assert load_base_packages(path) == (
        BasePackage("glibc", 1, "1.0", "1.fc44", "x86_64"),
        BasePackage("zlib", 0, "1.0", "1.fc44", "x86_64"),
    )


def test_digest(tmp_path: Path) -> None:
    a = BasePackage("bash", 0, "5.2.37", "1.fc44", "x86_64")
    b = BasePackage("glibc", 0, "2.41", "3.fc44", "x86_64")
    assert digest([a, b]) == digest((b, a))
    assert digest([a, b]).startswith("sha256:") and len(digest([a])) == len("sha256:") + 64
    assert digest([a, b]) != digest([a, BasePackage("glibc", 0, "2.41", "4.fc44", "x86_64")])
    assert digest([a]) != digest([a, b])
    # an empty epoch and (none) are the same package
    one, two = tmp_path / "1.packages", tmp_path / "2.packages"
    one.write_text("bash||5.2.37|1.fc44|x86_64|x|GPL\n")
    two.write_text("\nbash|(none)|5.2.37|1.fc44|x86_64|(none)|GPL-3.0\n\n")
    assert digest(load_base_packages(one)) == digest(load_base_packages(two)) == digest([a])
