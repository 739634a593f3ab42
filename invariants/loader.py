"""A model of glibc's dynamic loader searching a merged view (glibc 2.37 and later).

For a needed name without a slash, in order (``elf/dl-load.c``, ``_dl_map_object``):

1. DT_RPATH, only when the requesting object has no DT_RUNPATH: the requesting object's,
   then that of the object that loaded it, and on up the chain, then the main
   executable's (objects that have a DT_RUNPATH contribute no DT_RPATH);
2. LD_LIBRARY_PATH (``$ORIGIN`` in it is the main executable's directory);
3. the requesting object's own DT_RUNPATH;
4. /etc/ld.so.cache of the view (skipped for a DF_1_NODEFLIB object's default dirs);
5. the default directories (``lib_dirs``), unless the object is DF_1_NODEFLIB.

In every directory of steps 1, 2, 3 and 5 the supported ``glibc-hwcaps/<level>``
subdirectories are tried first, most preferred first. ``$ORIGIN`` is the directory of
the path the loader opened (not normalized, symlinks not resolved), except for the main
executable, whose origin the kernel gives as its real path. A candidate of the wrong ELF
class or machine is skipped and the search goes on; a file that is not ELF stops the
load. Names already loaded (by the name asked for or by DT_SONAME, or the same file under
another name) are not searched again, and objects load breadth first, like glibc. The
loader itself is loaded first (PT_INTERP, or /lib64/ld-linux-x86-64.so.2 for a library),
so a DT_NEEDED of ``ld-linux-x86-64.so.2`` is satisfied by it without a search.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from invariants import elf
from invariants.view import View

DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64")
RTLD = "/lib64/ld-linux-x86-64.so.2"  # the x86_64 psABI's dynamic loader
# What FEX executes: x86-64 baseline, v2 and v3 (AVX-512 never), most preferred first.
FEX_HWCAPS = ("x86-64-v3", "x86-64-v2")
_DST = re.compile(r"\$(ORIGIN|LIB|PLATFORM)\b|\$\{(ORIGIN|LIB|PLATFORM)\}")


@dataclass(frozen=True)
class Search:
    """The loader's fixed settings for one view."""

    lib_dirs: tuple[str, ...] = DEFAULT_LIB_DIRS
    ld_library_path: tuple[str, ...] = ()
    hwcaps: tuple[str, ...] = FEX_HWCAPS
    lib: str = "lib64"
    platform: str = "x86_64"


@dataclass(frozen=True)
class Resolution:
    """How one DT_NEEDED entry of one object was satisfied (``path`` None: it was not)."""

    soname: str
    needed_by: str
    path: str | None  # as the loader opened it (what ldd prints)
    real: str | None  # that path with symlinks resolved in the view
    via: str  # rpath, LD_LIBRARY_PATH, runpath, ld.so.cache, default, loaded, path, none
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        return {"soname": self.soname, "needed_by": self.needed_by, "path": self.path,
                "real": self.real, "via": self.via, "detail": self.detail}


@dataclass
class _Object:
    path: str
    real: str
    facts: elf.ElfFacts
    origin: str
    names: set[str] = field(default_factory=set)
    loader: _Object | None = None


@dataclass(frozen=True)
class Closure:
    """Everything a root object loads: resolutions in load order, and what was not found."""

    root: str
    resolutions: tuple[Resolution, ...]

    @property
    def missing(self) -> tuple[Resolution, ...]:
        return tuple(r for r in self.resolutions if r.path is None)

    def loaded(self) -> dict[str, str | None]:
        """Each newly loaded object's first name -> opened path (None: not found), i.e.
        the ``name => path`` lines of LD_TRACE_LOADED_OBJECTS."""
        return {r.soname: r.path for r in self.resolutions if r.via != "loaded"}


