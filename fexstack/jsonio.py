"""Evidence as sorted JSON, validated against the JSON Schemas shipped with fexstack."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fexstack import atomic, schemacheck
from fexstack.errors import FexstackError

if TYPE_CHECKING:
    import jsonschema

# The schema folders, each registered by the package that owns it (its __init__.py):
# this module knows nothing of the packages above it.
SCHEMA_DIRS: list[Path] = []


def register_schemas(folder: Path) -> None:
    """Make the ``<name>.schema.json`` files in ``folder`` known to :func:`schema`."""
    folder = Path(folder).resolve()
    if folder not in SCHEMA_DIRS:
        SCHEMA_DIRS.append(folder)


def dumps(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """The schema ``<name>.schema.json`` from any package's ``schemas/`` folder.

    The schemas ship with fexstack: tests/test_schemacheck.py checks every one against the
    JSON Schema metaschema, so loading one does not (a tenth of a second per no-op build)."""
    for folder in SCHEMA_DIRS:
        path = folder / f"{name}.schema.json"
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
    raise KeyError(f"no schema named {name!r} in {', '.join(map(str, SCHEMA_DIRS))}")


@functools.cache
def _compiled(name: str) -> schemacheck.Check | None:
    try:
        return schemacheck.compile_schema(schema(name))
    except schemacheck.Unsupported:
        return None


def validate(obj: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` if ``obj`` does not match the schema.

    Every document is checked in full, in the build as in the tests: the schema compiled
    into plain checks (:mod:`fexstack.schemacheck`, microseconds per file entry) decides,
    and jsonschema is asked only for the error of a document the check refuses.
    """
    problem = schema_error(obj, schema_name)
    if problem is not None:
        raise problem


def schema_error(obj: Any, schema_name: str) -> jsonschema.ValidationError | None:
    """What is wrong with ``obj`` against the schema (jsonschema's first error), or None.

    jsonschema is imported only here, for a document the compiled check refuses (a
    tenth of a second that a build whose documents are all valid never pays)."""
    check = _compiled(schema_name)
    if check is not None and check(obj):
        return None
    import jsonschema  # here only: see above

    errors = jsonschema.Draft202012Validator(schema(schema_name)).iter_errors(obj)
    return next(iter(errors), None)  # the one Validator.validate would raise


def mismatch(problem: jsonschema.ValidationError, schema_name: str) -> str:
    """``does not match the <schema> schema at <where>: <what>``: a :func:`schema_error`
    in the words every record's reader and writer uses."""
    location = "/".join(str(p) for p in problem.absolute_path) or "(top)"
    return f"does not match the {schema_name} schema at {location}: {problem.message}"


def write(path: Path, obj: Any, schema_name: str | None = None, *, durable: bool = True) -> None:
    """Validate (when a schema is named) and write ``obj`` atomically as sorted JSON
    (``durable``: see :func:`fexstack.atomic.write_bytes`)."""
    if schema_name is not None:
        validate(obj, schema_name)
    atomic.write_text(path, dumps(obj), durable=durable)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def read_record(
    path: Path, schema_name: str, *, error: type[FexstackError], what: str, hint: str
) -> Any:
    """The document of a typed record's file, validated against ``schema_name``.

    The one way a record's reader loads its file: a missing, unreadable, non-JSON or
    schema-violating file raises ``error`` naming the file, what it should hold (``what``)
    and, for a schema violation, where in the document; ``hint`` says how to make it again.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{path}: no {what}", hint) from exc
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}", hint) from exc
    except ValueError as exc:  # also UnicodeDecodeError
        raise error(f"{path}: not valid JSON ({what}): {exc}", hint) from exc
    problem = schema_error(doc, schema_name)
    if problem is not None:
        raise error(f"{path}: {mismatch(problem, schema_name)}", hint) from problem
    return doc
