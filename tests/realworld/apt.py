"""The closure of named Debian packages, downloaded with apt under a private configuration.

apt runs with its own sources.list, state, cache and an empty dpkg status under a folder
of the corpus cache, so the host's (or the toolchain root's) apt setup is neither read
nor changed. The archive's Release file is verified with debian-archive-keyring; each
.deb is verified by apt against the signed index. The closure is apt's own solver run on
an empty system without Recommends: exactly what ``apt-get install --no-install-recommends``
would install there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fexstack import command
from fexstack.errors import FexstackError

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_INST = re.compile(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)")

Progress = Callable[[str], None]


class CorpusError(FexstackError):
    """The real-world corpus could not be built or verified."""


@dataclass(frozen=True, order=True)
class DebRef:
    """One package of the closure: name, Debian version and Debian architecture."""

    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        """apt's file name for it (``:`` of an epoch spelled ``%3a``)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


class PrivateApt:
    """apt-get with every directory under ``folder`` (lists persist there between builds)."""

    def __init__(self, folder: Path, mirror: str, suite: str, arch: str) -> None:
        self.folder = Path(folder)
        self.mirror = mirror.rstrip("/")
        self.suite = suite
        self.arch = arch

    def _setup(self) -> None:
        etc = self.folder / "etc"
        for sub in ("apt.conf.d", "preferences.d", "trusted.gpg.d", "sources.list.d"):
            (etc / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.folder / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        if not KEYRING.is_file():
            raise CorpusError(
                f"{KEYRING} is missing: cannot verify Debian's archive",
                "run through ./devroot (its root has debian-archive-keyring)",
            )
        (etc / "sources.list").write_text(
            f"deb [arch={self.arch} signed-by={KEYRING}] {self.mirror} {self.suite} main\n"
        )
        (self.folder / "status").write_text("")

    def options(self) -> list[str]:
        """The ``-o`` options that point apt at the private folders."""
        f = self.folder
        settings = {
            "Dir::Etc": f / "etc",
            "Dir::Etc::sourcelist": f / "etc" / "sources.list",
            "Dir::Etc::sourceparts": f / "etc" / "sources.list.d",
            "Dir::Etc::parts": f / "etc" / "apt.conf.d",
            "Dir::Etc::preferencesparts": f / "etc" / "preferences.d",
            "Dir::Etc::trustedparts": f / "etc" / "trusted.gpg.d",
            "Dir::State": f / "state",
            "Dir::State::status": f / "status",
            "Dir::Cache": f / "cache",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "true",
        }
        out: list[str] = []
        for key, value in settings.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _apt(self, args: Sequence[str], *, cwd: Path | None = None, hint: str) -> str:
        proc = command.run(
            ["apt-get", "-q", *self.options(), *args],
            cwd=cwd,
            env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"},
            hint=hint,
        )
        return proc.stdout.decode("utf-8", "replace")

    def update(self) -> None:
        """Fetch the suite's signed index."""
        self._setup()
        self._apt(
            ["update"],
            hint=f"check that {self.mirror} serves {self.suite} (FEXSTACK_DEVROOT_MIRROR "
            "names another mirror) and that this machine reaches it",
        )

    def closure(self, seeds: Sequence[str]) -> list[DebRef]:
        """The packages apt installs for ``seeds`` on an empty system, sorted by name."""
        out = self._apt(
            ["-s", "install", *seeds],
            hint="a seed name is wrong for this suite (see tests/realworld/packages.py)",
        )
        refs = []
        for line in out.splitlines():
            match = _INST.match(line)
            if match:
                refs.append(DebRef(match[1], match[2], match[3]))
        if not refs:
            raise CorpusError(f"apt installs nothing for {', '.join(seeds)}", None)
        return sorted(refs)

    def download(
        self, refs: Sequence[DebRef], dest: Path, progress: Progress, chunk: int = 100
    ) -> None:
        """Download exactly these versions into ``dest`` (apt checks each file's hash)."""
        dest.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(refs), chunk):
            part = refs[start : start + chunk]
            self._apt(
                ["download", *(f"{r.name}={r.version}" for r in part)],
                cwd=dest,
                hint=f"the index may have moved on: delete {self.folder} and build again",
            )
            progress(f"downloaded {min(start + chunk, len(refs))}/{len(refs)} packages")
        missing = [r.filename for r in refs if not (dest / r.filename).is_file()]
        if missing:
            raise CorpusError(
                f"apt did not download {', '.join(missing[:5])}", "build the corpus again"
            )
