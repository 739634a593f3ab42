"""The invariants of RFC 0003 (A-E and linkability), checked before anything runs.

Entry points: :func:`invariants.check.check_tree`, :func:`invariants.report.write_report`,
:func:`invariants.report.raise_on_failure`; the base view (:mod:`invariants.view`), the
loader model (:mod:`invariants.loader`) and the compat overlay (:mod:`invariants.compat`).
Each invariant is one module with ``check(ctx) -> list[Finding]``, registered in
:mod:`invariants.registry` with its policy per artifact class.
"""

from pathlib import Path

from fexstack import jsonio

jsonio.register_schemas(Path(__file__).resolve().parent / "schemas")
