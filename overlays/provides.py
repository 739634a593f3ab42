"""Which packages of a stack's repositories provide a file, a file pattern or a soname.

The runtime audit (``runner/suggest.py``) turns what a run missed into questions: who
ships ``/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstpng.so`` (a file, or a glob), who
provides ``libgstreamer-1.0.so.0()(64bit)`` (rpm's soname provide). They are answered
here with libdnf5 on the stack's own repositories (the resolver's session, with the
repositories' full file lists loaded), with no host configuration.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import libdnf5

from fexstack import paths
from overlays import resolver
from overlays.stack import Stack

FILE = "file"  # an absolute path, or a glob of paths (*, ?, [...])
SONAME = "soname"  # a soname: provide ``<soname>()(64bit)`` on x86_64


@dataclass(frozen=True)
class Question:
    kind: str  # FILE or SONAME
    value: str

    @property
    def capability(self) -> str:
        """The rpm capability asked for (a soname provide, or the path itself)."""
        if self.kind == SONAME:
            return f"{self.value}()(64bit)"
        return self.value


@dataclass(frozen=True)
class Answer:
    question: Question
    packages: tuple[str, ...]  # package names, sorted; the same file in several: all
    files: tuple[str, ...] = ()  # the matching payload paths (file questions)


def _is_glob(value: str) -> bool:
    return any(c in value for c in "*?[")


def _ask(session: resolver._Session, question: Question) -> Answer:
    query = libdnf5.rpm.PackageQuery(session.base)
    query.filter_available()
    if question.kind == SONAME:
        query.filter_provides([question.capability])
        return Answer(question, tuple(sorted({p.get_name() for p in query})))
    cmp = libdnf5.common.QueryCmp_GLOB if _is_glob(question.value) else libdnf5.common.QueryCmp_EQ
    query.filter_file([question.value], cmp)
    names: set[str] = set()
    files: set[str] = set()
    for pkg in query:
        names.add(pkg.get_name())
        if _is_glob(question.value):
            files.update(f for f in pkg.get_files() if fnmatch.fnmatchcase(f, question.value))
        else:
            files.add(question.value)
    return Answer(question, tuple(sorted(names)), tuple(sorted(files)))


def providers(
    stack: Stack, questions: Sequence[Question], progress: resolver.Progress
) -> list[Answer]:
    """The packages of ``stack``'s repositories (its release and arch) answering each
    question, in the questions' order."""
    if not questions:
        return []
    request = resolver.Request(
        stack=stack.name, release=stack.release, arch=stack.arch, repos=tuple(stack.repos),
        seeds=dict(stack.seeds),
    )  # fmt: skip
    scratch = paths.cache_dir() / "dnf"
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="provides.", dir=scratch))
    try:
        progress(f"loading repositories ({', '.join(r.id for r in stack.repos)}) with file lists")
        session = resolver._Session(request, work, progress, filelists=True)
        session.load(system=False)
        return [_ask(session, q) for q in questions]
    finally:
        shutil.rmtree(work, ignore_errors=True)
