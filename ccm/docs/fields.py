"""What a pydantic field accepts, read from the model alone (nothing is instantiated).

Shared by the object types and the settings: the JSON type and the constraints come
from the model's JSON schema (min/max, lengths, item counts, patterns, enums); the
checks pydantic's schema cannot express come from the validators themselves: a
validator's docstring, the regular expression a ``pattern(...)`` validator
``fullmatch``es (read from its closure), or else its name, so a reader knows a check
exists and where to find it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)
from pydantic_core import PydanticUndefined

from ccm.docs.markdown import code, first_paragraph, literal, one_line

_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
#: factories whose result is the same everywhere, shown as the value they make
_PLAIN_FACTORIES: dict[Any, Any] = {list: [], dict: {}, tuple: [], set: [], frozenset: []}


@dataclass(frozen=True)
class Vocabulary:
    """How types are named: JSON for objects, TOML for settings."""

    array: str
    mapping: str
    number: str


JSON = Vocabulary(array="array", mapping="object", number="number")
TOML = Vocabulary(array="array", mapping="table", number="float")


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return dict(defs.get(ref.rpartition("/")[2], {}))
    return schema


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a union (``anyOf``), or the schema itself."""
    options = schema.get("anyOf")
    return list(options) if isinstance(options, list) else [schema]


def type_name(schema: dict[str, Any], defs: dict[str, Any], words: Vocabulary) -> str:
    """``integer``, ``string or null``, ``array of string``, ``object of integer`` …"""
    names = []
    for branch in _branches(schema):
        branch = _resolve(branch, defs)
        kind = branch.get("type")
        if kind == "array":
            items = branch.get("items")
            inner = type_name(items, defs, words) if isinstance(items, dict) else "any"
            names.append(f"{words.array} of {inner}")
        elif kind == "object":
            values = branch.get("additionalProperties")
            if isinstance(values, dict) and values:
                names.append(f"{words.mapping} of {type_name(values, defs, words)}")
            else:
                names.append(words.mapping)
        elif kind == "number":
            names.append(words.number)
        elif isinstance(kind, str):
            names.append(kind)
        elif "enum" in branch or "const" in branch:
            names.append("string")
        else:
            names.append("any")
    return " or ".join(dict.fromkeys(names))


def constraints(schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    """The limits the JSON schema states, for the value and for its items."""
    found: list[str] = []
    for branch in _branches(schema):
        branch = _resolve(branch, defs)
        found += _own_constraints(branch)
        items = branch.get("items")
        if isinstance(items, dict):
            found += [f"each {text}" for text in constraints(items, defs)]
        values = branch.get("additionalProperties")
        if isinstance(values, dict):
            found += [f"each value {text}" for text in constraints(values, defs)]
    return list(dict.fromkeys(found))


def _own_constraints(schema: dict[str, Any]) -> list[str]:
    found = []
    for key, text in (
        ("exclusiveMinimum", "> {}"),
        ("minimum", "≥ {}"),
        ("exclusiveMaximum", "< {}"),
        ("maximum", "≤ {}"),
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("minProperties", "at least {} entries"),
        ("maxProperties", "at most {} entries"),
        ("multipleOf", "a multiple of {}"),
    ):
        if key in schema:
            found.append(text.format(schema[key]))
    if "pattern" in schema:
        found.append(f"matches {code(str(schema['pattern']))}")
    if "enum" in schema:
        found.append("one of " + ", ".join(literal(value) for value in schema["enum"]))
    if "const" in schema:
        found.append(f"exactly {literal(schema['const'])}")
    return found


def default(info: FieldInfo) -> str:
    """``required``, or the default as a literal (a computed one names its function)."""
    if info.default is not PydanticUndefined:
        value = info.default
        return literal(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
    factory = info.default_factory
    if factory is None:
        return "required"
    if factory in _PLAIN_FACTORIES:
        return literal(_PLAIN_FACTORIES[factory])
    return f"computed by {code(getattr(factory, '__qualname__', '?') + '()')}"


def _annotated_metadata(annotation: Any) -> Iterator[Any]:
    """Metadata of every ``Annotated`` inside a type (``list[Alias]``, ``Email | None``)."""
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        yield from metadata
        yield from _annotated_metadata(base)
        return
    for argument in get_args(annotation):
        yield from _annotated_metadata(argument)


def _unwrap(function: Any) -> Callable[..., Any] | None:
    function = getattr(function, "__func__", function)
    return function if callable(function) else None


def describe_check(function: Any) -> str | None:
    """One validator, for a reader: its docstring, the pattern it fullmatches, or its name."""
    function = _unwrap(function)
    if function is None:
        return None
    doc = first_paragraph(function.__doc__).rstrip(".")
    if doc:
        return doc
    try:
        captured = list(inspect.getclosurevars(function).nonlocals.values())
    except (TypeError, ValueError):
        captured = []
    patterns = [value.pattern for value in captured if isinstance(value, re.Pattern)]
    if patterns:
        return "; ".join(f"fullmatch {code(pattern)}" for pattern in patterns)
    name = getattr(function, "__name__", "")
    return None if not name or name == "<lambda>" else code(name)


def checks(model: type[BaseModel], name: str) -> list[str]:
    """The checks a field's validators make beyond its JSON schema."""
    info = model.model_fields[name]
    metadata = [*info.metadata, *_annotated_metadata(info.annotation)]
    functions: list[Any] = [meta.func for meta in metadata if isinstance(meta, _VALIDATORS)]
    decorators = model.__pydantic_decorators__.field_validators.values()
    functions += [d.func for d in decorators if name in d.info.fields]
    found = [describe_check(function) for function in functions]
    return list(dict.fromkeys(text for text in found if text))


def model_checks(model: type[BaseModel]) -> list[str]:
    """The checks of the model's whole-object validators."""
    decorators = model.__pydantic_decorators__.model_validators.values()
    found = [describe_check(decorator.func) for decorator in decorators]
    return [text for text in found if text]


@dataclass(frozen=True)
class FieldDoc:
    """One field, as the tables show it."""

    name: str
    type: str
    default: str
    constraints: list[str]
    description: str


def field_docs(model: type[BaseModel], words: Vocabulary) -> list[FieldDoc]:
    schema = model.model_json_schema(mode="validation")
    properties: dict[str, Any] = schema.get("properties", {})
    defs: dict[str, Any] = schema.get("$defs", {})
    found = []
    for name, info in model.model_fields.items():
        prop = properties.get(info.alias or name, {})
        found.append(
            FieldDoc(
                name=name,
                type=type_name(prop, defs, words),
                default=default(info),
                constraints=constraints(prop, defs) + checks(model, name),
                description=one_line(info.description),
            )
        )
    return found
