"""The registry of object types, parsing with readable errors, and cross-object rules.

Cross-object rules are the checks a single model cannot make alone (a vhost's document
root must lie inside its user's home). The object store runs them at write time against
the objects it read, and fences the write on those objects' revisions, so a rule checked
here still holds when the write lands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from ccm.errors import ValidationFailed
from ccm.models.objects import (
    CcmObject,
    Cluster,
    Cron,
    FpmPool,
    MailAccount,
    Node,
    UnixUser,
    VirtualHost,
)

OBJECT_TYPES: dict[str, type[CcmObject]] = {
    model.TYPE: model
    for model in (Node, UnixUser, Cron, FpmPool, VirtualHost, MailAccount, Cluster)
}

T = TypeVar("T", bound=CcmObject)

#: ``lookup(type_name, id)`` returns the stored object or None.
Lookup = Callable[[str, int], CcmObject | None]
#: ``list_type(type_name)`` returns every stored object of a type.
ListType = Callable[[str], Iterable[CcmObject]]


def model_for(type_name: str) -> type[CcmObject]:
    try:
        return OBJECT_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(OBJECT_TYPES))
        raise ValidationFailed(type_name, [f"unknown object type (known: {known})"]) from None


def _describe_errors(type_name: str, raw: Any, error: ValidationError) -> list[str]:
    ident = raw.get("id", "?") if isinstance(raw, Mapping) else "?"
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(object)"
        problems.append(f"{type_name}/{ident}: {field}: {item['msg']}")
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
    return [
        (model.TYPE, field)
        for model in OBJECT_TYPES.values()
        for field, target in model.REFERENCES.items()
        if target == type_name
    ]


def cross_object_problems(obj: CcmObject, lookup: Lookup, list_type: ListType) -> list[str]:
    """Rules between objects; references are assumed to exist (the store checks that)."""
    where = obj.describe()
    problems: list[str] = []
    if isinstance(obj, VirtualHost):
        names = [obj.domain, *obj.server_aliases]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append(f"{where}: server_aliases: {', '.join(repeated)} given twice")
        for other in list_type(VirtualHost.TYPE):
            if isinstance(other, VirtualHost) and other.id != obj.id:
                taken = set(names) & {other.domain, *other.server_aliases}
                if taken:  # nginx would serve one of the two at random: a hijack
                    problems.append(
                        f"{where}: {', '.join(sorted(taken))} already served by "
                        f"{other.describe()} ({other.domain})"
                    )
        user = lookup(UnixUser.TYPE, obj.unix_user_id)
        if isinstance(user, UnixUser) and not obj.document_root.startswith(user.home + "/"):
            problems.append(
                f"{where}: document_root: {obj.document_root!r} is not inside the home "
                f"of {user.username!r} ({user.home}/)"
            )
        if obj.fpm_pool_id is not None:
            pool = lookup(FpmPool.TYPE, obj.fpm_pool_id)
            if isinstance(pool, FpmPool) and pool.unix_user_id != obj.unix_user_id:
                problems.append(
                    f"{where}: fpm_pool_id: pool {pool.name!r} runs as unix-users/"
                    f"{pool.unix_user_id}, not as this vhost's unix-users/{obj.unix_user_id}"
                )
    if isinstance(obj, FpmPool):
        clusters = [c for c in list_type(Cluster.TYPE) if isinstance(c, Cluster)]
        listed = {version for cluster in clusters for version in cluster.php_versions}
        if clusters and obj.php_version not in listed:
            problems.append(
                f"{where}: php_version: {obj.php_version} is not installed on the cluster "
                f"(clusters list {', '.join(sorted(listed)) or 'none'})"
            )
    if isinstance(obj, Cluster):
        for pool in list_type(FpmPool.TYPE):
            if isinstance(pool, FpmPool) and pool.php_version not in obj.php_versions:
                problems.append(
                    f"{where}: php_versions: {pool.php_version} is still used by "
                    f"{pool.describe()} ({pool.name})"
                )
    return problems


#: Types whose objects a cross-object rule of the key type reads (beyond its references).
CROSS_TYPE_READS: dict[str, tuple[str, ...]] = {
    FpmPool.TYPE: (Cluster.TYPE,),
    Cluster.TYPE: (FpmPool.TYPE,),
}
