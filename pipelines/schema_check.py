"""JSON Schema validation that speaks the user's language.

jsonschema's own messages ("Additional properties are not allowed ('pth' was unexpected)") point at
nothing and suggest nothing. Here each error becomes one or more `Problem`s with the field path, a
short message and a hint ("did you mean 'path'?"), located at the key or the value in the YAML.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import jsonschema

KIND_SCHEMA_FILES = {
    "Pipeline": "pipeline.schema.json",
    "Target": "target.schema.json",
    "Fleet": "fleet.schema.json",
    "Rollout": "rollout.schema.json",
}


@dataclass(frozen=True)
class Problem:
    """A problem at a field path; the manifest loader turns it into a located Diagnostic."""

    path: tuple
    message: str
    hint: str = ""
    severity: str = "error"
    at_key: bool = False  # point at the key (unknown field) rather than the value
    at: tuple | None = None  # an explicit (line, col), when the path alone cannot say where


class SchemaUnavailable(Exception):
    """The schema file for a kind is not shipped (yet)."""


@lru_cache(maxsize=None)
def _schema_text(kind: str) -> str:
    filename = KIND_SCHEMA_FILES[kind]
    try:
        return resources.files("edgeship.pipelines").joinpath("schemas", filename).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as err:
        raise SchemaUnavailable(f"schema for {kind} is not installed ({filename})") from err


def load_schema(kind: str) -> dict:
    """The JSON Schema (draft 2020-12) of a kind, as shipped in the package. A fresh copy each call."""
    return json.loads(_schema_text(kind))


@lru_cache(maxsize=None)
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = load_schema(kind)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def suggest(word: str, choices, n: int = 1) -> list[str]:
    """Nearest spellings of `word` among `choices` (difflib), best first."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=n, cutoff=0.6)
    lowered = str(word).lower()
    prefixed = [c for c in choices if lowered and c.lower().startswith(lowered) and c not in close]
    return (close + prefixed)[:n]


def did_you_mean(word: str, choices, *, list_all: bool = True) -> str:
    close = suggest(word, choices)
    if close:
        return f"did you mean '{close[0]}'?"
    choices = sorted(str(c) for c in choices)
    if list_all and choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f"expected one of: {shown}"
    return ""


def type_name(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if value is None:
        return "null (an empty value)"
    return type(value).__name__


_SCHEMA_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "null",
}


def _expected(types) -> str:
    if isinstance(types, str):
        types = [types]
    return " or ".join(_SCHEMA_TYPE_NAMES.get(t, t) for t in types)


def _short(value, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.:])(\s|$)", text or "")
    return (match.group(1) if match else (text or "")).rstrip(".:")


def _allowed_properties(schema: dict) -> list[str]:
    return list((schema.get("properties") or {}).keys())


def _problems_for(err: jsonschema.ValidationError) -> list[Problem]:
    path = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    value = err.instance
    hint = schema.get("x-hint", "")
    kind = err.validator

    if kind in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
        allowed = _allowed_properties(schema)
        patterns = list((schema.get("patternProperties") or {}).keys())
        out = []
        for key in value:
            if key in allowed or any(re.search(p, key) for p in patterns):
                continue
            if not allowed:
                out.append(Problem(path + (key,), f"unknown field '{key}'", "this mapping takes no fields", at_key=True))
            else:
                out.append(Problem(path + (key,), f"unknown field '{key}'", did_you_mean(key, allowed), at_key=True))
        return out
    if kind == "required" and isinstance(value, dict):
        props = schema.get("properties") or {}
        out = []
        for name in err.validator_value:
            if name in value:
                continue
            desc = _first_sentence((props.get(name) or {}).get("description", ""))
            out.append(Problem(path + (name,), f"missing required field '{name}'", desc))
        return out
    if kind == "type":
        expected = _expected(err.validator_value)
        if "string" in (err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]) \
                and isinstance(value, (int, float, bool)):
            hint = hint or f'quote it: "{_yaml_scalar(value)}"'
        return [Problem(path, f"expected {expected}, got {type_name(value)}", hint)]
    if kind == "const":
        return [Problem(path, f"must be {_short(err.validator_value)}, got {_short(value)}", hint)]
    if kind == "enum":
        choices = err.validator_value
        close = suggest(value, choices) if isinstance(value, str) else []
        listing = ", ".join(str(c) for c in choices)
        if close:
            return [Problem(path, f"{_short(value)} is not one of: {listing}", f"did you mean '{close[0]}'?")]
        return [Problem(path, f"{_short(value)} is not one of: {listing}", hint)]
    if kind == "pattern":
        return [Problem(path, f"{_short(value)} is not valid", hint or f"must match {err.validator_value}")]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return [Problem(path, f"must be {op} {err.validator_value}, got {_short(value)}", hint)]
    if kind == "minItems":
        return [Problem(path, f"needs at least {err.validator_value} item(s)", hint)]
    if kind == "maxItems":
        return [Problem(path, f"takes at most {err.validator_value} item(s)", hint)]
    if kind == "uniqueItems":
        return [Problem(path, "has duplicate items", "list each item once")]
    if kind == "minLength":
        return [Problem(path, "must not be empty" if err.validator_value == 1 else f"must be at least {err.validator_value} characters", hint)]
    if kind == "maxLength":
        return [Problem(path, f"must be at most {err.validator_value} characters", hint)]
    if kind == "minProperties":
        allowed = _allowed_properties(schema)
        return [Problem(path, "must not be empty", f"give at least one of: {', '.join(allowed)}" if allowed else hint)]
    if kind == "maxProperties":
        return [Problem(path, f"takes at most {err.validator_value} field(s)", hint)]
    if kind == "propertyNames":
        return [Problem(path, f"invalid key: {err.message}", hint)]
    if kind in ("oneOf", "anyOf") and err.context:
        best = jsonschema.exceptions.best_match(err.context)
        if best is not None:
            return _problems_for(best)
    return [Problem(path, err.message, hint)]


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def non_finite_problems(data, path: tuple = ()) -> list[Problem]:
    """NaN and infinities anywhere: JSON has no such numbers, and NaN passes every `minimum`/`maximum`
    check (a `max_smoke_p95_ratio: .nan` would switch a gate off), so each one is an error at its line."""
    if isinstance(data, float) and not math.isfinite(data):
        what = "NaN" if math.isnan(data) else "infinity"
        return [Problem(path, f"{what} is not allowed: numbers in a manifest must be finite",
                        "write a finite number, or leave the field out for its default")]
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in non_finite_problems(value, path + (key,))]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in non_finite_problems(value, path + (i,))]
    return []


def schema_problems(kind: str, data) -> list[Problem]:
    """Every schema problem of `data` as a `kind` document (one per field, deduplicated)."""
    problems = non_finite_problems(data)
    seen = {p.path for p in problems}  # a non-finite value is reported once, whatever else the schema says of it
    for err in _validator(kind).iter_errors(data):
        for problem in _problems_for(err):
            key = (problem.path, problem.message)
            if key not in seen and problem.path not in seen:
                seen.add(key)
                problems.append(problem)
    return problems
