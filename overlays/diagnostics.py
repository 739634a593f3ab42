"""Messages for bad TOML: where (file, TOML key path) and what, with a "did you mean".

:func:`validate` turns jsonschema's errors for a TOML document into one
:class:`~fexstack.errors.ConfigError` listing every problem, each with its key path.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fexstack import jsonio
from fexstack.errors import ConfigError

if TYPE_CHECKING:
    import jsonschema

_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")


def show(path: Path) -> str:
    """``path`` as a user wants to read it: relative to the current directory if inside."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _key(part: str | int) -> str:
    text = str(part)
    return text if _BARE_KEY_RE.match(text) else json.dumps(text)


def key_path(parts: Sequence[str | int], header_depth: int = 1) -> str:
    """A TOML-style key path: ``[app].env.HOME``, ``[stack].include[1]``, ``[repos.x].baseurl``."""
    if not parts:
        return "(top level)"
    head = [p for p in parts[:header_depth]]
    text = "[" + ".".join(_key(p) for p in head) + "]"
    for part in parts[header_depth:]:
        text += f"[{part}]" if isinstance(part, int) else "." + _key(part)
    return text


def did_you_mean(word: str, choices: Iterable[str], what: str = "") -> str:
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    parts = []
    if close:
        parts.append(f"did you mean {close[0]!r}?")
    if options:
        parts.append(f"{what or 'allowed'}: {', '.join(options)}")
    else:
        parts.append(f"{what or 'allowed'}: none")
    return " ".join(parts)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing or malformed file is a :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{show(path)}: no such file", "check the name and folder") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{show(path)}: cannot be read: {exc}", None) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = getattr(exc, "msg", None) or _TOML_POS_RE.sub("", str(exc)).strip()
        line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        if line is None:
            found = _TOML_POS_RE.search(str(exc))
            line, col = (int(found[1]), int(found[2])) if found else (0, 0)
        raise ConfigError(
            f"{show(path)}: line {line}, column {col}: not valid TOML: {msg}",
            "fix the syntax there (strings need double quotes, tables are [name], "
            "lists are [a, b])",
        ) from exc


_TOML_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "array": "a list",
    "object": "a table",
}


def _describe(value: Any) -> str:
    """What a user wrote, in TOML words."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time {value}"


Problem = tuple[str, str, str | None]  # (key path, what is wrong, hint)


def _translate(err: jsonschema.ValidationError, header_depth: int) -> list[Problem]:
    """Turn one jsonschema error into problems in fexstack's words (no jsonschema text)."""
    path: list[str | int] = list(err.absolute_path)
    where = key_path(path, header_depth)
    schema = err.schema if isinstance(err.schema, dict) else {}
    described = schema.get("description")
    value = err.instance
    kind = err.validator

    if "propertyNames" in err.absolute_schema_path:
        name_path = key_path([*path, str(value)], header_depth)
        return [(name_path, f"{json.dumps(value)} is not {described or 'a valid key'}", None)]
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        noun = "table" if not path else "key"
        what = f"{where} accepts" if path else "tables"
        return [
            (key_path([*path, extra], header_depth), f"unknown {noun}",
             did_you_mean(extra, allowed, what))
            for extra in sorted(k for k in value if k not in allowed)
        ]
    if kind == "required":
        return [
            (key_path([*path, k], header_depth), "missing (it is required)", None)
            for k in err.validator_value
            if k not in value
        ]
    found = _describe(value)
    if kind == "type":
        types = err.validator_value
        types = types if isinstance(types, list) else [types]
        expected = " or ".join(str(_TOML_TYPES.get(t, t)) for t in types)
        hint = None
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if "string" in types and number and path and isinstance(path[-1], str):
            hint = f'write it in double quotes: {_key(path[-1])} = "{value}"'
        if isinstance(value, dict) and "object" not in types and path:
            hint = (
                "a dot in a bare key makes a nested table in TOML; quote a name that "
                f'contains dots: "{path[-1]}.{next(iter(value), "")}" = ...'
            )
        return [(where, f"expected {expected}, found {found}", hint)]
    if kind == "enum":
        options = [str(o) for o in err.validator_value]
        listed = ", ".join(json.dumps(o) for o in options)
        expected = f"one of {listed}" if len(options) > 1 else listed
        hints = []
        if isinstance(value, str) and len(options) > 1:
            hints.append(did_you_mean(str(value), options, "allowed"))
        if described:
            hints.append(described)
        return [(where, f"expected {expected}, found {found}", "; ".join(hints) or None)]
    if kind == "pattern":
        expected = described or f"a string matching {err.validator_value}"
        return [(where, f"expected {expected}, found {found}", None)]
    if kind == "minLength":
        return [(where, f"expected a non-empty string, found {found}", None)]
    if kind == "minItems":
        n = err.validator_value
        entries = "entry" if n == 1 else "entries"
        return [(where, f"expected at least {n} {entries}, found {len(value)}", None)]
    if kind == "uniqueItems":
        texts = [json.dumps(v) for v in value]
        dupes = sorted({t for t in texts if texts.count(t) > 1})
        return [(where, f"lists {', '.join(dupes)} more than once", "list each once")]
    if kind == "minimum":
        return [(where, f"expected a number >= {err.validator_value}, found {found}", None)]
    rule = json.dumps(err.validator_value, default=str)
    return [(where, f"{found} does not satisfy {kind} {rule}", None)]


def validate(doc: dict[str, Any], schema_name: str, path: Path, header_depth: int = 1) -> None:
    """Validate ``doc`` against ``<schema_name>.schema.json``; report every problem at once.

    One line per problem, ``FILE: KEY PATH: what is wrong``; with several problems each
    hint is prefixed with the key path it belongs to.
    """
    if jsonio.schema_error(doc, schema_name) is None:
        return  # the compiled check: jsonschema is loaded only to word what is wrong
    import jsonschema  # here only: see above

    validator = jsonschema.Draft202012Validator(jsonio.schema(schema_name))
    errors = sorted(
        validator.iter_errors(doc), key=lambda e: ([str(p) for p in e.absolute_path], e.validator)
    )
    if not errors:
        return
    problems: list[Problem] = []
    for err in errors:
        problems += [p for p in _translate(err, header_depth) if p not in problems]
    shown = show(path)
    message = "\n".join(f"{shown}: {where}: {what}" for where, what, _ in problems)
    hints = [(where, hint) for where, _, hint in problems if hint]
    if len(problems) == 1:
        hint = hints[0][1] if hints else None
    else:
        hint = "\n".join(f"{where}: {hint}" for where, hint in hints) or None
    raise ConfigError(message, hint)
