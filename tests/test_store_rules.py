"""The object store's promises that ``tests/test_store.py`` leaves open (found by
``scripts/mutation store``), each against a real etcd:

- a stored key that is not ``<type>/<id>``, not JSON, invalid or holding another id is
  reported naming the key and what is wrong with it;
- the events key says when (UTC) and who; ``event_revisions`` at a past revision;
- every object a write breaks is named, not only the last one; a write or delete that
  would break the objects whose rules read its type is refused naming each of them (rules
  hold both ways);
- the fence of a write with many references still catches a concurrent delete;
- refusals and retries name the type and what was being done;
- extension types (defined at run time): identities of more than one field are kept
  after a delete; a rule that reads a type it did not declare in ``READS`` is an error
  that says so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

import pytest
from races import race_after_read
from test_store import cron, pool, stored_state, user, vhost

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import InvalidStoredObject, ObjectStore
from ccm.errors import DanglingReference, StoreError, ValidationFailed
from ccm.models import CcmObject, ObjectsView, parse_object
from configurations.unix_users import UnixUser

# -- what a stored key holds ----------------------------------------------------------------


def invalid(store: ObjectStore, key: str, value: bytes) -> InvalidStoredObject:
    store.client.put(key, value)
    with pytest.raises(InvalidStoredObject) as caught:
        store.snapshot().of_type("crons")
    assert caught.value.key == key
    assert str(caught.value) == f"stored object {key}: {caught.value.reason}"
    return caught.value


def test_a_key_below_a_type_that_is_not_an_id_is_named(store: ObjectStore) -> None:
    key = store.objects_prefix + "crons/1/extra"
    assert invalid(store, key, b"{}").reason == "'1/extra' is not an object id"
    with pytest.raises(InvalidStoredObject, match="'1/extra' is not an object id"):
        store.list("crons")


def test_a_value_that_is_not_json_is_named(store: ObjectStore) -> None:
    key = store.object_key("crons", 3)
    assert invalid(store, key, b"{garbage").reason.startswith("not JSON (")


def test_a_value_that_no_longer_validates_lists_every_problem(store: ObjectStore) -> None:
    key = store.object_key("crons", 3)
    raw = cron(3, 1, name="Bad Name", schedule="never")
    reason = invalid(store, key, json.dumps(raw).encode()).reason
    with pytest.raises(ValidationFailed) as refused:  # what a write of it would say
        parse_object("crons", raw)
    assert len(refused.value.problems) == 2
    assert reason == "no longer validates: " + "; ".join(refused.value.problems)
    assert reason.startswith("no longer validates: crons/3: name: ")


def test_a_value_holding_another_id_is_named(store: ObjectStore) -> None:
    key = store.object_key("crons", 4)
    assert invalid(store, key, json.dumps(cron(5, 1)).encode()).reason == "holds id 5"


def test_an_invalid_vhost_can_be_deleted(store: ObjectStore) -> None:
    """Deleting re-checks the vhosts (their rules read every vhost) without the one
    deleted, which the store could not even parse."""
    store.put("unix-users", [user(1, "alice")])
    store.put("virtual-hosts", [vhost(1, 1, "a.example.com", "/home/alice/a")])
    store.client.put(store.object_key("virtual-hosts", 9), b"garbage")
    store.delete("virtual-hosts", 9)
    assert [v.id for v in store.list("virtual-hosts")] == [1]


# -- the events key ------------------------------------------------------------------------


def test_the_event_says_when_in_utc_and_who(etcd_client: EtcdClient, store: ObjectStore) -> None:
    anonymous = ObjectStore(etcd_client, store.prefix)
    before = datetime.now(UTC).replace(microsecond=0)
    anonymous.put("unix-users", [user(1, "alice")])
    event = json.loads(etcd_client.get(store.events_key("unix-users")).value)  # type: ignore[union-attr]
    assert event["by"] == "ccm"
    assert event["at"].endswith("Z")
    at = datetime.fromisoformat(event["at"])
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert at >= before

    store.put("unix-users", [user(2, "bob")])
    event = json.loads(etcd_client.get(store.events_key("unix-users")).value)  # type: ignore[union-attr]
    assert event["by"] == "tests"


def test_event_revisions_at_a_past_revision(store: ObjectStore) -> None:
    first = store.put("unix-users", [user(1, "alice")])
    second = store.put("crons", [cron(1, 1)])
    third = store.put("unix-users", [user(2, "bob")])
    assert store.event_revisions(first) == {"unix-users": first}
    assert store.event_revisions(second) == {"unix-users": first, "crons": second}
    assert store.event_revisions() == {"unix-users": third, "crons": second}


# -- refusals name everything -------------------------------------------------------------


def test_a_put_that_is_not_a_list_names_the_type(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed) as refused:
        store.put("crons", {"id": 1})  # type: ignore[arg-type]
    assert refused.value.type_name == "crons"
    assert refused.value.problems == ["expected a list of objects, got dict"]


def test_a_value_held_by_several_others_names_them_all(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed) as refused:
        store.put("unix-users", [user(1, "alice"), user(2, "alice"), user(3, "alice")])
    assert refused.value.type_name == "unix-users"
    assert refused.value.problems[0] == (
        "unix-users/1: username: 'alice' is already used by unix-users/2, unix-users/3"
    )


def test_every_referrer_a_rewrite_breaks_is_named(store: ObjectStore) -> None:
    store.put("unix-users", [user(1, "alice"), user(2, "bob")])
    store.put("fpm-pools", [pool(1, 1, "web")])
    store.put(
        "virtual-hosts",
        [
            vhost(1, 1, "a.example.com", "/home/alice/a", fpm_pool_id=1),
            vhost(2, 1, "b.example.com", "/home/alice/b", fpm_pool_id=1),
        ],
    )
    before = stored_state(store)
    with pytest.raises(ValidationFailed) as refused:
        store.put("fpm-pools", [pool(1, 2, "web")])  # now runs as bob
    assert refused.value.type_name == "fpm-pools"
    assert refused.value.problems == [
        f"virtual-hosts/{n}: fpm_pool_id: pool 'web' runs as unix-users/2, not as this "
        "vhost's unix-users/1"
        for n in (1, 2)
    ]
    assert stored_state(store) == before


def test_a_delete_that_breaks_the_rules_of_its_readers_names_each(
    store: ObjectStore, registry: None
) -> None:
    class Backup(CcmObject):
        """Needs at least one unix user to exist (its rule reads them all)."""

        TYPE: ClassVar[str] = "test-backups"
        READS: ClassVar[tuple[str, ...]] = ("unix-users",)

        def problems(self, view: ObjectsView) -> list[str]:
            if not list(view.list_type("unix-users")):
                return [f"{self.describe()}: no unix user left to back up"]
            return []

    store.put("unix-users", [user(1, "alice")])
    store.put("test-backups", [{"id": 1}, {"id": 2}])
    before = stored_state(store)
    with pytest.raises(ValidationFailed) as refused:
        store.delete("unix-users", 1)
    assert refused.value.type_name == "unix-users"
    assert refused.value.problems == [
        "test-backups/1: no unix user left to back up",
        "test-backups/2: no unix user left to back up",
    ]
    assert stored_state(store) == before


def test_a_rule_holds_both_ways_a_write_of_a_read_type_runs_its_readers_rules(
    store: ObjectStore, registry: None
) -> None:
    """A redirect's rule ("no vhost serves my name") runs when a vhost is written later."""

    class Redirect(CcmObject):
        TYPE: ClassVar[str] = "test-redirects"
        READS: ClassVar[tuple[str, ...]] = ("virtual-hosts",)
        domain: str

        def problems(self, view: ObjectsView) -> list[str]:
            return [
                f"{self.describe()}: domain: {self.domain} is served by {other.describe()}"
                for other in view.list_type("virtual-hosts")
                if getattr(other, "domain", None) == self.domain
            ]

    store.put("unix-users", [user(1, "alice")])
    store.put("test-redirects", [{"id": 1, "domain": "shop.example.com"}])
    store.put("virtual-hosts", [vhost(1, 1, "other.example.com", "/home/alice/a")])
    before = stored_state(store)
    with pytest.raises(ValidationFailed) as refused:
        store.put("virtual-hosts", [vhost(2, 1, "shop.example.com", "/home/alice/b")])
    assert refused.value.type_name == "virtual-hosts"
    assert refused.value.problems == [
        "test-redirects/1: domain: shop.example.com is served by virtual-hosts/2"
    ]
    assert stored_state(store) == before
    # a rewrite that takes the name is refused the same way; one that does not is stored
    with pytest.raises(ValidationFailed):
        store.put("virtual-hosts", [vhost(1, 1, "shop.example.com", "/home/alice/a")])
    store.put("virtual-hosts", [vhost(1, 1, "www.example.com", "/home/alice/a")])


