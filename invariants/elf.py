"""ELF facts, read once per file content with pyelftools.

:func:`facts` returns what the invariants and the loader model need from one file: class,
machine, type, PT_INTERP, DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1 and the x86
ISA bits of ``.note.gnu.property``. A file that starts like ELF but cannot be parsed yields
facts with ``error`` set, never an exception. ``PARSES`` counts the real parses.

Two caches keep parsing to once per content:

- in this process, by the file's identity (device, inode, size, mtime), so several
  invariants asking about one file stat it and nothing more;
- across runs, ``cache_dir()/elf-facts.sqlite``: facts by the content's sha256 (``None``
  rows: "not ELF"). The digest is computed (only for files that start with the ELF magic:
  hashing is far cheaper than parsing) unless the caller knows it, e.g. the stage step's
  record of a staged file (see :func:`invariants.check.check_tree`); then even the "not ELF"
  answer comes from the cache and the file is not opened at all. New rows are written by
  :func:`flush` (the check step calls it; also at exit), one transaction, so concurrent
  checks never see half a write; a row that does not decode is treated as missing.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import elftools
from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from fexstack import cores, paths

log = logging.getLogger("fexstack.elf")

MAGIC = b"\x7fELF"

# .note.gnu.property, GNU_PROPERTY_X86_ISA_1_* bits.
ISA_BASELINE = 1
ISA_V2 = 2
ISA_V3 = 4
ISA_V4 = 8
ISA_NAMES = ((ISA_V4, "x86-64-v4"), (ISA_V3, "x86-64-v3"), (ISA_V2, "x86-64-v2"),
             (ISA_BASELINE, "x86-64-baseline"))
# GNU_PROPERTY_X86_FEATURE_2_* bits that mean AVX-512 state (zmm registers, mask registers).
FEATURE2_ZMM = 1 << 5
FEATURE2_MASK = 1 << 11

DF_1_NODEFLIB = 0x800

PARSES = 0  # real parses done by this process (tests assert "once per file")
# what pyelftools raises on a malformed or truncated file (ELFParseError is an ELFError)
PARSE_ERRORS = (ELFError, ValueError, OSError)

StatKey = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
STORE = "elf-facts.sqlite"
# Bump when ElfFacts or the parse changes: rows of another version (or parsed by another
# pyelftools) are never handed back.
FACTS_VERSION = 1
_BATCH = 500  # digests per SELECT
PARALLEL_MIN = 256  # files to parse before forked processes pay for themselves
PARALLEL_CHUNK = 32  # files per task handed to a process
PARALLEL_MAX = 4  # processes at most (and no more than the usable cores)
_VERSION = f"{FACTS_VERSION}/pyelftools-{elftools.__version__}"

_CACHE: dict[StatKey, ElfFacts | None] = {}
_BY_SHA: dict[str, ElfFacts | None] = {}  # persistent rows seen (or made) by this process
# Per store (the cache folder may change within a process, e.g. in tests):
_PENDING: dict[Path, dict[str, ElfFacts | None]] = {}  # parsed here, not yet written
_ASKED: dict[Path, set[str]] = {}  # digests already looked up


@dataclass(frozen=True)
class ElfFacts:
    """What fexstack reads from one ELF file."""

    elf_class: int = 0  # 32 or 64
    machine: str = ""  # pyelftools' name, e.g. "EM_X86_64"
    machine_id: int = 0
    e_type: str = ""  # "ET_DYN", "ET_EXEC", "ET_REL", ...
    interp: str | None = None
    needed: tuple[str, ...] = ()
    soname: str | None = None
    rpath: str | None = None
    runpath: str | None = None
    flags_1: int = 0
    isa_needed: int = 0
    isa_used: int = 0
    feature2_needed: int = 0
    feature2_used: int = 0
    error: str | None = None

    @property
    def is_x86_64(self) -> bool:
        return self.error is None and self.elf_class == 64 and self.machine == "EM_X86_64"

    @property
    def is_i386(self) -> bool:
        return self.error is None and self.elf_class == 32 and self.machine == "EM_386"

    @property
    def is_dynamic(self) -> bool:
        return self.e_type in ("ET_DYN", "ET_EXEC")

    @property
    def isa_level(self) -> str | None:
        """The highest x86-64 ISA level the file says it needs, or None."""
        return isa_name(self.isa_needed)

    @property
    def needs_avx512(self) -> bool:
        return bool(self.isa_needed & ISA_V4) or bool(
            self.feature2_needed & (FEATURE2_ZMM | FEATURE2_MASK)
        )

    @property
    def arch(self) -> str:
        """A short human name: ``x86_64``, ``i386``, ``aarch64``, ``bpf``..."""
        names = {"EM_X86_64": "x86_64", "EM_386": "i386", "EM_AARCH64": "aarch64",
                 "EM_BPF": "bpf", "EM_ARM": "arm"}
        name = names.get(self.machine, self.machine or "unknown")
        if name == "x86_64" and self.elf_class == 32:
            return "x32"
        return name


def isa_name(bits: int) -> str | None:
    for bit, name in ISA_NAMES:
        if bits & bit:
            return name
    return None


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def facts(path: Path, sha256: str | None = None, key: StatKey | None = None) -> ElfFacts | None:
    """The facts of the regular file at ``path``, None when it is not ELF at all.

    Symlinks are followed (callers pass files, or a symlink resolved on purpose).
    ``sha256``: the file's content digest when the caller knows it for sure (it is not
    recomputed); ``key``: the file's :func:`stat_key` when the caller has just taken it.
    """
    if key is None:
        try:
            key = stat_key(os.stat(path))
        except OSError:
            return None
    if key in _CACHE:
        return _CACHE[key]
    result = _by_digest(path, sha256) if sha256 is not None else _by_content(path)
    _CACHE[key] = result
    return result


def preload(digests: Iterable[str]) -> None:
    """Fetch the stored facts of these contents in a few queries (before many facts())."""
    store = _store_path()
    asked = _ASKED.setdefault(store, set())
    wanted = sorted({d for d in digests if d not in _BY_SHA and d not in asked})
    if not wanted:
        return
    asked.update(wanted)
    db = _connect(store, create=False)
    if db is None:
        return
    try:
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start:start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT sha256, facts FROM facts WHERE version = ? AND sha256 IN ({marks})",
                (_VERSION, *chunk),
            ).fetchall()
            for sha, text in rows:
                _remember(str(sha), text)
    except sqlite3.Error as exc:
        log.warning("ELF facts cache %s unreadable (%s); parsing instead", store, exc)
    finally:
        db.close()


def not_elf(digests: Iterable[str]) -> None:
    """Contents known not to be ELF (their maker saw the first bytes: the extraction
    cache): no file holding one is opened or looked up. Not stored: whoever knows it
    tells it again, and 30,000 rows written on every check would cost more than that."""
    for sha256 in digests:
        _BY_SHA.setdefault(sha256, None)


def parse_many(files: Sequence[tuple[Path, str]]) -> None:
    """Parse the files whose content digest is known but whose facts are not (neither in
    this process nor in the store: call :func:`preload` first), in forked processes when
    there are many (pyelftools is pure Python); the facts are remembered as
    :func:`facts` would remember them, so its later calls read nothing."""
    global PARSES
    first: dict[str, str] = {}
    for file, digest in files:
        if digest not in _BY_SHA:
            first.setdefault(digest, os.fspath(file))
    items = sorted((name, digest) for digest, name in first.items())
    processes = _processes(len(items))
    if processes <= 1:
        for name, digest in items:
            _learn(digest, _parse(Path(name)))
        return
    chunks = [items[i:i + PARALLEL_CHUNK] for i in range(0, len(items), PARALLEL_CHUNK)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        for done in pool.map(_parse_chunk, chunks):
            for sha256, result in done:
                PARSES += result is not None  # as _parse_open counts: ELF files only
                _learn(sha256, result)


def _processes(jobs: int) -> int:
    """How many parsing processes for ``jobs`` files: 1 means parsing here."""
    return 1 if jobs < PARALLEL_MIN else cores.processes(PARALLEL_MAX, jobs)


def _parse_chunk(chunk: Sequence[tuple[str, str]]) -> list[tuple[str, ElfFacts | None]]:
    """Runs in a forked process: the facts of each (path, sha256)."""
    return [(sha256, _parse(Path(path))) for path, sha256 in chunk]


def flush() -> None:
    """Write the facts parsed since the last flush to the persistent store they were
    looked up in (one transaction: a concurrent reader sees all of them or none)."""
    while _PENDING:
        store, pending = _PENDING.popitem()
        rows = [(sha, _VERSION, _encode(f)) for sha, f in sorted(pending.items())]
        db = _connect(store, create=True)
        if db is None:
            continue
        try:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO facts (sha256, version, facts) VALUES (?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            log.warning("ELF facts cache %s not written (%s)", store, exc)
        finally:
            db.close()


def clear_cache() -> None:
    """Forget what this process knows (the persistent store stays; pending rows are kept
    for the next :func:`flush`)."""
    _CACHE.clear()
    _BY_SHA.clear()
    _ASKED.clear()


atexit.register(flush)


def _by_digest(path: Path, sha256: str) -> ElfFacts | None:
    if sha256 not in _BY_SHA:
        preload([sha256])
    if sha256 in _BY_SHA:
        return _BY_SHA[sha256]
    result = _parse(path)
    _learn(sha256, result)
    return result


def _by_content(path: Path) -> ElfFacts | None:
    """Only files with the ELF magic are hashed, then looked up, then parsed."""
    fh = _open_elf(path)
    if fh is None:
        return None
    with fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        preload([sha256])
        if sha256 in _BY_SHA:
            return _BY_SHA[sha256]
        fh.seek(0)
        result = _parse_open(fh)
    _learn(sha256, result)
    return result


def _learn(sha256: str, result: ElfFacts | None) -> None:
    """Remember a parse; facts with ``error`` are not stored (rare, and an error that came
    from this code rather than the file must not outlive the fix)."""
    _BY_SHA[sha256] = result
    if result is None or result.error is None:
        _PENDING.setdefault(_store_path(), {})[sha256] = result


def _encode(result: ElfFacts | None) -> str | None:
    return None if result is None else json.dumps(dataclasses.asdict(result), sort_keys=True)


def _remember(sha256: str, text: str | None) -> None:
    """Take a stored row into memory; one that does not decode is left out (a miss)."""
    if text is None:
        _BY_SHA[sha256] = None
        return
    try:
        data = json.loads(text)
        data["needed"] = tuple(data["needed"])
        loaded = ElfFacts(**data)
    except (ValueError, TypeError, KeyError):
        return
    if all(_well_typed(getattr(loaded, f.name), f.default) for f in _FIELDS) and all(
        isinstance(n, str) for n in loaded.needed
    ):
        _BY_SHA[sha256] = loaded


_FIELDS = dataclasses.fields(ElfFacts)


def _well_typed(value: object, default: object) -> bool:
    if default is None:
        return value is None or isinstance(value, str)
    return type(value) is type(default)


_STORE_PATHS: dict[tuple[str | None, ...], Path] = {}


def _store_path() -> Path:
    """``cache_dir()/elf-facts.sqlite``, remembered per environment (asked per file)."""
    env = tuple(os.environ.get(k) for k in ("FEXSTACK_CACHE", "XDG_CACHE_HOME", "HOME"))
    path = _STORE_PATHS.get(env)
    if path is None:
        path = _STORE_PATHS[env] = paths.cache_dir() / STORE
    return path


def _connect(path: Path, create: bool) -> sqlite3.Connection | None:
    """The store at ``path`` (None when it does not exist and ``create`` is False, or
    cannot be opened: the cache is an optimisation, never a reason to fail a check)."""
    if not create and not path.exists():
        return None
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60)
        db.execute("CREATE TABLE IF NOT EXISTS facts (sha256 TEXT PRIMARY KEY, "
                   "version TEXT NOT NULL, facts TEXT)")
    except (OSError, sqlite3.Error) as exc:
        log.warning("ELF facts cache %s unusable (%s)", path, exc)
        if db is not None:
            db.close()
        return None
    return db


# Dynamic tags whose value is a string, and the attribute pyelftools gives it.
_STRING_TAGS = {"DT_SONAME": "soname", "DT_RPATH": "rpath", "DT_RUNPATH": "runpath"}


def _tag_string(tag: Any, attribute: str) -> str:
    """The string value of a dynamic tag (pyelftools sets these attributes at run time)."""
    return str(getattr(tag, attribute))


def _parse(path: Path) -> ElfFacts | None:
    fh = _open_elf(path)
    if fh is None:
        return None
    with fh:
        return _parse_open(fh)


def _open_elf(path: Path) -> io.BufferedReader | None:
    """``path`` opened for reading when it starts with the ELF magic, else None (the
    magic is read unbuffered: most files are not ELF, and a buffered read fetches 128 KiB)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.pread(fd, 4, 0) != MAGIC:
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _parse_open(fh: io.BufferedReader) -> ElfFacts:
    global PARSES
    PARSES += 1
    try:
        return _read(ELFFile(fh))
    except PARSE_ERRORS as exc:
        return ElfFacts(error=f"{type(exc).__name__}: {exc}".strip())


