"""Evidence as sorted JSON, validated against the JSON Schemas shipped with fexstack."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema

from fexstack import atomic

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
    """The schema ``<name>.schema.json`` from any package's ``schemas/`` folder."""
    for folder in SCHEMA_DIRS:
        path = folder / f"{name}.schema.json"
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text())
            jsonschema.Draft202012Validator.check_schema(loaded)
            return loaded
    raise KeyError(f"no schema named {name!r} in {', '.join(map(str, SCHEMA_DIRS))}")


def validate(obj: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` if ``obj`` does not match the schema."""
    jsonschema.Draft202012Validator(schema(schema_name)).validate(obj)


def validating_bulk() -> bool:
    """Whether bulk documents are validated too (``FEXSTACK_VALIDATE=1``; the tests set it)."""
    return os.environ.get("FEXSTACK_VALIDATE", "") == "1"


def write(path: Path, obj: Any, schema_name: str | None = None, *, bulk: bool = False) -> None:
    """Validate (when a schema is named) and write ``obj`` atomically as sorted JSON.

    ``bulk`` marks a document whose size grows with the number of files in a tree (an
    extracted package's file list, owners.json, a manifest): validating 30,000 entries
    with jsonschema costs seconds per build, so those are validated only when
    :func:`validating_bulk` (always in the test suite, where every writer is exercised).
    """
    if schema_name is not None and (not bulk or validating_bulk()):
        validate(obj, schema_name)
    atomic.write_text(path, dumps(obj))


def read(path: Path) -> Any:
    return json.loads(path.read_text())
