"""The object store: the Cluster API's writer side and the node's reader side, on etcd.

Keys (DESIGN.md's wire contract), under the configured prefix:

* ``{prefix}/objects/{type}/{id}`` — the object as JSON (``model_dump(mode="json")``);
* ``{prefix}/events/{type}`` — ``{"at": ISO-8601 UTC, "by": writer}``, rewritten in the
  same transaction as every change of that type: its mod revision is the signal nodes
  watch, and the fence writers use.

A write is validated completely before anything is stored, then stored in ONE etcd
transaction whose compares make every check still true when it lands:

* references — the referenced key's mod revision is what was read (so the target exists
  and is the one checked); with many distinct targets, the target type's events key
  instead (a coarser fence, equivalent under the contract that every write bumps it);
* uniqueness and cross-type rules — the events key of every type whose objects were read
  (``version == 0`` while it does not exist yet): any concurrent write of such a type
  fails the compares;
* objects that refer to a rewritten object are checked again (a new username moves the
  home a vhost's document root must stay in): a write that would break them is refused;
* identity is never reused: deleting an object of a type with ``IMMUTABLE`` fields (a
  unix user's name, which with its id makes its uid and home) leaves a tombstone
  ``{prefix}/tombstones/{type}/{id}`` holding those fields. A later write may re-create
  the same id with the same values, but never give the id other values, nor the values
  another id: a kept home and its files never pass to a different tenant.

When the compares fail (a concurrent write) the store re-reads and retries, a few times
(``tenacity``). All reads of one attempt come from one read-only transaction: one revision.
This module sees etcd only through ``ccm.cluster.etcd``.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import Compare, EtcdClient, Get, KeyValue, Op, Put
from ccm.cluster.etcd import Delete as DeleteOp
from ccm.cluster.keys import Keys
from ccm.errors import (
    DanglingReference,
    InvalidStoredObject,
    ObjectNotFound,
    ReferencedObject,
    StoreError,
    ValidationFailed,
)
from ccm.models import (
    OBJECT_TYPES,
    CcmObject,
    Snapshot,
    cross_object_problems,
    model_for,
    parse_object,
    parse_objects,
    referrers_of,
)
from ccm.models.types import readers_of, reads_of
from ccm.settings import DEFAULT_UID_BASE

__all__ = ["DEFAULT_MAX_ATTEMPTS", "InvalidStoredObject", "ObjectStore"]

#: Attempts of one write before concurrent writers win and ``StoreError`` is raised.
#: Five were too few: four writers of one type on a loaded 2-core machine (the storm
#: test) lost writes in one of two runs; with jittered waits of up to 0.5 s, thirty
#: attempts (several seconds) make losing them all vanishingly rare
#: (``benchmarks/storm_soak.py``).
DEFAULT_MAX_ATTEMPTS = 30
#: Beyond this many distinct referenced keys, fence on the target types' events keys
#: (etcd allows 128 compares per transaction).
MAX_REFERENCE_COMPARES = 64
_ID = re.compile(r"[1-9][0-9]*")


class _Conflict(Exception):
    """The write's compares failed: something it read changed; read again."""


@dataclass
class _State:
    """What one attempt read, at one revision."""

    revision: int
    events: dict[str, KeyValue | None] = field(default_factory=dict)
    keys: dict[str, KeyValue | None] = field(default_factory=dict)
    objects: dict[str, dict[int, CcmObject]] = field(default_factory=dict)
    complete: frozenset[str] = frozenset()  # types read in full
    #: type → id → the identity fields its deleted object had
    tombstones: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    invalid: dict[str, InvalidStoredObject] = field(default_factory=dict)  # by key

    def check_valid(self, replaced: Iterable[str] = ()) -> None:
        """Raise for an invalid stored object this write does not replace or delete."""
        spared = set(replaced)
        for key, error in self.invalid.items():
            if key not in spared:
                raise error