def _read(elf: ELFFile) -> ElfFacts:
    out: dict[str, Any] = {
        "elf_class": elf.elfclass,
        "machine": str(elf["e_machine"]),
        "machine_id": _machine_id(elf),
        "e_type": str(elf["e_type"]),
    }
    needed: list[str] = []
    for seg in elf.iter_segments():
        kind = seg["p_type"]
        if kind == "PT_INTERP" and isinstance(seg, InterpSegment):
            out["interp"] = seg.get_interp_name()
        elif kind == "PT_DYNAMIC" and isinstance(seg, DynamicSegment):
            for tag in seg.iter_tags():
                name = tag.entry.d_tag
                if name == "DT_NEEDED":
                    needed.append(_tag_string(tag, "needed"))
                elif name in _STRING_TAGS:
                    out[_STRING_TAGS[name]] = _tag_string(tag, _STRING_TAGS[name])
                elif name == "DT_FLAGS_1":
                    out["flags_1"] = int(tag.entry.d_val)
    out["needed"] = tuple(needed)
    out.update(_properties(elf))
    return ElfFacts(**out)


def _machine_id(elf: ELFFile) -> int:
    elf.stream.seek(18)
    raw: bytes = elf.stream.read(2)
    return int.from_bytes(raw, "little" if elf.little_endian else "big")