def test_a_rule_reading_a_type_it_did_not_declare_is_an_error_saying_so(
    store: ObjectStore, registry: None
) -> None:
    class Careless(CcmObject):
        TYPE: ClassVar[str] = "test-careless"

        def problems(self, view: ObjectsView) -> list[str]:
            view.list_type("unix-users")
            return []

    with pytest.raises(StoreError) as refused:
        store.put("test-careless", [{"id": 1}])
    assert str(refused.value) == (
        "a cross-object rule read every unix-users, which the store did not read "
        "(the rule's type must name it in READS)"
    )
    assert stored_state(store) == {}


# -- identities of more than one field -------------------------------------------------------


def test_an_identity_of_two_fields_is_kept_after_a_delete(
    store: ObjectStore, registry: None
) -> None:
    class Mailbox(CcmObject):
        TYPE: ClassVar[str] = "test-mailboxes"
        IMMUTABLE: ClassVar[tuple[str, ...]] = ("local_part", "domain")
        local_part: str
        domain: str
        note: str = ""

    store.put("test-mailboxes", [{"id": 1, "local_part": "info", "domain": "ex.org"}])
    store.delete("test-mailboxes", 1)

    with pytest.raises(ValidationFailed) as refused:
        store.put("test-mailboxes", [{"id": 2, "local_part": "info", "domain": "ex.org"}])
    assert refused.value.problems == [
        "test-mailboxes/2: local_part, domain: local_part 'info', domain 'ex.org' belonged to "
        "test-mailboxes/1, deleted; its files on the nodes still belong to it: re-create it "
        "as test-mailboxes/1, or choose another value"
    ]
    with pytest.raises(ValidationFailed) as refused:
        store.put("test-mailboxes", [{"id": 1, "local_part": "sales", "domain": "ex.org"}])
    assert refused.value.problems == [
        "test-mailboxes/1: id: test-mailboxes/1 was deleted while it held local_part 'info', "
        "domain 'ex.org'; an id is never given to another identity (its files on the nodes "
        "still belong to it): use a new id"
    ]
    back = {"id": 1, "local_part": "info", "domain": "ex.org", "note": "back"}
    store.put("test-mailboxes", [back])
    assert store.get("test-mailboxes", 1) == Mailbox.model_validate(back)