class _View:
    """The state as ``cross_object_problems`` sees it, with a write or delete applied."""

    def __init__(
        self,
        state: _State,
        written: Iterable[CcmObject] = (),
        deleted: tuple[str, int] | None = None,
    ) -> None:
        self._state = state
        self._written = {(obj.TYPE, obj.id): obj for obj in written}
        self._deleted = deleted

    def lookup(self, type_name: str, object_id: int) -> CcmObject | None:
        if (type_name, object_id) == self._deleted:
            return None
        found = self._written.get((type_name, object_id))
        if found is not None:
            return found
        return self._state.objects.get(type_name, {}).get(object_id)

    def list_type(self, type_name: str) -> builtins.list[CcmObject]:
        if type_name not in self._state.complete:
            raise StoreError(
                f"a cross-object rule read every {type_name}, which the store did not read "
                "(the rule's type must name it in READS)"
            )
        merged = dict(self._state.objects.get(type_name, {}))
        merged.update({i: obj for (t, i), obj in self._written.items() if t == type_name})
        if self._deleted is not None and self._deleted[0] == type_name:
            merged.pop(self._deleted[1], None)
        return [obj for _, obj in sorted(merged.items())]

    def problems(self, obj: CcmObject) -> builtins.list[str]:
        return cross_object_problems(obj, self.lookup, self.list_type)


def _broken_readers(
    state: _State,
    readers: Iterable[str],
    after: _View,
    skip: Collection[tuple[str, int]] = (),
) -> builtins.list[str]:
    """Rule problems a write or delete creates in the objects whose rules read its type.

    Only new problems count: a stored object that already broke a rule (written before
    the rule existed) does not block unrelated writes. ``skip``: the written objects,
    whose own rules already ran.
    """
    before = _View(state)
    problems: builtins.list[str] = []
    for reader_type in readers:
        for obj in after.list_type(reader_type):
            if (obj.TYPE, obj.id) not in skip:
                old = set(before.problems(obj))
                problems += [p for p in after.problems(obj) if p not in old]
    return problems


def _encode(obj: CcmObject) -> bytes:
    data = obj.model_dump(mode="json")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _identity(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value!r}" for name, value in values.items())


def _ordered(names: Iterable[str]) -> builtins.list[str]:
    """``type/id`` names by type, then numerically by id."""

    def key(name: str) -> tuple[str, int]:
        type_name, _, ident = name.rpartition("/")
        return type_name, int(ident)

    return sorted(set(names), key=key)