def _properties(elf: ELFFile) -> dict[str, int]:
    """x86 ISA/feature bits from NT_GNU_PROPERTY_TYPE_0 notes (section, else segments)."""
    found = {"isa_needed": 0, "isa_used": 0, "feature2_needed": 0, "feature2_used": 0}
    names = {
        "GNU_PROPERTY_X86_ISA_1_NEEDED": "isa_needed",
        "GNU_PROPERTY_X86_ISA_1_USED": "isa_used",
        "GNU_PROPERTY_X86_FEATURE_2_NEEDED": "feature2_needed",
        "GNU_PROPERTY_X86_FEATURE_2_USED": "feature2_used",
    }
    sources: list[Any] = []
    section = elf.get_section_by_name(".note.gnu.property")
    if section is not None:
        sources.append(section)
    else:
        sources += [s for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"]
    for source in sources:
        for note in source.iter_notes():
            if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0":
                continue
            for prop in note["n_desc"]:
                key = names.get(str(prop["pr_type"]))
                if key is not None and isinstance(prop["pr_data"], int):
                    found[key] |= prop["pr_data"]
    return found


PF_X = 0x1


def exec_stack(path: Path) -> bool | None:
    """Whether the ELF file asks for an executable stack: PT_GNU_STACK with PF_X, or no
    PT_GNU_STACK at all (x86_64's default is then executable). glibc 2.41+ refuses to
    dlopen such a library. None when ``path`` is not a readable ELF file."""
    fh = _open_elf(path)
    if fh is None:
        return None
    with fh:
        try:
            for segment in ELFFile(fh).iter_segments():
                if segment["p_type"] == "PT_GNU_STACK":
                    return bool(segment["p_flags"] & PF_X)
        except PARSE_ERRORS:
            return None
    return True