# -- races --------------------------------------------------------------------------------


def test_a_put_with_many_references_still_sees_one_deleted_before_it_commits(
    store: ObjectStore, etcd_client: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond 64 referenced keys the write fences on the referenced type as a whole:
    a delete of one of them between its read and its commit is still seen."""
    count = 70
    store.put("unix-users", [user(i, f"user{i}") for i in range(1, count + 1)])
    other = ObjectStore(etcd_client, store.prefix, writer="other")

    def race(reads: int) -> None:
        if reads == 1:
            other.delete("unix-users", count)

    racing = race_after_read(monkeypatch, store, race)
    with pytest.raises(DanglingReference, match=f"unix-users/{count}"):
        store.put("crons", [cron(i, i) for i in range(1, count + 1)])
    assert racing.reads == 2
    assert store.list("crons") == []


def test_writes_that_keep_losing_races_say_what_they_were(
    store: ObjectStore, etcd_client: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("unix-users", [user(1, "alice")])
    store.put("fpm-pools", [pool(1, 1, "web")])
    other = ObjectStore(etcd_client, store.prefix, writer="other")
    impatient = ObjectStore(etcd_client, store.prefix, writer="tests", max_attempts=2)

    def race(reads: int) -> None:
        n = 100 + reads
        other.put("unix-users", [user(n, f"u{n}")])
        other.put("fpm-pools", [pool(n, 1, f"p{n}")])
        # a vhost: what a pool's delete reads (its referrers) changes too
        other.put("virtual-hosts", [vhost(n, 1, f"s{n}.example.com", f"/home/alice/{n}")])

    race_after_read(monkeypatch, impatient, race)
    with pytest.raises(StoreError) as lost:
        impatient.put("unix-users", [user(2, "bob")])
    assert str(lost.value).startswith("put unix-users: concurrent writes changed what it ")
    assert "2 times in a row" in str(lost.value)
    with pytest.raises(StoreError) as lost:
        impatient.delete("fpm-pools", 1)
    assert str(lost.value).startswith("delete fpm-pools/1: concurrent writes changed what it ")
    assert isinstance(store.get("fpm-pools", 1), CcmObject)
    assert store.get("unix-users", 1) == UnixUser(id=1, username="alice")
