"""Debian control data as RPM metadata: versions as EVRs, relations as rpm dependencies.

Versions: ``[epoch:]upstream[-revision]`` becomes Epoch ``epoch`` (none when absent),
Version ``upstream`` (``-`` and ``:``, which rpm forbids there, become ``_``) and Release
``revision`` (``0`` for a native package). ``~`` keeps its meaning in rpm.

Relations: ``a (>= 1.2-3)`` becomes ``a >= 1.2-3``; ``<<`` and ``>>`` become ``<`` and
``>``; an alternative ``a | b (<< 2)`` becomes the rich dependency ``(a or b < 2)``;
architecture qualifiers (``:any``, ``:amd64``) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.realworld.apt import CorpusError

_OPS = {">=": ">=", "<=": "<=", "=": "=", ">>": ">", "<<": "<", ">": ">=", "<": "<="}
_ATOM = re.compile(
    r"^\s*([a-z0-9][a-z0-9+.\-]*)(?::[a-z0-9-]+)?"  # name, architecture qualifier
    r"\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?\s*$"  # (op version)
)


@dataclass(frozen=True)
class Evr:
    epoch: int | None
    version: str
    release: str | None  # None in a relation without a Debian revision


def parse_version(text: str, *, relation: bool = False) -> Evr:
    """The RPM EVR of a Debian version (``relation``: a revision-less one stays so)."""
    text = text.strip()
    epoch: int | None = None
    if ":" in text:
        head, text = text.split(":", 1)
        if not head.isdigit():
            raise CorpusError(f"bad Debian version epoch {head!r}", None)
        epoch = int(head)
    if "-" in text:
        upstream, revision = text.rsplit("-", 1)
    else:
        upstream, revision = text, ("" if relation else "0")
    version = upstream.replace("-", "_").replace(":", "_")
    if not version or not re.fullmatch(r"[A-Za-z0-9.+~_]+", version):
        raise CorpusError(f"Debian version {text!r} has no RPM form", None)
    return Evr(epoch, version, revision or None)


def evr_text(evr: Evr) -> str:
    prefix = f"{evr.epoch}:" if evr.epoch is not None else ""
    suffix = f"-{evr.release}" if evr.release else ""
    return f"{prefix}{evr.version}{suffix}"


def _atom(text: str) -> str:
    match = _ATOM.match(text)
    if not match:
        raise CorpusError(f"cannot read the Debian relation {text!r}", None)
    name, op, version = match[1], match[2], match[3]
    if op is None:
        return name
    if op not in _OPS:
        raise CorpusError(f"unknown relation operator {op!r} in {text!r}", None)
    return f"{name} {_OPS[op]} {evr_text(parse_version(version, relation=True))}"


def relations(field: str) -> list[str]:
    """rpm dependencies for a Depends/Pre-Depends/Provides field, in field order."""
    out: list[str] = []
    for group in field.split(","):
        if not group.strip():
            continue
        alternatives = [_atom(a) for a in group.split("|")]
        unique = list(dict.fromkeys(alternatives))
        out.append(unique[0] if len(unique) == 1 else "(" + " or ".join(unique) + ")")
    return list(dict.fromkeys(out))


def parse_control(text: str) -> dict[str, str]:
    """The fields of a binary package's control file (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key is not None:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields
