"""The compiled schema check agrees with jsonschema, keyword by keyword and on real schemas."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fexstack import jsonio, schemacheck

CASES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", None, 10**30]),
    ({"type": ["string", "null"]}, ["a", None, 0, []]),
    ({"type": "number", "minimum": 0, "maximum": 10}, [0, -1, 10, 10.5, "x", False]),
    ({"exclusiveMinimum": 0, "exclusiveMaximum": 2.5}, [0, 0.1, 1, 2.5, 2.4, -1, "x", True]),
    ({"enum": [1, "a", None]}, [1, True, 1.0, "a", "b", None]),
    ({"const": False}, [False, 0, None]),
    ({"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-f]+$"},
     ["ab", "a", "abcd", "xy", "abc", 5]),
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}},
      "additionalProperties": False}, [{"a": 1}, {"a": "x"}, {}, {"a": 1, "b": 2}, []]),
    ({"type": "object", "additionalProperties": {"type": "string"},
      "propertyNames": {"pattern": "^/"}}, [{"/x": "y"}, {"x": "y"}, {"/x": 1}, {}]),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
     [[1], [], [1, 2, 3], ["a"], {}]),
    ({"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": {"type": "boolean"}},
     [[1, "a"], [1], [], ["a"], [1, "a", True], [1, "a", 2], [1, 2], "x"]),
    ({"type": "array", "prefixItems": [{"minimum": 1}], "minItems": 2, "maxItems": 2},
     [[1, "x"], [0, "x"], [5], [1, 2, 3]]),
    ({"uniqueItems": True},
     [["a", "b"], ["a", "a"], [1, True], [1, 1.0], [0, False], [[1], [1]], [{"a": 1}, {"a": 1}],
      [{"a": 1}, {"a": True}], [None, None], [], "aa"]),
    ({"type": "object", "properties": {"ab": {"type": "integer"}},
      "patternProperties": {"^a": {"minimum": 5}, "^x": {"type": "string"}},
      "additionalProperties": False}, [{"ab": 6}, {"ab": 4}, {"ac": 4}, {"ac": 9}, {"x": "s"},
                                       {"x": 1}, {"q": 1}]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 5}]}, [1, 6, 5.5, "x"]),
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, ["x", None, 1]),
    ({"allOf": [{"minimum": 1}, {"maximum": 2}], "not": {"const": 2}}, [1, 2, 3, 0]),
    ({"if": {"properties": {"kind": {"const": "file"}}},
      "then": {"required": ["size"]}, "else": {"required": ["target"]}},
     [{"kind": "file", "size": 1}, {"kind": "file"}, {"kind": "link", "target": "x"},
      {"kind": "link"}]),
    ({"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}},
                         "additionalProperties": False}}, "$ref": "#/$defs/node"},
     [{}, {"next": {}}, {"next": {"next": {"x": 1}}}, {"next": 1}]),
]


@pytest.mark.parametrize(("schema", "instances"), CASES)
def test_agrees_with_jsonschema(schema: dict[str, Any], instances: list[Any]) -> None:
    check = schemacheck.compile_schema(schema)
    reference = jsonschema.Draft202012Validator(schema)
    verdicts = [(instance, check(instance)) for instance in instances]
    assert verdicts == [(instance, reference.is_valid(instance)) for instance in instances]
    assert {v for _, v in verdicts} == {True, False}  # each case has both kinds


def test_unknown_keyword_is_left_to_jsonschema() -> None:
    with pytest.raises(schemacheck.Unsupported, match="multipleOf"):
        schemacheck.compile_schema({"items": {"multipleOf": 2}})


def _mutations(doc: Any) -> list[Any]:
    """``doc`` with one leaf at a time replaced by a value of another type."""
    out: list[Any] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(value, (dict, list)) and value:
                walk(value, (*path, key))
                continue
            changed = copy.deepcopy(doc)
            target = changed
            for part in path:
                target = target[part]
            target[key] = {"unexpected": True} if not isinstance(value, dict) else 7
            out.append(changed)

    walk(doc, ())
    return out[:400]


def test_real_schemas_compile_and_agree_on_mutated_documents() -> None:
    import invariants
    import overlays
    import runner

    registered = {Path(p.__file__).parent / "schemas" for p in (invariants, overlays, runner)}
    assert registered <= set(jsonio.SCHEMA_DIRS)
    doc = json.loads(jsonio.dumps({
        "format": 2, "rpm_sha256": "ab" * 32,
        "package": {"name": "x", "epoch": 0, "version": "1", "release": "1", "arch": "x86_64"},
        "files": {
            "/usr/lib64/libx.so.1": {"type": "file", "size": 3, "mode": 0o644,
                                     "sha256": "cd" * 32},
            "/usr/lib64/libx.so": {"type": "symlink", "mode": 0o777, "target": "libx.so.1"},
            "/usr/bin/x": {"type": "file", "size": 0, "mode": 0o4755, "sha256": "ef" * 32,
                           "setuid": True},
        },
        "ghosts": ["/var/log/x"], "setuid": ["/usr/bin/x"], "caps_dropped": {}, "fifos": [],
        "elf": ["cd" * 32],
    }))
    check = schemacheck.compile_schema(jsonio.schema("extracted"))
    reference = jsonschema.Draft202012Validator(jsonio.schema("extracted"))
    assert check(doc) and reference.is_valid(doc)
    mutated = _mutations(doc)
    assert len(mutated) > 15
    for candidate in mutated:
        assert check(candidate) == reference.is_valid(candidate), candidate
    dropped = [copy.deepcopy(doc) for _ in range(3)]
    del dropped[0]["files"]["/usr/bin/x"]["sha256"]  # a file needs its digest (if/then)
    del dropped[1]["files"]["/usr/lib64/libx.so"]["target"]
    dropped[2]["files"]["relative"] = {"type": "dir", "mode": 0o755}  # propertyNames
    assert [check(d) for d in dropped] == [reference.is_valid(d) for d in dropped] == [False] * 3
    for name in ("extracted", "owners", "stage", "manifest", "invariants", "run-report"):
        assert callable(schemacheck.compile_schema(jsonio.schema(name))), name


def test_every_shipped_schema_is_valid_against_the_metaschema() -> None:
    """Loading a schema does not check it (that costs every no-op build a tenth of a
    second): this does, for every schema of every package, and a broken one fails."""
    import invariants
    import overlays
    import runner
    import tasks

    folders = {Path(p.__file__).parent / "schemas" for p in (invariants, overlays, runner, tasks)}
    assert folders <= set(jsonio.SCHEMA_DIRS)
    paths = sorted(p for folder in jsonio.SCHEMA_DIRS for p in folder.glob("*.schema.json"))
    assert len(paths) >= 25
    for path in paths:
        loaded = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(loaded)
        assert jsonio.schema(path.name.removesuffix(".schema.json")) == loaded
    broken = {"type": "object", "properties": {"x": {"type": "strnig"}}}
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft202012Validator.check_schema(broken)


def test_jsonschema_is_imported_only_to_explain_a_refused_document(tmp_path: Path) -> None:
    """A valid record is checked by the compiled check alone (the read-back's listing child
    and every build start without jsonschema's tenth of a second); a refused one still gets
    jsonschema's first error, with the file and the place in the document."""
    import subprocess
    import sys

    record = tmp_path / "stage.json"
    record.write_text(json.dumps({"format": 1}))
    program = f"""
import sys
from pathlib import Path
from fexstack import jsonio
from fexstack.errors import StageError
import overlays
jsonio.validate({{"recipe": 1, "caches": []}}, "caches")
print("jsonschema" in sys.modules)
try:
    jsonio.read_record(Path({str(record)!r}), "stage", error=StageError, what="stage record",
                       hint="stage again")
except StageError as exc:
    print(exc.message)
print("jsonschema" in sys.modules)
"""
    def run() -> list[str]:
        done = subprocess.run([sys.executable, "-c", program], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parents[1])
        return done.stdout.splitlines()

    said = run()
    assert said[0] == "False"
    assert said[1].startswith(f"{record}: does not match the stage schema at (top): ")
    assert said[1].endswith("Additional properties are not allowed ('format' was unexpected)")
    assert said[2] == "True"


def test_listing_the_tasks_does_not_load_jsonschema() -> None:
    """`doit list` (the floor of every no-op) loads and checks every stack file and reads
    the step stamps, all valid here: the compiled check answers, jsonschema stays out."""
    import subprocess
    import sys

    program = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('loaded:', 'jsonschema' in sys.modules, file=sys.stderr))\n"
        "sys.argv = ['tasks', 'list']\n"
        "runpy.run_module('tasks', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "overlay:" in done.stdout  # it did list the stacks' tasks
    assert done.stderr.splitlines()[-1] == "loaded: False"
