"""The invariants report: ``build/<name>/invariants.json`` and the text a person acts on.

:func:`write_report` (the check step) is its one writer, :meth:`Report.read` its one
reader; both validate against the ``invariants`` schema. The image step records the
report's digest in the manifest and publish ships its bytes, neither reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack import jsonio
from fexstack.errors import CheckError
from invariants.context import Finding

SCHEMA = "invariants"
FORMAT = "fexstack-invariants/1"
SHOWN = 8  # findings spelled out in the summary


@dataclass(frozen=True)
class Report:
    tree: str
    stack_class: str
    layers: tuple[dict[str, str], ...]
    invariants: Mapping[str, dict[str, Any]]  # name -> letter, title, policy, status, counts
    findings: tuple[Finding, ...]  # sorted by invariant, path, detail
    warnings: tuple[str, ...]
    elf: Mapping[str, dict[str, Any]]
    linkability: tuple[dict[str, Any], ...]
    dropped: tuple[dict[str, str], ...] = ()  # tool executables the stage step left out

    @property
    def failed(self) -> bool:
        return any(inv["status"] == "fail" for inv in self.invariants.values())

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "tree": self.tree,
            "class": self.stack_class,
            "failed": self.failed,
            "layers": list(self.layers),
            "invariants": dict(self.invariants),
            "findings": [f.as_json() for f in self.findings],
            "warnings": list(self.warnings),
            "elf": dict(self.elf),
            "linkability": list(self.linkability),
            "dropped": list(self.dropped),
        }

    @classmethod
    def read(cls, path: Path) -> Report:
        """The report the check step wrote (its one reader: the task layer's up-to-date
        test), validated; a missing or malformed one is a :class:`CheckError`."""
        doc = jsonio.read_record(
            path,
            SCHEMA,
            error=CheckError,
            what="invariants report",
            hint=f"check the tree again: doit check:{path.parent.name}",
        )
        return cls(
            tree=doc["tree"],
            stack_class=doc["class"],
            layers=tuple(doc["layers"]),
            invariants=doc["invariants"],
            findings=tuple(Finding(**f) for f in doc["findings"]),
            warnings=tuple(doc["warnings"]),
            elf=doc["elf"],
            linkability=tuple(doc["linkability"]),
            dropped=tuple(doc.get("dropped", ())),
        )

    def summary(self, shown: int = SHOWN) -> str:
        """Counts per invariant, then the first failures (else findings) with hints."""
        verdict = "FAILED" if self.failed else "passed"
        lines = [f"invariants {verdict} for {self.tree} (class {self.stack_class})"]
        for name, inv in self.invariants.items():
            counts = inv["counts"]
            extra = ", ".join(f"{counts[k]} {k}" for k in ("fail", "accounted", "reported")
                              if counts[k])
            letter = f"{inv['letter']} " if inv["letter"] else ""
            lines.append(f"  {letter}{name}: {inv['status']} ({inv['policy']})"
                         + (f": {extra}" if extra else ""))
        programs = [d for d in self.dropped if d.get("type") != "dir"]
        if programs:
            lines.append(f"  dropped {len(programs)} tool executable(s), as the FEX RootFS "
                         "does (x86 processes run the host's); keep one with "
                         "[[policy.keep_executable]]:")
            for row in programs[:shown]:
                lines.append(f"    {row['path']} [package {row['package']}]: "
                             f"{row.get('host', 'host unknown')}")
            if len(programs) > shown:
                lines.append(f"    ... and {len(programs) - shown} more (see the JSON report)")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        listed = self.failures() or [f for f in self.findings if f.status == "reported"]
        for finding in listed[:shown]:
            owner = f" [package {finding.package}]" if finding.package else ""
            detail = finding.detail
            if finding.path not in detail:
                detail = f"{finding.path}: {detail}"
            lines.append(f"{finding.status}: {finding.invariant}: {detail}{owner}")
            if finding.hint:
                lines.append("  hint: " + finding.hint.replace("\n", "\n    "))
        if len(listed) > shown:
            lines.append(f"... and {len(listed) - shown} more (see the JSON report)")
        return "\n".join(lines)


def write_report(report: Report, path: Path) -> None:
    """Validate against invariants.schema.json and write sorted JSON atomically."""
    jsonio.write(path, report.as_json(), SCHEMA)


def raise_on_failure(report: Report) -> None:
    """Raise CheckError (message: the summary) when an enforced invariant failed."""
    if report.failed:
        raise CheckError(
            report.summary(),
            "fix the stack (seeds, excludes) or add a [[policy.waiver]] with a reason for a "
            "finding that is acceptable",
        )
