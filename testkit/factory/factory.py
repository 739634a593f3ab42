"""The fixture factory: specs in, real RPMs, signed RPMs, repositories and ELF files out.

Everything is cached under the factory's workdir, keyed by a digest of the spec (and of
everything it links against), so the same spec gives the same file without a rebuild,
also across test sessions when the workdir persists ($FEXSTACK_FACTORY_CACHE).

Layout of the workdir::

    elf/<key>/<name>                 compiled ELF files
    rpms/<key>/<N-V-R.A>.rpm         unsigned packages
    signed/<key>-<keyid>/<...>.rpm   the same, signed by a throwaway key
    keys/<name>/                     throwaway keys (gnupg home, public.asc, key.json)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fexstack import atomic, command
from testkit.factory import specfile
from testkit.factory.compiler import Compiler
from testkit.factory.keyring import Keyring
from testkit.factory.spec import (
    Executable,
    FactoryError,
    GpgKey,
    Library,
    Package,
    digest,
)

RECIPE = "rpm-1"

RPMBUILD_TARGET = {"x86_64": "x86_64", "noarch": "x86_64", "i686": "i686", "aarch64": "aarch64"}


class Factory:
    """Builds fixture RPMs and repositories under ``workdir`` (created if missing)."""

    _default: Factory | None = None

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.compiler = Compiler(self.workdir)
        self.keyring = Keyring(self.workdir)
        self._rpm_version = ""
        self.built = 0  # RPMs built by rpmbuild (not taken from the cache) in this process

    # -- the default instance (used by base_tree when no factory is passed) ----------------

    @classmethod
    def default(cls) -> Factory:
        """The factory last made default, else one in a fresh temp folder."""
        if cls._default is None:
            cls._default = Factory(Path(tempfile.mkdtemp(prefix="fexstack-factory-")))
        return cls._default

    def make_default(self) -> Factory:
        Factory._default = self
        return self

    # -- ELF -------------------------------------------------------------------------------

    def register(self, *libs: Library) -> None:
        """Make these libraries the ones linked for their sonames by later builds."""
        for lib in libs:
            self.compiler.register(lib)

    def elf(self, out: Path, spec: Library | Executable) -> Path:
        """Compile one ELF file (its needed libraries first) and copy it to ``out``."""
        if isinstance(spec, Library):
            self.compiler.register(spec)
        built = self.compiler.build(spec)
        atomic.write_bytes(out, built.read_bytes())
        out.chmod(0o644 if isinstance(spec, Library) and spec.machine == "bpf" else 0o755)
        return out

    # -- RPMs ------------------------------------------------------------------------------

    def _rpm_tool_version(self) -> str:
        if not self._rpm_version:
            self._rpm_version = command.tool_version(["rpmbuild", "--version"])
        return self._rpm_version

    def rpm_key(self, pkg: Package) -> str:
        """The cache key of ``pkg``'s RPM (its libraries are registered first)."""
        for lib in pkg.libraries:
            self.compiler.register(lib)
        elves = [self.compiler.key(c) for c in pkg.contents if isinstance(c, Library | Executable)]
        return digest(RECIPE, self._rpm_tool_version(), specfile.SOURCE_DATE_EPOCH, pkg, elves)

    def rpm(self, pkg: Package, *, sign_with: GpgKey | None = None) -> Path:
        """The RPM file of ``pkg`` (signed by ``sign_with`` if given), built if not cached."""
        key = self.rpm_key(pkg)[:32]
        unsigned_dir = self.workdir / "rpms" / key
        unsigned = unsigned_dir / pkg.filename
        if not unsigned.exists():
            with atomic.temp_dir(unsigned_dir) as staging:
                self._build(pkg, staging / pkg.filename)
        if sign_with is None:
            return unsigned
        signed_dir = self.workdir / "signed" / f"{key}-{sign_with.fingerprint[-16:]}"
        signed = signed_dir / pkg.filename
        if not signed.exists():
            with atomic.temp_dir(signed_dir) as staging:
                shutil.copyfile(unsigned, staging / pkg.filename)
                self.keyring.sign(sign_with, staging / pkg.filename)
        return signed

    def _build(self, pkg: Package, out: Path) -> None:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"rpm-{pkg.name}-", dir=self.workdir / "tmp"))
        try:
            tree = work / "tree"
            tree.mkdir()
            specfile.lay_out(pkg, tree, self.compiler.build)
            spec = work / f"{pkg.name}.spec"
            spec.write_text(specfile.render(pkg, tree))
            topdir = work / "top"
            (work / "rpmtmp").mkdir()
            command.run(
                [
                    "rpmbuild", "-bb", "--quiet",
                    "--target", RPMBUILD_TARGET[pkg.arch],
                    "--define", "_rpmformat 4",
                    "--define", "_binary_payload w19.zstdio",
                    "--define", f"_topdir {topdir}",
                    "--define", f"_tmppath {work / 'rpmtmp'}",
                    str(spec),
                ],
                env={"SOURCE_DATE_EPOCH": str(specfile.SOURCE_DATE_EPOCH), "LC_ALL": "C"},
                hint=f"see the generated spec file of {pkg.nevra}",
            )
            built = topdir / "RPMS" / pkg.arch / pkg.filename
            if not built.exists():
                raise FactoryError(f"rpmbuild did not write {built}", "check the target arch")
            shutil.copyfile(built, out)
            self.built += 1
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- repositories and keys -------------------------------------------------------------

    def repo(
        self, dest: Path, pkgs: Iterable[Package | Path], *, sign_with: GpgKey | None = None
    ) -> Path:
        """Copy the packages' RPMs into ``dest`` and run createrepo_c; returns ``dest``.

        Its baseurl is ``dest.as_uri()``. An item that is a Path (an RPM file made some
        other way, e.g. a tampered copy) is copied as it is. Calling it again on the same
        ``dest`` adds packages and regenerates the metadata.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for pkg in pkgs:
            src = pkg if isinstance(pkg, Path) else self.rpm(pkg, sign_with=sign_with)
            target = dest / src.name
            data = src.read_bytes()
            if target.exists() and target.read_bytes() != data:
                raise FactoryError(
                    f"repository {dest} already has a different {src.name}",
                    "give the two packages different versions or releases",
                )
            atomic.write_bytes(target, data)
        command.run(["createrepo_c", "--quiet", "--no-database", str(dest)])
        return dest

    def gpg_key(self, name: str) -> GpgKey:
        """A throwaway signing key without passphrase, made once per name."""
        return self.keyring.key(name)

    def close(self) -> None:
        """Stop helper processes (gpg-agents) this factory started."""
        self.keyring.close()


__all__ = ["Factory"]
