"""RPM name-epoch-version-release-arch strings, spelled the way rpm spells them."""

from __future__ import annotations


def format_evr(epoch: int, version: str, release: str) -> str:
    """``[epoch:]version-release`` (the epoch only when it is not 0)."""
    prefix = f"{epoch}:" if epoch else ""
    return f"{prefix}{version}-{release}"


def format_nevra(name: str, epoch: int, version: str, release: str, arch: str) -> str:
    """``name-[epoch:]version-release.arch``."""
    return f"{name}-{format_evr(epoch, version, release)}.{arch}"


class NevraNamed:
    """``evr`` and ``nevra`` of a record with name, epoch, version, release and arch."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str

    @property
    def evr(self) -> str:
        return format_evr(self.epoch, self.version, self.release)

    @property
    def nevra(self) -> str:
        return format_nevra(self.name, self.epoch, self.version, self.release, self.arch)
