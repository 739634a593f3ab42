"""Compiles fixture ELF files from generated C, really linked against their needed libraries.

Each library exports ``fixture_symbol(soname)`` (plus any extra ``symbols``) and calls one
function of each fixture library it needs, so every DT_NEEDED is a real link and rpm's
dependency generator sees real sonames and symbol versions. Results are cached under
``<workdir>/elf/<key>/`` where the key covers the spec, the specs of everything it links
against (recursively), the recipe version and the compilers' versions.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path

from fexstack import atomic, command
from testkit.factory.spec import (
    Elf,
    Executable,
    FactoryError,
    Library,
    digest,
    fixture_symbol,
)

RECIPE = "compiler-1"

EM_BPF = 247

# Toolchain root folders holding each machine's system libraries (libc.so.6, libm.so.6 ...).
SYSTEM_LIB_DIRS = {
    "x86_64": (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64")),
    "aarch64": (Path("/usr/aarch64-linux-gnu/lib"),),
    "i386": (),
    "bpf": (),
}

ISA_FLAGS = {"v2": "-Wl,-z,x86-64-v2", "v3": "-Wl,-z,x86-64-v3", "v4": "-Wl,-z,x86-64-v4"}


def _compiler(machine: str) -> list[str]:
    if machine == "aarch64":
        return ["aarch64-linux-gnu-gcc"]
    if machine == "i386":
        return ["gcc", "-m32"]
    return ["gcc"]


def _c_string(text: str) -> str:
    return json.dumps(text)


def _exit_asm(machine: str) -> str:
    if machine == "aarch64":
        return (
            '    register long x8 __asm__("x8") = 93;\n'
            '    register long x0 __asm__("x0") = 0;\n'
            '    __asm__ volatile("svc 0" : : "r"(x8), "r"(x0));\n'
        )
    return '    __asm__ volatile("int $0x80" : : "a"(1), "b"(0));\n'


class Compiler:
    """Builds :class:`Library` and :class:`Executable` specs into cached ELF files."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "elf"
        self.tmp = workdir / "tmp"
        self._libraries: dict[tuple[str, str], Library] = {}
        self._keys: dict[Elf, str] = {}
        self._toolchain: dict[str, str] = {}

    # -- registry of libraries that other ELF files may need ------------------------------

    def register(self, lib: Library) -> None:
        """Make ``lib`` the library linked for its soname (on its machine) from now on."""
        self._libraries[(lib.soname, lib.machine)] = lib

    def _resolve(self, soname: str, machine: str, owner: str) -> Library | str:
        """The toolchain's system library for ``soname``, else a fixture library.

        System libraries (libc.so.6, libm.so.6, libstdc++.so.6 ...) win, so a fixture that
        packages its own ``libc.so.6`` never changes what later ELF files link against. A
        soname that is neither gets a default ``Library(soname)``, so any DT_NEEDED can be
        produced.
        """
        for folder in SYSTEM_LIB_DIRS[machine]:
            if (folder / soname).exists():
                return str(folder / soname)
        lib = self._libraries.get((soname, machine))
        if lib is not None:
            if lib.machine == "bpf":
                raise FactoryError(f"{owner} needs {soname}, which is a bpf object", None)
            return lib
        if machine == "bpf":
            raise FactoryError(f"{owner}: bpf objects cannot need libraries", None)
        return Library(soname, machine=machine)

    def _toolchain_version(self, machine: str) -> str:
        if machine not in self._toolchain:
            self._toolchain[machine] = command.tool_version([*_compiler(machine), "--version"])
        return self._toolchain[machine]

    def key(self, spec: Elf, _stack: tuple[str, ...] = ()) -> str:
        """The cache key of ``spec`` (covers everything it links against)."""
        # Only leaves are memoized: a later registration may change what a soname means.
        cached = self._keys.get(spec)
        if cached is not None:
            return cached
        name = spec.soname if isinstance(spec, Library) else spec.path
        if name in _stack:
            raise FactoryError(
                f"libraries need each other in a cycle: {' -> '.join((*_stack, name))}",
                "fixture libraries must form a DAG",
            )
        deps: list[str] = []
        for soname in spec.needs:
            dep = self._resolve(soname, spec.machine, name)
            deps.append(self.key(dep, (*_stack, name)) if isinstance(dep, Library) else dep)
        key = digest(RECIPE, self._toolchain_version(spec.machine), spec, deps)
        if not spec.needs:
            self._keys[spec] = key
        return key

    # -- building --------------------------------------------------------------------------

    def build(self, spec: Elf) -> Path:
        """The cached ELF file for ``spec``, compiling it (and its needs) if missing."""
        key = self.key(spec)
        name = posixpath.basename(spec.install_path)
        out_dir = self.root / key
        out = out_dir / name
        if out.exists():
            return out
        self.tmp.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="cc-", dir=self.tmp))
        try:
            with atomic.temp_dir(out_dir) as staging:
                self._compile(spec, work, staging / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out

    def _link_inputs(self, spec: Elf, work: Path) -> tuple[list[str], list[str], Path]:
        """Argv pieces for the needed libraries, their symbols, and the rpath-link folder."""
        owner = spec.soname if isinstance(spec, Library) else spec.path
        linkdir = work / "link"
        linkdir.mkdir()
        args: list[str] = []
        symbols: list[str] = []
        pending: list[tuple[str, bool]] = [(s, True) for s in spec.needs]
        seen: set[str] = set()
        while pending:
            soname, direct = pending.pop(0)
            dep = self._resolve(soname, spec.machine, owner)
            if isinstance(dep, str):
                if direct:
                    args += [f"-L{posixpath.dirname(dep)}", f"-l:{soname}"]
                continue
            if soname in seen:
                continue
            seen.add(soname)
            built = self.build(dep)
            link = linkdir / soname
            if not link.exists():
                link.symlink_to(built)
            if direct:
                args.append(str(link))
                symbols.append(_symbol_of(dep))
            pending += [(s, False) for s in dep.needs]
        return args, symbols, linkdir

    def _compile(self, spec: Elf, work: Path, out: Path) -> None:
        machine = spec.machine
        if isinstance(spec, Library) and machine == "bpf":
            if spec.needs or spec.runpath or spec.rpath:
                raise FactoryError(
                    f"bpf object {spec.soname}: needs, runpath and rpath do not apply", None
                )
            source = work / "prog.c"
            source.write_text(_library_source(spec, []))
            command.run(["gcc", "-c", "-O1", "-fPIC", "-o", out, source.name], cwd=work)
            _set_machine(out, EM_BPF)
            return
        link_args, symbols, linkdir = self._link_inputs(spec, work)
        argv = [*_compiler(machine), "-O1", "-fPIC", "-w"]
        if machine != "x86_64":
            argv.append("-nostdlib")
        if isinstance(spec, Library):
            source = work / "lib.c"
            source.write_text(_library_source(spec, symbols))
            argv += ["-shared", f"-Wl,-soname,{spec.soname}"]
        else:
            source = work / "main.c"
            source.write_text(_executable_source(spec, symbols))
            argv.append(f"-Wl,--dynamic-linker={spec.pt_interp}")
            if machine != "x86_64":
                argv += ["-Wl,-e,_start"]
        if spec.runpath is not None and spec.rpath is not None:
            raise FactoryError(
                f"{spec.install_path}: set runpath or rpath, not both",
                "the linker writes one of DT_RUNPATH and DT_RPATH",
            )
        if spec.runpath is not None:
            argv += ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{spec.runpath}"]
        if spec.rpath is not None:
            argv += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{spec.rpath}"]
        if spec.isa_level is not None:
            argv.append(ISA_FLAGS[spec.isa_level])
        argv += ["-Wl,--build-id=sha1", "-Wl,--hash-style=gnu"]
        argv += ["-o", str(out), source.name, "-Wl,--no-as-needed", *link_args]
        argv.append(f"-Wl,-rpath-link,{linkdir}")
        command.run(argv, cwd=work, hint="the generated C or link flags are wrong")


def _symbol_of(lib: Library) -> str:
    return fixture_symbol(lib.soname)


def _library_source(lib: Library, dep_symbols: list[str]) -> str:
    lines = [f"/* fexstack fixture library {lib.soname} */"]
    lines += [f"extern int {s}(void);" for s in dep_symbols]
    calls = "".join(f" + {s}()" for s in dep_symbols)
    lines.append(f"int {fixture_symbol(lib.soname)}(void) {{ return 1{calls}; }}")
    lines += [f"int {s}(void) {{ return 0; }}" for s in lib.symbols]
    if lib.source:
        lines.append(lib.source)
    return "\n".join(lines) + "\n"


def _executable_source(exe: Executable, dep_symbols: list[str]) -> str:
    decls = "".join(f"extern int {s}(void);\n" for s in dep_symbols)
    calls = "".join(f"    r += {s}();\n" for s in dep_symbols)
    if exe.machine != "x86_64":
        if exe.main:
            raise FactoryError(f"executable {exe.path}: main only applies to x86_64", None)
        return (
            f"/* fexstack fixture executable {exe.path} ({exe.machine}) */\n{decls}"
            f"void _start(void) {{\n    int r = 0;\n{calls}    (void)r;\n"
            f"{_exit_asm(exe.machine)}    for (;;) {{}}\n}}\n"
        )
    body = exe.main or (
        f"    int r = 0;\n{calls}    (void)r;\n"
        f'    printf("%s ok\\n", {_c_string(exe.path)});\n    return 0;\n'
    )
    return (
        f"/* fexstack fixture executable {exe.path} */\n"
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
        f"{decls}int main(int argc, char **argv) {{\n    (void)argc; (void)argv;\n{body}\n}}\n"
    )


def _set_machine(path: Path, machine: int) -> None:
    """Overwrite e_machine (little-endian ELF) in place."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF" or data[5] != 1:
        raise FactoryError(f"{path} is not a little-endian ELF file", None)
    data[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    os.chmod(path, 0o644)


__all__ = ["Compiler"]
