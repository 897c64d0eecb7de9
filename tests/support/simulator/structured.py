"""Schema-driven values: structured output (`format`) and tool-call arguments.

One generator serves both, because both are "a JSON value that fits this JSON schema":
- an object gets every property the schema lists as `required` (all of its properties when it
  has no `required` list at all), in the schema's order;
- `enum` gives its first value, `const` its value;
- a string is a deterministic lorem-ipsum word (a date, date-time, e-mail or URI when the
  schema's `format` asks for one), padded to `minLength` and cut to `maxLength`;
- an integer or number is deterministic, inside `minimum`/`maximum` (exclusive ones too);
- a boolean is `true`, null is null;
- an array has `minItems` items (at least one, at most `maxItems`) of its `items` schema;
- `anyOf`/`oneOf` take the first alternative that is not `null`, `allOf` merges its parts,
  `$ref` follows `#/$defs/...` or `#/definitions/...` inside the same schema;
- a list of types (`["string", "null"]`) takes its first non-null type; no type at all means
  an object when there are `properties`, else a string.

Every choice is seeded by the request's text and the value's path in the schema, so the same
request always yields the same value, and a test can compute it with `value_for_schema`.
`format: "json"` (no schema) yields a small object of words, from `json_object_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.support.simulator.completion import seeded_random, word_for

_MAX_DEPTH = 8  # a recursive $ref must still end in a finite value


def value_for_schema(schema: Any, seed_text: str) -> Any:
    """A value that validates against `schema`, deterministic for (`schema`, `seed_text`)."""
    root = schema if isinstance(schema, Mapping) else {}
    return _value(root, root, seed_text, "$", 0)


def json_object_for(seed_text: str) -> dict[str, str]:
    """The object a model answers with under `format: "json"`: two to four word pairs."""
    rng = seeded_random("json", seed_text)
    keys: list[str] = []
    for index in range(rng.randint(2, 4)):
        key = word_for("json key", seed_text, index)
        keys.append(key if key not in keys else f"{key}_{index}")
    return {key: word_for("json value", seed_text, key) for key in keys}


def _resolve(root: Mapping[str, Any], schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
    while "$ref" in schema and depth < _MAX_DEPTH:
        ref = schema["$ref"]
        target: Any = root
        if isinstance(ref, str) and ref.startswith("#/"):
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
        else:
            target = {}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**(target if isinstance(target, Mapping) else {}), **rest}
        depth += 1
    return schema


def _first_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if isinstance(kind, str):
        return kind
    return "object" if "properties" in schema else "string"


def _value(root: Mapping[str, Any], schema: Any, seed: str, path: str, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return word_for(seed, path)
    schema = _resolve(root, schema, depth)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not _is_null(root, o, depth)), options[0])
            return _value(root, chosen, seed, path, depth + 1)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: dict[str, Any] = {}
        for part in parts:
            if isinstance(part, Mapping):
                merged.update(_resolve(root, part, depth))
        merged.update({k: v for k, v in schema.items() if k != "allOf"})
        return _value(root, merged, seed, path, depth + 1)
    kind = _first_type(schema)
    if kind == "object":
        return _object(root, schema, seed, path, depth)
    if kind == "array":
        return _array(root, schema, seed, path, depth)
    if kind in ("integer", "number"):
        return _number(schema, seed, path, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, seed, path)


def _is_null(root: Mapping[str, Any], schema: Any, depth: int) -> bool:
    return isinstance(schema, Mapping) and _resolve(root, schema, depth).get("type") == "null"


def _object(
    root: Mapping[str, Any], schema: Mapping[str, Any], seed: str, path: str, depth: int
) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    if isinstance(required, list):
        names = [n for n in required if isinstance(n, str)]
    else:
        names = list(properties)
    return {
        name: _value(root, properties.get(name, {}), seed, f"{path}.{name}", depth + 1)
        for name in names
    }


def _array(
    root: Mapping[str, Any], schema: Mapping[str, Any], seed: str, path: str, depth: int
) -> list[Any]:
    low = _int_bound(schema.get("minItems"), 1)
    high = _int_bound(schema.get("maxItems"), max(low, 1))
    count = min(max(low, 1), high) if high >= 0 else max(low, 1)
    items = schema.get("items", {})
    return [_value(root, items, seed, f"{path}[{i}]", depth + 1) for i in range(count)]


def _int_bound(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _number(schema: Mapping[str, Any], seed: str, path: str, *, integer: bool) -> int | float:
    low, high = 0.0, 100.0
    if _is_number(schema.get("minimum")):
        low = float(schema["minimum"])
    if _is_number(schema.get("exclusiveMinimum")):
        low = float(schema["exclusiveMinimum"]) + 1
    if _is_number(schema.get("maximum")):
        high = float(schema["maximum"])
    if _is_number(schema.get("exclusiveMaximum")):
        high = float(schema["exclusiveMaximum"]) - 1
    if "maximum" not in schema and "exclusiveMaximum" not in schema:
        high = max(high, low + 100)
    if high < low:
        high = low
    rng = seeded_random("number", seed, path)
    low_int, high_int = int(-(-low // 1)), int(high // 1)  # ceil, floor
    value = rng.randint(low_int, high_int) if low_int <= high_int else int(low)
    if integer:
        return value
    fraction = rng.choice((0.0, 0.25, 0.5, 0.75))
    return value + fraction if value + fraction <= high else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_STRING_FORMATS = {
    "date-time": "2024-05-04T12:30:00Z",
    "date": "2024-05-04",
    "time": "12:30:00",
    "email": "{word}@example.com",
    "uri": "https://example.com/{word}",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: Mapping[str, Any], seed: str, path: str) -> str:
    word = word_for(seed, path)
    text = _STRING_FORMATS.get(str(schema.get("format", "")), "{word}").format(word=word)
    min_length = _int_bound(schema.get("minLength"), 0)
    while len(text) < min_length:
        text += f" {word}"
    max_length = _int_bound(schema.get("maxLength"), -1)
    if max_length >= 0:
        text = text[:max_length]
    return text
