"""A JSON Schema compiled into plain Python checks, for the documents that grow with a tree.

jsonschema walks a schema anew for every instance: about 60 us per entry of a file list,
seconds per build for 30,000 files. :func:`compile_schema` turns a schema into nested
closures once; checking is then a few microseconds per entry, cheap enough to validate
every artifact on every build, exactly as the tests do. It answers only valid/invalid:
:func:`fexstack.jsonio.validate` asks jsonschema for the error message of a document this
check refuses, so the messages stay jsonschema's.

It supports the keywords fexstack's schemas use (the Draft 2020-12 subset below); a
schema with any other keyword is not compiled (:class:`Unsupported`), and jsonschema
checks its documents instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# Keywords that never affect validity.
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "$defs",
     "definitions", "deprecated", "readOnly", "writeOnly", "format"}
)
SUPPORTED = frozenset(
    {"type", "enum", "const", "properties", "patternProperties", "required",
     "additionalProperties", "prefixItems", "items", "uniqueItems",
     "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
     "minLength", "maxLength", "pattern",
     "propertyNames", "allOf", "oneOf", "anyOf", "not", "if", "then", "else", "$ref"}
)


class Unsupported(Exception):
    """The schema uses a keyword this module does not compile."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true and 1 differ, 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def compile_schema(root: Mapping[str, Any]) -> Check:
    """A function telling whether an instance is valid against ``root``."""
    refs: dict[str, Check] = {}

    def resolve(ref: str) -> Check:
        if not ref.startswith("#"):
            raise Unsupported(f"non-local $ref {ref}")
        if ref not in refs:
            target: Any = root
            for part in filter(None, ref[1:].split("/")):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            refs[ref] = lambda v: True  # a placeholder while a recursive schema compiles
            compiled = build(target)
            refs[ref] = compiled
        return lambda v: refs[ref](v)

    def build(schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, Mapping):
            raise Unsupported(f"schema {schema!r}")
        unknown = set(schema) - SUPPORTED - ANNOTATIONS
        unknown = {k for k in unknown if not k.startswith("x-")}
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks: list[Check] = []
        if "$ref" in schema:
            checks.append(resolve(schema["$ref"]))
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            tests = [TYPES[n] for n in names]
            checks.append(tests[0] if len(tests) == 1 else lambda v: any(t(v) for t in tests))
        if "enum" in schema:
            checks.append(_one_of_values(list(schema["enum"])))
        if "const" in schema:
            checks.append(_one_of_values([schema["const"]]))
        checks += _object_checks(schema, build)
        checks += _array_checks(schema, build)
        checks += _scalar_checks(schema)
        checks += _combinators(schema, build)
        return _every(checks)

    return build(root)


def _every(checks: list[Check]) -> Check:
    """One check that passes when each of ``checks`` does (a loop, not a generator)."""
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    found = tuple(checks)

    def every(v: Any) -> bool:
        for check in found:  # noqa: SIM110 - per entry of 30,000: no generator frame
            if not check(v):
                return False
        return True

    return every


def _one_of_values(options: list[Any]) -> Check:
    """``enum``/``const``: JSON equality with one of ``options``; strings (the common
    case) by a set lookup."""
    if options and all(isinstance(o, str) for o in options):
        strings = frozenset(options)
        return lambda v: isinstance(v, str) and v in strings
    return lambda v: any(_equal(v, o) for o in options)


def _object_checks(schema: Mapping[str, Any], build: Callable[[Any], Check]) -> list[Check]:
    out: list[Check] = []
    required = tuple(schema.get("required", ()))
    if len(required) == 1:
        (only,) = required
        out.append(lambda v: not isinstance(v, dict) or only in v)
    elif required:
        out.append(lambda v: not isinstance(v, dict) or all(k in v for k in required))
    props = {k: build(s) for k, s in schema.get("properties", {}).items()}
    patterns = [(re.compile(p).search, build(s))
                for p, s in schema.get("patternProperties", {}).items()]
    extra = schema.get("additionalProperties", True)
    other = None if extra is True else build(extra)
    if patterns:

        def members(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                matched = [c for search, c in patterns if search(key)]
                if not all(c(value) for c in matched):
                    return False
                check = props.get(key, None if matched else other)
                if check is not None and not check(value):
                    return False
            return True

        out.append(members)
    elif props or other is not None:
        get = props.get

        def plain_members(v: Any) -> bool:  # no patternProperties: one lookup per key
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                check = get(key, other)
                if check is not None and not check(value):
                    return False
            return True

        out.append(plain_members)
    if "propertyNames" in schema:
        names = build(schema["propertyNames"])
        out.append(lambda v: not isinstance(v, dict) or all(names(k) for k in v))
    return out


def _array_checks(schema: Mapping[str, Any], build: Callable[[Any], Check]) -> list[Check]:
    out: list[Check] = []
    prefix = [build(s) for s in schema.get("prefixItems", ())]
    if prefix:
        out.append(lambda v: not isinstance(v, list) or all(
            check(x) for check, x in zip(prefix, v, strict=False)))
    if "items" in schema:
        item = build(schema["items"])
        start = len(prefix)  # items applies to what prefixItems does not cover

        def items(v: Any) -> bool:
            if isinstance(v, list):
                for x in v[start:] if start else v:
                    if not item(x):
                        return False
            return True

        out.append(items)
    low, high = schema.get("minItems"), schema.get("maxItems")
    if low is not None:
        out.append(lambda v: not isinstance(v, list) or len(v) >= low)
    if high is not None:
        out.append(lambda v: not isinstance(v, list) or len(v) <= high)
    if schema.get("uniqueItems") is True:
        out.append(_unique)
    return out


def _unique(v: Any) -> bool:
    """``uniqueItems``: no two items JSON-equal; lists of strings (the common case) by a set."""
    if not isinstance(v, list):
        return True
    if all(isinstance(x, str) for x in v):
        return len(set(v)) == len(v)
    return not any(_equal(v[i], v[j]) for i in range(len(v)) for j in range(i))


def _scalar_checks(schema: Mapping[str, Any]) -> list[Check]:
    out: list[Check] = []
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        out.append(lambda v: not _is_number(v) or v >= low)
    if high is not None:
        out.append(lambda v: not _is_number(v) or v <= high)
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if above is not None:
        out.append(lambda v: not _is_number(v) or v > above)
    if below is not None:
        out.append(lambda v: not _is_number(v) or v < below)
    short, long = schema.get("minLength"), schema.get("maxLength")
    if short is not None:
        out.append(lambda v: not isinstance(v, str) or len(v) >= short)
    if long is not None:
        out.append(lambda v: not isinstance(v, str) or len(v) <= long)
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        out.append(lambda v: not isinstance(v, str) or search(v) is not None)
    return out


def _combinators(schema: Mapping[str, Any], build: Callable[[Any], Check]) -> list[Check]:
    out: list[Check] = []
    if "allOf" in schema:
        out.append(_every([build(s) for s in schema["allOf"]]))
    if "anyOf" in schema:
        some = [build(s) for s in schema["anyOf"]]
        out.append(lambda v: any(c(v) for c in some))
    if "oneOf" in schema:
        one = [build(s) for s in schema["oneOf"]]
        out.append(lambda v: sum(1 for c in one if c(v)) == 1)
    if "not" in schema:
        negated = build(schema["not"])
        out.append(lambda v: not negated(v))
    if "if" in schema:
        test = build(schema["if"])
        then = build(schema.get("then", True))
        otherwise = build(schema.get("else", True))
        out.append(lambda v: then(v) if test(v) else otherwise(v))
    return out
