"""The packages a base already holds, read from its package list.

Two forms are understood:

- a kiwi ``.packages`` file, as Fedora's ``fex-emu-rootfs-fedora`` ships one, one
  ``NAME|EPOCH|VERSION|RELEASE|ARCH|DISTURL|LICENSE`` per line (an empty or ``(none)``
  epoch is 0; blank lines are skipped; older kiwi releases omit LICENSE, which is
  accepted). ``gpg-pubkey`` entries are signing keys imported into the rpmdb, not
  packages, and are skipped.
- a fexstack lock file (``*.lock.toml``) of a ``class = "base"`` stack.

The path may be a glob (``/usr/share/licenses/fex-emu-rootfs-fedora/*.x86_64.packages``)
that must match exactly one file.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fexstack.errors import ConfigError
from fexstack.nevra import NevraNamed
from overlays import lockfile

KIWI_FIELDS = ("NAME", "EPOCH", "VERSION", "RELEASE", "ARCH", "DISTURL", "LICENSE")
NONE = "(none)"
SKIPPED_NAMES = ("gpg-pubkey",)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, order=True)
class BasePackage(NevraNamed):
    """One installed package of a base."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str


def resolve(path: Path) -> Path:
    """``path`` itself, or the one file its glob matches (a :class:`ConfigError` otherwise)."""
    text = str(path)
    if not _GLOB_CHARS & set(text):
        return Path(path)
    matches = sorted(glob.glob(text))
    if len(matches) != 1:
        found = ", ".join(matches) if matches else "nothing"
        raise ConfigError(
            f"{text}: the base package list glob must match exactly one file, found {found}",
            "install the base's package (fex-emu-rootfs-fedora) or name the file exactly "
            "in packages = under [base]",
        )
    return Path(matches[0])


def load_base_packages(path: Path) -> tuple[BasePackage, ...]:
    """The packages listed in ``path`` (kiwi list or lock file), sorted by name, arch, EVR."""
    real = resolve(path)
    if real.name.endswith(".lock.toml"):
        lock = lockfile.read(real)
        packages = [
            BasePackage(p.name, p.epoch, p.version, p.release, p.arch) for p in lock.packages
        ]
    else:
        packages = _read_kiwi(real)
    return tuple(sorted(packages, key=lambda p: (p.name, p.arch, p.epoch, p.version, p.release)))


def _read_kiwi(path: Path) -> list[BasePackage]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such base package list",
            "install the base's package, or fix packages = under [base]",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}", None) from exc
    packages = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        package = _parse_line(line)
        if isinstance(package, str):
            raise ConfigError(
                f"{path}: line {number}: {package}: {line!r}",
                "each line is " + "|".join(KIWI_FIELDS) + " (a kiwi .packages list)",
            )
        if package is not None:
            packages.append(package)
    return packages


def _parse_line(line: str) -> BasePackage | str | None:
    """The package on one line, None for a skipped entry, or what is wrong (a str)."""
    fields = line.split("|")
    if len(fields) not in (len(KIWI_FIELDS), len(KIWI_FIELDS) - 1):
        return f"expected {len(KIWI_FIELDS)} fields separated by '|', found {len(fields)}"
    name, epoch_text, version, release, arch = (f.strip() for f in fields[:5])
    if name in SKIPPED_NAMES:
        return None
    for label, value in (("NAME", name), ("VERSION", version), ("RELEASE", release),
                         ("ARCH", arch)):
        if not value or value == NONE or any(c.isspace() for c in value):
            return f"expected a {label} without spaces, found {value!r}"
    if epoch_text in ("", NONE):
        epoch = 0
    elif epoch_text.isdigit():
        epoch = int(epoch_text)
    else:
        return f"expected an EPOCH that is a number, empty or (none), found {epoch_text!r}"
    return BasePackage(name, epoch, version, release, arch)


def canonical_text(packages: tuple[BasePackage, ...] | list[BasePackage]) -> str:
    """One ``name epoch:version-release.arch`` line per package, sorted."""
    lines = sorted(f"{p.name} {p.epoch}:{p.version}-{p.release}.{p.arch}" for p in packages)
    return "".join(line + "\n" for line in lines)


def digest(packages: tuple[BasePackage, ...] | list[BasePackage]) -> str:
    """``sha256:<hex>`` of the package set (order of the input does not matter)."""
    return "sha256:" + hashlib.sha256(canonical_text(packages).encode("utf-8")).hexdigest()