class ObjectStore:
    """Validated objects in etcd, each write one transaction with its thin event.

    ``prefix`` is the etcd key prefix (``EtcdSettings.prefix``, e.g. ``/ccm``); ``writer``
    is recorded in the events keys (``"by"``). Besides the refusals each method names,
    etcd failures pass through as ``ClusterError`` (``EtcdUnavailable``: retry later).
    Thread-safe: every call works on what it read itself.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        writer: str = "ccm",
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        uid_base: int = DEFAULT_UID_BASE,
        groups: Iterable[str] | None = None,
        reuse_parsed: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.keys = Keys(prefix)
        self.writer = writer
        self.max_attempts = max_attempts
        #: the write-time context of the models' rules: the nodes' ``accounts.uid_base``
        #: (an account's uid must be usable there) and the node group names the
        #: configurations declare (None: not checked)
        self.context: dict[str, Any] = {"uid_base": uid_base}
        if groups is not None:
            self.context["groups"] = frozenset(groups)
        #: with ``reuse_parsed``, type → key → (mod revision, object) of the type's last
        #: snapshot load: an unchanged key is not parsed again (a daemon's run at 100,000
        #: objects spent a second and a half validating what the run before had
        #: validated). It keeps those objects alive between runs (+110 MB at 100,000),
        #: which a one-shot process does not need.
        self.reuse_parsed = reuse_parsed
        self._parsed: dict[str, dict[str, tuple[int, CcmObject]]] = {}

    # -- keys ----------------------------------------------------------------------------

    @property
    def objects_prefix(self) -> str:
        """``{prefix}/objects/``: every object key starts with it."""
        return self.keys.objects

    @property
    def events_prefix(self) -> str:
        """``{prefix}/events/``: every events key starts with it (what nodes watch)."""
        return self.keys.events

    def object_key(self, type_name: str, object_id: int) -> str:
        """``{prefix}/objects/{type}/{id}``: where one object's JSON is stored."""
        return self.keys.object(type_name, object_id)

    def events_key(self, type_name: str) -> str:
        """``{prefix}/events/{type}``: bumped with every change of the type."""
        return self.keys.event(type_name)

    def tombstones_prefix(self, type_name: str) -> str:
        """``{prefix}/tombstones/{type}/``: the identities of deleted objects of a type."""
        return self.keys.tombstones(type_name)

    # -- reading -------------------------------------------------------------------------

    def get(self, type_name: str, object_id: int) -> CcmObject:
        """One object; ``ObjectNotFound`` when it is not stored."""
        model_for(type_name)
        key = self.object_key(type_name, object_id)
        kv = self.client.get(key)
        obj = None if kv is None else self._parse(kv)
        if obj is None:
            raise ObjectNotFound(f"{type_name}/{object_id}")
        return obj

    def snapshot(self, revision: int | None = None) -> Snapshot:
        """Every object of every type, from one read at one revision (now, or ``revision``).

        Keys of object types this ccm does not know (a newer Cluster API) are skipped; a
        stored value that does not validate raises ``InvalidStoredObject``.
        """
        kvs, read_at = self.client.get_prefix(self.objects_prefix, revision)
        by_type: dict[str, builtins.list[KeyValue]] = {}
        for kv in kvs:
            type_name = kv.key[len(self.objects_prefix) :].partition("/")[0]
            if type_name in OBJECT_TYPES:
                by_type.setdefault(type_name, []).append(kv)

        def loader(
            type_name: str, found: builtins.list[KeyValue]
        ) -> Callable[[], dict[int, CcmObject]]:
            def load() -> dict[int, CcmObject]:
                return self._load(type_name, found)

            return load

        # parsed on first use, so a run reads only the types its configurations need
        return Snapshot(read_at, loaders={t: loader(t, found) for t, found in by_type.items()})

    def _load(self, type_name: str, found: builtins.list[KeyValue]) -> dict[int, CcmObject]:
        """The objects of one type, each parsed unless the last load of this type saw
        its key at the same mod revision (the same bytes: the models are frozen)."""
        if not self.reuse_parsed:
            parsed = (self._parse(kv) for kv in found)
            return {obj.id: obj for obj in parsed if obj is not None}
        before = self._parsed.get(type_name, {})
        seen: dict[str, tuple[int, CcmObject]] = {}
        objects: dict[int, CcmObject] = {}
        for kv in found:
            known = before.get(kv.key)
            obj = known[1] if known and known[0] == kv.mod_revision else self._parse(kv)
            if obj is not None:
                seen[kv.key] = (kv.mod_revision, obj)
                objects[obj.id] = obj
        self._parsed[type_name] = seen
        return objects

    def event_revisions(self, revision: int | None = None) -> dict[str, int]:
        """Type → mod revision of its events key, for every type ever written.

        Read now, or at ``revision`` (the revision of a snapshot, so both agree).
        """
        kvs, _ = self.client.get_prefix(self.events_prefix, revision)
        return {kv.key[len(self.events_prefix) :]: kv.mod_revision for kv in kvs}

    # -- writing -------------------------------------------------------------------------

    def put(self, type_name: str, raws: Sequence[Any]) -> int:
        """Validate and store objects of one type (new ones or replacements, by id).

        All of them and the bump of ``events/<type>`` are one transaction: returns its
        revision. Refusals store nothing: ``ValidationFailed`` (a field, a duplicate
        unique value, a cross-object rule, here or in an object referring to one of these),
        ``DanglingReference``. An empty list stores nothing and returns the current
        revision.
        """
        model_for(type_name)
        if not isinstance(raws, list | tuple):
            raise ValidationFailed(
                type_name, [f"expected a list of objects, got {type(raws).__name__}"]
            )
        objects = parse_objects(type_name, raws, self.context)
        if not objects:
            return self.client.current_revision()
        return self._retrying(f"put {type_name}", lambda: self._put_once(type_name, objects))

    def delete(self, type_name: str, object_id: int) -> int:
        """Delete one object and bump ``events/<type>`` in one transaction; its revision.

        ``ObjectNotFound`` when absent, ``ReferencedObject`` (naming every referrer, like
        ``crons/3``) while anything refers to it, ``ValidationFailed`` when the objects
        whose rules read this type would break without it (a PHP version still in use).
        """
        model_for(type_name)
        return self._retrying(
            f"delete {type_name}/{object_id}", lambda: self._delete_once(type_name, object_id)
        )

    # -- internals -----------------------------------------------------------------------

    def _retrying(self, what: str, attempt: Callable[[], int]) -> int:
        import tenacity  # only writers need it; keeps `ccm apply` start-up short

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Conflict),
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Conflict:
            raise StoreError(
                f"{what}: concurrent writes changed what it depends on {self.max_attempts} "
                "times in a row; nothing was stored, try again"
            ) from None

    def _parse(self, kv: KeyValue) -> CcmObject | None:
        """The object stored in ``kv``; None for a type this ccm does not know."""
        type_name, _, ident = kv.key[len(self.objects_prefix) :].partition("/")
        if type_name not in OBJECT_TYPES:
            return None
        if not _ID.fullmatch(ident):
            raise InvalidStoredObject(kv.key, f"{ident!r} is not an object id")
        try:  # the fast path: JSON straight into the model
            obj: CcmObject = OBJECT_TYPES[type_name].model_validate_json(kv.value)
        except ValueError:  # say exactly what is wrong, as a write would have
            try:
                raw = json.loads(kv.value)
            except ValueError as error:
                raise InvalidStoredObject(kv.key, f"not JSON ({error})") from None
            try:
                obj = parse_object(type_name, raw)
            except ValidationFailed as failed:
                raise InvalidStoredObject(
                    kv.key, "no longer validates: " + "; ".join(failed.problems)
                ) from None
        if obj.id != int(ident):
            raise InvalidStoredObject(kv.key, f"holds id {obj.id}")
        return obj

    def _read(
        self,
        events: Iterable[str],
        complete: Iterable[str],
        keys: Iterable[str],
        tombstones: Iterable[str] = (),
    ) -> _State:
        """One read-only transaction: events keys, whole types, single object keys, and
        the tombstones of some types."""
        event_types, full_types, single = sorted(set(events)), sorted(set(complete)), list(keys)
        tomb_types = sorted(set(tombstones))
        gets: builtins.list[Op] = [Get(self.events_key(t)) for t in event_types]
        gets += [Get(self.keys.objects_of(t), prefix=True) for t in full_types]
        gets += [Get(key) for key in single]
        gets += [Get(self.tombstones_prefix(t), prefix=True) for t in tomb_types]
        result = self.client.txn([], gets)
        responses = iter(result.responses)
        state = _State(revision=result.revision, complete=frozenset(full_types))

        def kvs() -> builtins.list[KeyValue]:
            response = next(responses)
            return response if isinstance(response, builtins.list) else []

        for type_name in event_types:
            state.events[type_name] = next(iter(kvs()), None)
        for kv in [kv for _ in full_types for kv in kvs()]:
            self._remember(state, kv)
        for key in single:
            state.keys[key] = found = next(iter(kvs()), None)
            if found is not None:
                self._remember(state, found)
        for type_name in tomb_types:
            state.tombstones[type_name] = {
                int(kv.key.rpartition("/")[2]): json.loads(kv.value) for kv in kvs()
            }
        return state

    def _remember(self, state: _State, kv: KeyValue) -> None:
        # An invalid stored object is reported by the write only if the write does not
        # replace or delete it: that is how an operator repairs one.
        try:
            obj = self._parse(kv)
        except InvalidStoredObject as error:
            state.invalid[kv.key] = error
            return
        if obj is not None:
            state.objects.setdefault(obj.TYPE, {})[obj.id] = obj

    def _event(self, type_name: str) -> Put:
        at = timestamp(datetime.now(UTC))
        value = json.dumps({"at": at, "by": self.writer}, separators=(",", ":"))
        return Put(self.events_key(type_name), value.encode())

    def _commit(
        self,
        state: _State,
        fence_types: Iterable[str],
        fence_keys: Iterable[str],
        ops: Sequence[Op],
    ) -> int:
        compares = [Compare.unchanged(self.events_key(t), state.events[t]) for t in fence_types]
        compares += [Compare.unchanged(key, state.keys[key]) for key in fence_keys]
        result = self.client.txn(compares, ops)
        if not result.succeeded:
            raise _Conflict()
        return result.revision

    def _put_once(self, type_name: str, objects: builtins.list[CcmObject]) -> int:
        referrers = referrers_of(type_name)
        referrer_types = {t for t, _ in referrers}
        # Types whose rules read this type run again too ("rules hold both ways"): a vhost
        # written later cannot take a name another type's rule keeps for itself.
        # A type's rules over its own type are symmetric (a vhost checks its names against
        # every other vhost), so the written objects' own rules already cover their kind.
        readers = [t for t in readers_of(type_name) if t != type_name]
        complete = {type_name, *reads_of(type_name), *referrer_types, *readers}
        for other_type in referrer_types | set(readers):  # their rules run again: read their reads
            complete.update(reads_of(other_type))

        references = [(obj, *reference) for obj in objects for reference in obj.references()]
        single = sorted({self.object_key(t, i) for _, _, t, i in references if t not in complete})
        fenced_by_type: set[str] = set()
        if len(single) > MAX_REFERENCE_COMPARES:
            fenced_by_type = {t for _, _, t, _ in references if t not in complete}
            single_fences: builtins.list[str] = []
        else:
            single_fences = single
        model = model_for(type_name)
        identity = [type_name] if model.IMMUTABLE else []
        state = self._read(complete | fenced_by_type, complete, single, identity)
        state.check_valid(self.object_key(type_name, obj.id) for obj in objects)
        after = _View(state, written=objects)

        for obj, name, target, value in references:
            if after.lookup(target, value) is None:
                raise DanglingReference(obj.describe(), name, f"{target}/{value}")

        problems = self._duplicates(type_name, objects, after.list_type(type_name))
        stored = state.objects.get(type_name, {})
        for obj in objects:
            old = stored.get(obj.id)
            for name in obj.IMMUTABLE if old is not None else ():
                if getattr(old, name) != getattr(obj, name):
                    problems.append(
                        f"{obj.describe()}: {name}: cannot change ({getattr(old, name)!r} -> "
                        f"{getattr(obj, name)!r}); delete it and create a new one"
                    )
        problems += self._reused_identities(objects, state.tombstones.get(type_name, {}))
        for obj in objects:
            problems += after.problems(obj)
        problems += self._broken_referrers(state, referrers, objects, after)
        written = {(obj.TYPE, obj.id) for obj in objects}
        problems += _broken_readers(state, readers, after, skip=written)
        if problems:
            raise ValidationFailed(type_name, builtins.list(dict.fromkeys(problems)))

        ops: builtins.list[Op] = [
            Put(self.object_key(type_name, o.id), _encode(o)) for o in objects
        ]
        ops.append(self._event(type_name))
        return self._commit(state, sorted(complete | fenced_by_type), single_fences, ops)

    @staticmethod
    def _duplicates(
        type_name: str, objects: Sequence[CcmObject], merged: Sequence[CcmObject]
    ) -> builtins.list[str]:
        """Unique values of written objects also held by another object of the type."""
        holders: dict[tuple[str, Any], builtins.list[CcmObject]] = {}
        for obj in merged:
            for name, value in obj.unique_keys().items():
                holders.setdefault((name, value), []).append(obj)
        problems = []
        for obj in objects:
            for name, value in obj.unique_keys().items():
                others = [o.describe() for o in holders[(name, value)] if o.id != obj.id]
                if others:
                    problems.append(
                        f"{obj.describe()}: {name}: {value!r} is already used by "
                        + ", ".join(others)
                    )
        return problems

    @staticmethod
    def _reused_identities(
        objects: Sequence[CcmObject], tombstones: dict[int, dict[str, Any]]
    ) -> builtins.list[str]:
        """Writes that would give a deleted object's identity to another object."""
        problems = []
        for obj in objects:
            mine = {name: getattr(obj, name) for name in obj.IMMUTABLE}
            old = tombstones.get(obj.id)
            if old is not None and old != mine:
                problems.append(
                    f"{obj.describe()}: id: {obj.TYPE}/{obj.id} was deleted while it held "
                    f"{_identity(old)}; an id is never given to another identity "
                    "(its files on the nodes still belong to it): use a new id"
                )
            for other_id, held in sorted(tombstones.items()):
                if other_id != obj.id and held == mine:
                    problems.append(
                        f"{obj.describe()}: {', '.join(mine)}: {_identity(mine)} belonged to "
                        f"{obj.TYPE}/{other_id}, deleted; its files on the nodes still belong "
                        f"to it: re-create it as {obj.TYPE}/{other_id}, or choose another value"
                    )
        return problems

    @staticmethod
    def _broken_referrers(
        state: _State,
        referrers: Sequence[tuple[str, str]],
        objects: Sequence[CcmObject],
        after: _View,
    ) -> builtins.list[str]:
        """Rule problems a write creates in the objects that refer to the written ones."""
        before = _View(state)
        written = {obj.id for obj in objects}
        problems: builtins.list[str] = []
        for referrer_type, name in referrers:
            for referrer in state.objects.get(referrer_type, {}).values():
                if any(referrer.refers_to(name, object_id) for object_id in written):
                    old = set(before.problems(referrer))
                    problems += [p for p in after.problems(referrer) if p not in old]
        return builtins.list(dict.fromkeys(problems))

    def _delete_once(self, type_name: str, object_id: int) -> int:
        key = self.object_key(type_name, object_id)
        referrers = referrers_of(type_name)
        # Types whose cross-object rules read this type: re-check them without the object.
        dependents = readers_of(type_name)
        complete = {t for t, _ in referrers} | set(dependents)
        for dependent in dependents:
            complete.update(reads_of(dependent))
        state = self._read(complete, complete, [key])
        if state.keys[key] is None:
            raise ObjectNotFound(f"{type_name}/{object_id}")
        state.check_valid([key])

        using = [
            referrer.describe()
            for referrer_type, name in referrers
            for referrer in state.objects.get(referrer_type, {}).values()
            if referrer.refers_to(name, object_id)
        ]
        if using:
            raise ReferencedObject(f"{type_name}/{object_id}", _ordered(using))

        after = _View(state, deleted=(type_name, object_id))
        problems = _broken_readers(state, dependents, after)
        if problems:
            raise ValidationFailed(type_name, problems)

        ops: builtins.list[Op] = [DeleteOp(key), self._event(type_name)]
        deleted = state.objects.get(type_name, {}).get(object_id)
        if deleted is not None and deleted.IMMUTABLE:
            identity = {name: getattr(deleted, name) for name in deleted.IMMUTABLE}
            tombstone = json.dumps(identity, separators=(",", ":"), ensure_ascii=False)
            ops.append(Put(self.tombstones_prefix(type_name) + str(object_id), tombstone.encode()))
        return self._commit(state, sorted(complete), [key], ops)

    # ``list`` last: inside the class body the name then means the method.
    def list(self, type_name: str) -> builtins.list[CcmObject]:
        """Every stored object of a type, ordered by id."""
        model_for(type_name)
        kvs, _ = self.client.get_prefix(self.keys.objects_of(type_name))
        objects = [obj for obj in map(self._parse, kvs) if obj is not None]
        return sorted(objects, key=lambda obj: obj.id)
