"""The registry of object types, parsing with readable errors, and cross-object rules.

Cross-object rules are the checks a single model cannot make alone (a vhost's document
root must lie inside its user's home). The object store runs them at write time against
the objects it read, and fences the write on those objects' revisions, so a rule checked
here still holds when the write lands.

Types register by being defined, in the modules the ``ccm.configurations`` entry points
name (the built-in ``configurations`` package and third-party packages). ``load_types``
imports them once; the lookups below call it, so a Cluster API that uses the object
store directly knows every installed type without loading any configuration itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

from pydantic import ValidationError

from ccm.errors import ValidationFailed
from ccm.models.base import CcmObject, ObjectsView, object_types, secret_values
from ccm.models.node import Node as _Node  # noqa: F401 - the framework's own type

#: the entry point group that names the packages of object types and configurations
ENTRY_POINT_GROUP = "ccm.configurations"

#: every registered object type, TYPE → model: the built-in ones and every type a
#: ``configurations`` module or an extension defines (importing it registers it)
OBJECT_TYPES = object_types

T = TypeVar("T", bound=CcmObject)

#: ``lookup(type_name, id)`` returns the stored object or None.
Lookup = Callable[[str, int], CcmObject | None]
#: ``list_type(type_name)`` returns every stored object of a type.
ListType = Callable[[str], Iterable[CcmObject]]


@cache
def load_types() -> tuple[str, ...]:
    """Import every ``ccm.configurations`` entry point once (defining a type registers
    it); the names of the registered types."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()
    return tuple(sorted(OBJECT_TYPES))


def model_for(type_name: str) -> type[CcmObject]:
    if type_name not in OBJECT_TYPES:
        load_types()
    try:
        return OBJECT_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(OBJECT_TYPES))
        raise ValidationFailed(type_name, [f"unknown object type (known: {known})"]) from None


def _describe_errors(type_name: str, raw: Any, error: ValidationError) -> list[str]:
    """One line per problem, naming the object and the field; the value of a field
    marked ``Secret`` is never echoed (a validator's message may quote it)."""
    ident = raw.get("id", "?") if isinstance(raw, Mapping) else "?"
    hidden = sorted(secret_values(model_for(type_name), raw), key=len, reverse=True)
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(object)"
        message = str(item["msg"])
        for value in hidden:
            message = message.replace(value, "<secret>").replace(repr(value)[1:-1], "<secret>")
        problems.append(f"{type_name}/{ident}: {field}: {message}")
    return problems


def parse_object(type_name: str, raw: Any, context: Mapping[str, Any] | None = None) -> CcmObject:
    """Validate one raw JSON value as an object of ``type_name``; errors name the field.

    ``context`` carries what write-time rules need beyond the object (``uid_base``).
    """
    model = model_for(type_name)
    try:
        return model.model_validate(raw, context=dict(context) if context else None)
    except ValidationError as error:
        raise ValidationFailed(type_name, _describe_errors(type_name, raw, error)) from None


def parse_objects(
    type_name: str, raws: Iterable[Any], context: Mapping[str, Any] | None = None
) -> list[CcmObject]:
    """Validate many; every problem of every object is reported at once."""
    problems: list[str] = []
    parsed: list[CcmObject] = []
    for raw in raws:
        try:
            parsed.append(parse_object(type_name, raw, context))
        except ValidationFailed as failed:
            problems.extend(failed.problems)
    seen: dict[int, int] = {}
    for obj in parsed:
        seen[obj.id] = seen.get(obj.id, 0) + 1
    problems.extend(f"{type_name}/{i}: id: given {n} times" for i, n in seen.items() if n > 1)
    if problems:
        raise ValidationFailed(type_name, problems)
    return parsed


def referrers_of(type_name: str) -> list[tuple[str, str]]:
    """``(referring type, field)`` pairs of every reference to ``type_name``."""
    load_types()
    return [
        (model.TYPE, field)
        for model in OBJECT_TYPES.values()
        for field, target in model.REFERENCES.items()
        if target == type_name
    ]


class _View:
    def __init__(self, lookup: Lookup, list_type: ListType) -> None:
        self.lookup = lookup
        self.list_type = list_type


def cross_object_problems(obj: CcmObject, lookup: Lookup, list_type: ListType) -> list[str]:
    """Rules between objects (the type's ``problems``); references are assumed to exist
    (the store checks that)."""
    view: ObjectsView = _View(lookup, list_type)
    return obj.problems(view)


def reads_of(type_name: str) -> tuple[str, ...]:
    """The types whose every object the rules of ``type_name`` read."""
    return model_for(type_name).READS


def readers_of(type_name: str) -> list[str]:
    """The types whose rules read every object of ``type_name``."""
    load_types()
    return sorted(t for t, model in OBJECT_TYPES.items() if type_name in model.READS)
