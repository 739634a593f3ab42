"""Where a run leaves its evidence, and how: ``evidence/<app>/<UTC timestamp>/``.

Every run, also one stopped by preflight, writes three files: ``run.log`` (what was
printed, raw), ``inputs.json`` (the expanded profile verbatim, resolved paths, image
hashes, tool versions, host facts) and ``run.report.json`` (how it ended). The directory
is created with a single mkdir (a second run in the same second gets ``-2``, ``-3``);
``inputs.json`` and the report are written atomically and the report comes last, so a
directory with a report is a finished run. ``--out-dir`` puts the same files there.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fexstack import jsonio
from fexstack.errors import RunError

LOG_NAME = "run.log"
REPORT_NAME = "run.report.json"
INPUTS_NAME = "inputs.json"
REPORT_SCHEMA = "run-report"
INPUTS_SCHEMA = "inputs"
EVIDENCE_ENV = "FEXSTACK_EVIDENCE"


class Outcome(enum.StrEnum):
    """How a run ended: run.report.json's ``outcome`` (its schema's enum)."""

    PASS = "PASS"  # exited 0 (or reached --ready)
    FAIL = "FAIL"  # the app failed or timed out
    INFRA = "INFRA"  # the run never reached the app
    WINDOW_SEEN = "WINDOW_SEEN"  # a GUI app showed its window and was ended by the timeout

    @property
    def ok(self) -> bool:
        """The app ran as asked (a GUI app that never exits counts once its window shows)."""
        return self in (Outcome.PASS, Outcome.WINDOW_SEEN)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Evidence:
    """The evidence directory of one run and its files."""

    dir: Path

    @property
    def log(self) -> Path:
        return self.dir / LOG_NAME

    @property
    def report(self) -> Path:
        return self.dir / REPORT_NAME

    @property
    def inputs(self) -> Path:
        return self.dir / INPUTS_NAME

    def append_log(self, text: str) -> None:
        """Add a section of fexstack's own text (not the app's) to run.log."""
        with open(self.log, "ab") as fh:
            fh.write(text.encode("utf-8"))
            if not text.endswith("\n"):
                fh.write(b"\n")

    def write_inputs(self, inputs: dict[str, Any]) -> None:
        jsonio.write(self.inputs, inputs, INPUTS_SCHEMA)

    def write_report(self, report: dict[str, Any]) -> None:
        jsonio.write(self.report, report, REPORT_SCHEMA)

    def read_report(self) -> dict[str, Any]:
        """``run.report.json``, validated: the one way the runner's A/B, bench, probe and
        suggest (and a build failure's note) read a finished run's report back; a missing
        or malformed one is a :class:`RunError` naming the file."""
        doc: dict[str, Any] = jsonio.read_record(
            self.report,
            REPORT_SCHEMA,
            error=RunError,
            what="run report",
            hint="the run did not finish writing its evidence; run the app again",
        )
        return doc


def timestamp(now: dt.datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ`` in UTC."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_root() -> Path:
    """``$FEXSTACK_EVIDENCE``, else ``evidence/`` in the current (project) directory."""
    explicit = os.environ.get(EVIDENCE_ENV)
    return Path(explicit).expanduser() if explicit else Path.cwd() / "evidence"


def create(
    app: str,
    *,
    out_dir: Path | None = None,
    root: Path | None = None,
    now: dt.datetime | None = None,
) -> Evidence:
    """Make the evidence directory of a new run of ``app`` and an empty run.log in it.

    With ``out_dir`` the files go there (it may exist, but must not hold a report).
    """
    if out_dir is not None:
        folder = Path(out_dir).absolute()
        folder.mkdir(parents=True, exist_ok=True)
        for name in (REPORT_NAME, INPUTS_NAME, LOG_NAME):
            (folder / name).unlink(missing_ok=True)
    else:
        parent = (root or default_root()).absolute() / (_SAFE.sub("_", app) or "app")
        parent.mkdir(parents=True, exist_ok=True)
        stamp = timestamp(now)
        folder = parent / stamp
        n = 1
        while True:
            try:
                folder.mkdir()
                break
            except FileExistsError:
                n += 1
                if n > 1000:
                    raise RunError(
                        f"cannot create an evidence directory in {parent}", None
                    ) from None
                folder = parent / f"{stamp}-{n}"
    ev = Evidence(folder)
    ev.log.write_bytes(b"")
    return ev


def announce(ev: Evidence, outcome: str, reason: str, stream: TextIO | None = None) -> str:
    """Print (and return) where the evidence of a run went."""
    text = f"{outcome}: {reason}\nevidence: {ev.dir}\n"
    out = stream or sys.stdout
    out.write(text)
    out.flush()
    return text