class Loader:
    """Resolves needed libraries in one merged view."""

    def __init__(self, view: View, search: Search | None = None) -> None:
        self.view = view
        self.search = search or Search()
        self._cache = view.ldcache()

    # -- public -----------------------------------------------------------------------------

    def closure(self, path: str, main: bool = True, direct: bool = False) -> Closure:
        """Load ``path`` (a view path) and, breadth first, everything it needs.

        ``main``: the object is the executable (its RPATH applies to every lookup and its
        origin is its real path); otherwise it is treated like a library opened by an
        executable that has no RPATH. ``direct``: stop after the object's own DT_NEEDED
        entries (breadth first, they are resolved before anything they load is looked at,
        so their resolutions are those of the whole closure).
        """
        resolved = self.view.resolve(path)
        facts = elf.facts(resolved.node.source) if resolved.node is not None else None
        if facts is None or facts.error is not None:
            return Closure(path, ())
        origin = posixpath.dirname(resolved.path if main else path)
        root = _Object(path, resolved.path, facts, origin, {path})
        if facts.soname:
            root.names.add(facts.soname)
        self._main = root if main else None
        loaded: list[_Object] = [root]
        missing: set[str] = set()
        # The dynamic loader itself is always loaded: the executable's PT_INTERP, or for a
        # library (opened by some executable, or listed with ``ld.so --list``) the x86_64
        # ABI's loader. A DT_NEEDED naming it is never searched.
        rtld_path = facts.interp if main and facts.interp else RTLD
        if rtld_path:
            interp = self.view.resolve(rtld_path)
            ifacts = elf.facts(interp.node.source) if interp.node is not None else None
            if ifacts is not None and ifacts.error is None:
                rtld = _Object(rtld_path, interp.path, ifacts,
                               posixpath.dirname(rtld_path), {rtld_path})
                if ifacts.soname:
                    rtld.names.add(ifacts.soname)
                loaded.append(rtld)
        out: list[Resolution] = []
        queue = [root]
        while queue:
            obj = queue.pop(0)
            for name in obj.facts.needed:
                known = _find_loaded(loaded, name)
                if known is not None:
                    out.append(Resolution(name, obj.path, known.path, known.real, "loaded"))
                    continue
                if name in missing:
                    out.append(Resolution(name, obj.path, None, None, "loaded", "not found"))
                    continue
                res, found = self._map(name, obj)
                if found is not None:
                    same = next((o for o in loaded if o.real == found.real), None)
                    if same is not None:
                        same.names.add(name)
                        res = Resolution(name, obj.path, same.path, same.real, "loaded")
                    else:
                        loaded.append(found)
                        queue.append(found)
                else:
                    missing.add(name)
                out.append(res)
            if direct:
                break
        return Closure(path, tuple(out))

    # -- the search -------------------------------------------------------------------------

    def _map(self, name: str, loader: _Object) -> tuple[Resolution, _Object | None]:
        tried: list[str] = []
        if "/" in name:
            return self._try_one(name, loader, name, "path", tried)
        if loader.facts.runpath is None:
            chain: list[_Object] = []
            obj: _Object | None = loader
            while obj is not None:
                chain.append(obj)
                obj = obj.loader
            if self._main is not None and self._main not in chain:
                chain.append(self._main)
            for owner in chain:
                if owner.facts.runpath is None and owner.facts.rpath:
                    dirs = self._dirs(owner.facts.rpath, owner.origin)
                    hit = self._search_dirs(name, dirs, loader, "rpath", tried)
                    if hit is not None:
                        return hit
        if self.search.ld_library_path:
            origin = self._main.origin if self._main is not None else None
            dirs = self._dirs(":".join(self.search.ld_library_path), origin, env=True)
            hit = self._search_dirs(name, dirs, loader, "LD_LIBRARY_PATH", tried)
            if hit is not None:
                return hit
        if loader.facts.runpath:
            dirs = self._dirs(loader.facts.runpath, loader.origin)
            hit = self._search_dirs(name, dirs, loader, "runpath", tried)
            if hit is not None:
                return hit
        nodeflib = bool(loader.facts.flags_1 & elf.DF_1_NODEFLIB)
        if self._cache is not None:
            cached = self._cache.lookup(name, self.search.hwcaps)
            if cached is not None and not (
                nodeflib and posixpath.dirname(cached) in self.search.lib_dirs
            ):
                hit = self._try(cached, loader, name, "ld.so.cache", tried)
                if hit is not None:
                    return hit
        if not nodeflib:
            hit = self._search_dirs(name, list(self.search.lib_dirs), loader, "default", tried)
            if hit is not None:
                return hit
        detail = "searched " + (", ".join(tried) if tried else "nothing")
        return Resolution(name, loader.path, None, None, "none", detail), None

    def _dirs(self, text: str, origin: str | None, env: bool = False) -> list[str]:
        out: list[str] = []
        for item in re.split(r"[:;]" if env else r":", text):
            if not item:
                continue
            if "$" in item:
                if origin is None and ("ORIGIN" in item):
                    continue
                subs = {"ORIGIN": origin or "", "LIB": self.search.lib,
                        "PLATFORM": self.search.platform}
                item = _DST.sub(lambda m, subs=subs: subs[m.group(1) or m.group(2)], item)
            if not item.startswith("/"):
                continue  # relative to the working directory: not modelled
            if len(item) > 1:
                item = item.rstrip("/") or "/"
            if item not in out:
                out.append(item)
        return out

    def _search_dirs(
        self, name: str, dirs: Sequence[str], loader: _Object, via: str, tried: list[str]
    ) -> tuple[Resolution, _Object | None] | None:
        for directory in dirs:
            prefix = "" if directory == "/" else directory
            for sub in (*(f"/glibc-hwcaps/{h}" for h in self.search.hwcaps), ""):
                hit = self._try(f"{prefix}{sub}/{name}", loader, name, via, tried)
                if hit is not None:
                    return hit
        return None

    def _try(
        self, candidate: str, loader: _Object, name: str, via: str, tried: list[str]
    ) -> tuple[Resolution, _Object | None] | None:
        """None to go on searching, else the outcome (found, or a load-stopping error)."""
        tried.append(candidate)
        found = self.view.resolve(candidate)
        if found.node is None or found.node.kind != "file":
            return None
        facts = elf.facts(found.node.source)
        if facts is None or facts.error is not None:
            why = "invalid ELF header" if facts is None else f"unreadable ELF: {facts.error}"
            return Resolution(name, loader.path, None, None, via,
                              f"{candidate}: {why} (the loader stops here)"), None
        if facts.elf_class != 64 or facts.machine != "EM_X86_64":
            tried[-1] = f"{candidate} (skipped: {facts.arch}, ELFCLASS{facts.elf_class})"
            return None
        obj = _Object(candidate, found.path, facts, posixpath.dirname(candidate), {name},
                      loader)
        if facts.soname:
            obj.names.add(facts.soname)
        return Resolution(name, loader.path, candidate, found.path, via), obj

    def _try_one(
        self, candidate: str, loader: _Object, name: str, via: str, tried: list[str]
    ) -> tuple[Resolution, _Object | None]:
        hit = self._try(candidate, loader, name, via, tried)
        if hit is not None:
            return hit
        return Resolution(name, loader.path, None, None, "none", f"{candidate} not found"), None


def _find_loaded(loaded: Sequence[_Object], name: str) -> _Object | None:
    for obj in loaded:
        if name in obj.names:
            return obj
    return None
