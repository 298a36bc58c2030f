"""The base of every object type, and the registry that types fill by being defined.

A type is one ``CcmObject`` subclass with a ``TYPE`` name. Defining it registers it
(``object_types``): a type in a ``configurations/`` module or in a third-party package
needs no edit here. Everything the writer and the nodes need to know about it is
declared on the class:

* references, on the fields: ``unix_user_id: Annotated[ObjectId, Ref("unix-users")]``,
  derived into
  ``REFERENCES`` (field → type): the writer's existence compares, the refusal of deletes
  that leave referrers, a node's refusal of what refers to an object it refuses;
* ``unique_keys`` — values no two objects of the type may share;
* ``IMMUTABLE`` — identity fields: never changed, and never reused after a delete;
* ``problems(view)`` — rules between objects, reading other objects through ``view``;
  ``READS`` names the types whose every object they read (the writer reads those in
  full and fences its transaction on them);
* secrets, on the fields: ``password: Annotated[str, Secret]``, derived into ``SECRETS``:
  a refusal never echoes the value (``secret_values``); a file rendered from it is
  ``File(..., secret=True)``, which ``ccm diff`` shows only as fingerprints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

#: 2**31 - 1: an id as an SQL ``INT`` holds it (and as nginx, cron and useradd take it)
MAX_OBJECT_ID = 2**31 - 1


@dataclass(frozen=True)
class References:
    """Field metadata: this id field refers to an object of ``target``."""

    target: str


@dataclass(frozen=True)
class SecretValue:
    """Field metadata: the value is a secret (a password, a private key)."""


#: ``Annotated[str, Secret]``: no refusal, error or diff shows this field's value
Secret = SecretValue()


class ObjectsView(Protocol):
    """What a cross-object rule may read: other objects, as the write would leave them."""

    def lookup(self, type_name: str, object_id: int) -> CcmObject | None: ...

    def list_type(self, type_name: str) -> Iterable[CcmObject]: ...


T = TypeVar("T", bound="CcmObject")


def objects_of(view: ObjectsView, model: type[T]) -> list[T]:
    """Every object of ``model``'s type in ``view``, typed as ``model`` (a rule reads
    their fields without an ``isinstance`` of its own)."""
    return [obj for obj in view.list_type(model.TYPE) if isinstance(obj, model)]


def _references(metadata: Iterable[Any], annotation: Any) -> list[str]:
    """The ``References`` targets in a field's metadata or inside its annotation (an
    optional reference is ``Annotated[ObjectId, Ref(...)] | None``)."""
    found = [meta.target for meta in metadata if isinstance(meta, References)]
    if get_origin(annotation) is Annotated:
        found += [meta.target for meta in get_args(annotation)[1:] if isinstance(meta, References)]
    for argument in get_args(annotation) if get_origin(annotation) is not Annotated else ():
        found += _references((), argument)
    return found


def _is_secret(metadata: Iterable[Any], annotation: Any) -> bool:
    """A ``Secret`` in a field's metadata or inside its annotation (an optional secret
    is ``Annotated[str, Secret] | None``)."""
    if any(isinstance(meta, SecretValue) for meta in metadata):
        return True
    if get_origin(annotation) is Annotated:
        return any(isinstance(meta, SecretValue) for meta in get_args(annotation)[1:])
    return any(_is_secret((), argument) for argument in get_args(annotation))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's annotation holds (``list[User]``, ``User | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in get_args(annotation) for model in _models_in(argument)]


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value} if value else set()
    if isinstance(value, Mapping):
        return {text for item in value.values() for text in _strings(item)}
    if isinstance(value, list | tuple):
        return {text for item in value for text in _strings(item)}
    return set()


def secret_values(model: type[BaseModel], raw: Any) -> set[str]:
    """The strings of ``raw`` (an object as written, valid or not) that sit in fields
    marked ``Secret``, of ``model`` or of the models its fields hold."""
    found: set[str] = set()
    if not isinstance(raw, Mapping):
        return found
    for name, info in model.model_fields.items():
        if name not in raw:
            continue
        if _is_secret(info.metadata, info.annotation):
            found |= _strings(raw[name])
            continue
        for inner in _models_in(info.annotation):
            items = raw[name] if isinstance(raw[name], list | tuple) else [raw[name]]
            for item in items:
                found |= secret_values(inner, item)
    return found


#: every registered type: TYPE → model (filled by defining subclasses)
object_types: dict[str, type[CcmObject]] = {}


class CcmObject(BaseModel):
    """Base of every object type: frozen, no unknown fields, a positive integer id.

    ``TYPE`` is the plural kebab-case type name used in etcd keys and on the CLI.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
    TYPE: ClassVar[str]
    #: field → referenced type, derived from the fields' ``Ref(...)`` declarations
    REFERENCES: ClassVar[dict[str, str]] = {}
    #: fields a stored object may not change (its identity on the nodes)
    IMMUTABLE: ClassVar[tuple[str, ...]] = ()
    #: types whose every object ``problems`` reads
    READS: ClassVar[tuple[str, ...]] = ()
    #: the fields marked ``Secret``
    SECRETS: ClassVar[frozenset[str]] = frozenset()

    id: Annotated[int, Field(gt=0, le=MAX_OBJECT_ID, strict=True)]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.REFERENCES = {
            name: target
            for name, info in cls.model_fields.items()
            for target in _references(info.metadata, info.annotation)
        }
        cls.SECRETS = frozenset(
            name
            for name, info in cls.model_fields.items()
            if _is_secret(info.metadata, info.annotation)
        )
        if "TYPE" in cls.__dict__:
            registered = object_types.get(cls.TYPE)
            if registered is not None and registered.__qualname__ != cls.__qualname__:
                raise TypeError(f"object type {cls.TYPE!r} is defined twice: {registered}, {cls}")
            object_types[cls.TYPE] = cls

    def references(self) -> list[tuple[str, str, int]]:
        """``(field, referenced type, id)`` of every reference this object holds: none for
        an unset optional field, several for a list of ids (a daemon's ``node_ids``)."""
        found: list[tuple[str, str, int]] = []
        for name, target in self.REFERENCES.items():
            value = getattr(self, name)
            ids = value if isinstance(value, list | tuple) else () if value is None else (value,)
            found += [(name, target, object_id) for object_id in ids]
        return found

    def refers_to(self, field: str, object_id: int) -> bool:
        """Whether ``field`` (a reference) holds ``object_id``."""
        return any(name == field and i == object_id for name, _, i in self.references())

    def unique_keys(self) -> dict[str, Any]:
        """Values that must be unique among objects of this type (name → value)."""
        return {}

    def problems(self, view: ObjectsView) -> list[str]:
        """What is wrong with this object given the others (empty: nothing)."""
        return []

    def describe(self) -> str:
        return f"{self.TYPE}/{self.id}"
