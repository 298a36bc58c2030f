"""The object store against a real etcd: round trips, one-transaction writes, refusals.

Every refusal test asserts that NOTHING was stored: the keys under the test's prefix and
their mod revisions are exactly what they were before the refused call.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from races import race_after_read

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import InvalidStoredObject, ObjectStore
from ccm.errors import (
    DanglingReference,
    ObjectNotFound,
    ReferencedObject,
    StoreError,
    ValidationFailed,
)
from configurations.crons import Cron
from configurations.fpm_pools import FpmPool
from configurations.mail_accounts import MailAccount
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

HASH = (
    "{SHA512-CRYPT}$6$rounds=5000$saltsalt$"
    + ("abcdefghijklmnopqrstuvwxyzABCDEF0123456789./" * 2)[:86]
)


def user(id: int, username: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "username": username, **extra}


def cron(id: int, unix_user_id: int, name: str = "backup", **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "unix_user_id": unix_user_id,
        "name": name,
        "schedule": "0 3 * * *",
        "command": "/usr/local/bin/backup --quiet",
        **extra,
    }


def pool(id: int, unix_user_id: int, name: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "name": name, "unix_user_id": unix_user_id, "php_version": "8.2", **extra}


def vhost(id: int, unix_user_id: int, domain: str, root: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "domain": domain,
        "unix_user_id": unix_user_id,
        "document_root": root,
        **extra,
    }


def mail(id: int, local_part: str = "info", **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "local_part": local_part,
        "mail_domain_id": 1,
        "password_hash": HASH,
        **extra,
    }


def stored_state(store: ObjectStore) -> dict[str, int]:
    """Every key under the store's prefix → its mod revision."""
    kvs, _ = store.client.get_prefix(store.prefix + "/")
    return {kv.key: kv.mod_revision for kv in kvs}


@pytest.fixture
def seeded(store: ObjectStore) -> ObjectStore:
    """alice (1) and bob (2); alice has a pool, a vhost using it, and a cron; bob has
    the mail domain of a mail account."""
    store.put("unix-users", [user(1, "alice"), user(2, "bob")])
    store.put("fpm-pools", [pool(1, 1, "alice-web"), pool(2, 2, "bob-web")])
    store.put("virtual-hosts", [vhost(1, 1, "alice.example.org", "/home/alice/www", fpm_pool_id=1)])
    store.put("crons", [cron(3, 1)])
    store.put("mail-domains", [{"id": 1, "domain": "example.org", "unix_user_id": 2}])
    store.put("mail-accounts", [mail(1)])
    return store


# -- round trips ---------------------------------------------------------------------------


def test_round_trip_of_every_type(store: ObjectStore) -> None:
    store.put("clusters", [{"id": 1, "php_versions": ["8.2", "8.3"]}])
    store.put("unix-users", [user(10, "carol", email="carol@example.org"), user(2, "dave")])
    store.put("fpm-pools", [pool(4, 10, "carol", php_settings={"memory_limit": "256M"})])
    site = vhost(1, 10, "carol.example.org", "/home/carol/www", fpm_pool_id=4)
    store.put("virtual-hosts", [{**site, "server_aliases": ["www.carol.example.org"]}])
    store.put("crons", [cron(1, 10, email_address="ops@example.org")])
    store.put("mail-domains", [{"id": 1, "domain": "example.org", "unix_user_id": 10}])
    store.put("mail-accounts", [mail(7, quota_mib=512)])

    carol = store.get("unix-users", 10)
    assert carol == UnixUser(id=10, username="carol", email="carol@example.org")
    assert [u.id for u in store.list("unix-users")] == [2, 10]  # by id, not by key
    assert store.get("fpm-pools", 4) == FpmPool.model_validate(
        pool(4, 10, "carol", php_settings={"memory_limit": "256M"})
    )
    assert isinstance(store.get("virtual-hosts", 1), VirtualHost)
    assert isinstance(store.get("crons", 1), Cron)
    assert isinstance(store.get("mail-accounts", 7), MailAccount)
    assert store.list("crons")[0].model_dump()["email_address"] == "ops@example.org"

    raw = store.client.get(store.object_key("unix-users", 10))
    assert raw is not None
    assert json.loads(raw.value) == {
        "id": 10,
        "username": "carol",
        "email": "carol@example.org",
        "shell": "/bin/bash",
    }


def test_a_list_put_is_one_transaction_with_its_event(store: ObjectStore) -> None:
    revision = store.put("unix-users", [user(i, f"user{i}") for i in range(1, 301)])
    state = stored_state(store)
    assert len(state) == 301  # 300 objects (beyond etcd's 128 ops per txn) + the event
    assert set(state.values()) == {revision}

    event = store.client.get(store.events_key("unix-users"))
    assert event is not None
    value = json.loads(event.value)
    assert value["by"] == "tests"
    assert datetime.fromisoformat(value["at"]).utcoffset() is not None  # UTC, not naive


def test_put_replaces_by_id_and_keeps_the_others(store: ObjectStore) -> None:
    store.put("unix-users", [user(1, "alice"), user(2, "bob")])
    store.put("unix-users", [user(1, "alice", shell="/bin/zsh")])
    assert store.get("unix-users", 1) == UnixUser(id=1, username="alice", shell="/bin/zsh")
    assert [u.id for u in store.list("unix-users")] == [1, 2]


def test_an_empty_put_stores_nothing(store: ObjectStore) -> None:
    revision = store.client.current_revision()
    assert store.put("crons", []) == revision
    assert stored_state(store) == {}


def test_get_of_a_missing_object_or_unknown_type(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="unix-users/5 does not exist"):
        store.get("unix-users", 5)
    with pytest.raises(ValidationFailed, match="unknown object type"):
        store.get("widgets", 1)


# -- refusals: field rules -----------------------------------------------------------------

FIELD_RULES = [
    pytest.param("unix-users", user(9, "Alice"), "username", id="username-uppercase"),
    pytest.param("unix-users", user(9, "9lives"), "username", id="username-leading-digit"),
    pytest.param("unix-users", user(9, "a" * 33), "username", id="username-too-long"),
    pytest.param(
        "unix-users", user(9, "root"), "reserved for a system account", id="username-root"
    ),
    pytest.param("unix-users", user(9, "mysql"), "reserved", id="username-service"),
    pytest.param("unix-users", user(9, "systemd-x"), "reserved", id="username-systemd"),
    pytest.param("unix-users", user(9, "www-data"), "reserved", id="username-www-data"),
    pytest.param("unix-users", user(9, "eve", email="not-an-email"), "email", id="email"),
    pytest.param("unix-users", user(9, "eve", shell="bin/sh"), "shell", id="shell-relative"),
    pytest.param("crons", cron(9, 1, name="Nightly Backup"), "name", id="cron-name"),
    pytest.param("crons", cron(9, 1, schedule="* * * *"), "schedule", id="cron-4-fields"),
    pytest.param("crons", cron(9, 1, schedule="@often"), "schedule", id="cron-bad-special"),
    pytest.param("crons", cron(9, 1, command="true\nrm -rf /"), "control", id="cron-newline"),
    pytest.param("crons", cron(9, 1, command="date +%s"), "'%'", id="cron-percent"),
    pytest.param("crons", cron(9, 1, command=" true"), "whitespace", id="cron-padded"),
    pytest.param("fpm-pools", pool(9, 1, "Pool!"), "name", id="pool-name"),
    pytest.param("fpm-pools", pool(9, 1, "p", php_version="8"), "php_version", id="php-8"),
    pytest.param("fpm-pools", pool(9, 1, "p", php_version="10.1"), "php_version", id="php-10"),
    pytest.param("fpm-pools", pool(9, 1, "p", max_children=0), "max_children", id="children-0"),
    pytest.param(
        "fpm-pools", pool(9, 1, "p", max_children=1001), "max_children", id="children-1001"
    ),
    pytest.param(
        "fpm-pools", pool(9, 1, "p", max_children="5"), "max_children", id="children-string"
    ),
    pytest.param(
        "fpm-pools",
        pool(9, 1, "p", php_settings={"memory_limit": 'a"b'}),
        "php_settings",
        id="php-setting-quote",
    ),
    pytest.param(
        "fpm-pools",
        pool(9, 1, "p", php_settings={"Bad": "1"}),
        "php_settings",
        id="php-setting-name",
    ),
    pytest.param(
        "virtual-hosts", vhost(9, 1, "Example.ORG", "/home/alice/x"), "domain", id="domain-case"
    ),
    pytest.param(
        "virtual-hosts", vhost(9, 1, "localhost", "/home/alice/x"), "domain", id="domain-no-dot"
    ),
    pytest.param(
        "virtual-hosts",
        vhost(9, 1, "a.example.org", "/home/alice/x", server_aliases=["bad_alias"]),
        "server_aliases",
        id="alias",
    ),
    pytest.param(
        "virtual-hosts",
        vhost(9, 1, "a.example.org", "/home/alice/../bob"),
        "document_root",
        id="docroot-dotdot",
    ),
    pytest.param(
        "virtual-hosts",
        vhost(9, 1, "a.example.org", "home/alice"),
        "document_root",
        id="docroot-relative",
    ),
    pytest.param(
        "virtual-hosts",
        vhost(9, 1, "a.example.org", "/var/www/html"),
        "not inside the home",
        id="docroot-outside-home",
    ),
    pytest.param(
        "virtual-hosts",
        vhost(9, 1, "a.example.org", "/home/alice/www", fpm_pool_id=2),
        "fpm_pool_id: pool 'bob-web' runs as unix-users/2",
        id="pool-of-another-user",
    ),
    pytest.param("mail-accounts", mail(9, "-info"), "local_part", id="local-part"),
    pytest.param(
        "mail-accounts",
        mail(9, "x", password_hash=HASH + "\nroot::0:0"),
        "password_hash",
        id="hash-newline",
    ),
    pytest.param(
        "mail-accounts", mail(9, "x", password_hash="plain"), "password_hash", id="hash-not-crypt"
    ),
    pytest.param(
        "clusters", {"id": 9, "php_versions": ["8.2", "8.2"]}, "distinct", id="cluster-versions"
    ),
    pytest.param(
        "unix-users", {"id": 9, "username": "eve", "uid": 1000}, "uid", id="unknown-field"
    ),
    pytest.param("unix-users", user(0, "eve"), "id", id="id-zero"),
    pytest.param("unix-users", user(-3, "eve"), "id", id="id-negative"),
    pytest.param("unix-users", user("9", "eve"), "id", id="id-string"),  # type: ignore[arg-type]
    pytest.param("widgets", {"id": 9}, "unknown object type", id="unknown-type"),
]


@pytest.mark.parametrize(("type_name", "raw", "reason"), FIELD_RULES)
def test_invalid_objects_are_refused_and_nothing_is_stored(
    seeded: ObjectStore, type_name: str, raw: dict[str, Any], reason: str
) -> None:
    before = stored_state(seeded)
    good = user(8, "valid-one")  # a valid object in the same call is not stored either
    raws = [good, raw] if type_name == "unix-users" else [raw]
    with pytest.raises(ValidationFailed) as refused:
        seeded.put(type_name, raws)
    message = str(refused.value)
    assert reason in message
    if type_name != "widgets":
        assert f"{type_name}/{raw['id']}" in message  # names the object
    assert stored_state(seeded) == before


def test_every_problem_is_reported_at_once(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed) as refused:
        store.put(
            "unix-users", [user(1, "Root"), user(2, "ok", shell="x"), user(3, "a"), user(3, "b")]
        )
    problems = refused.value.problems
    assert any("unix-users/1: username" in p for p in problems)
    assert any("unix-users/2: shell" in p for p in problems)
    assert any("unix-users/3: id: given 2 times" in p for p in problems)
    assert stored_state(store) == {}


def test_a_put_needs_a_list(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed, match="expected a list of objects, got dict"):
        store.put("unix-users", user(1, "alice"))  # type: ignore[arg-type]


# -- refusals: references and uniqueness ---------------------------------------------------


def test_a_dangling_reference_is_refused(seeded: ObjectStore) -> None:
    before = stored_state(seeded)
    with pytest.raises(DanglingReference) as refused:
        seeded.put("crons", [cron(10, 1, "ok"), cron(11, 99)])
    assert (refused.value.source, refused.value.field, refused.value.target) == (
        "crons/11",
        "unix_user_id",
        "unix-users/99",
    )
    with pytest.raises(DanglingReference, match="fpm_pool_id refers to fpm-pools/42"):
        seeded.put("virtual-hosts", [vhost(5, 1, "b.example.org", "/home/alice/b", fpm_pool_id=42)])
    assert stored_state(seeded) == before


def test_references_to_many_objects_in_one_put(store: ObjectStore) -> None:
    """Over 64 distinct targets, the put fences on the target type's events key instead."""
    store.put("unix-users", [user(i, f"u{i}") for i in range(1, 201)])
    revision = store.put("crons", [cron(i, i) for i in range(1, 201)])
    assert {c.id for c in store.list("crons")} == set(range(1, 201))
    with pytest.raises(DanglingReference, match="unix-users/201"):
        store.put("crons", [cron(i, i) for i in range(1, 202)])
    assert store.event_revisions()["crons"] == revision


@pytest.mark.parametrize(
    ("type_name", "raw", "holder"),
    [
        pytest.param("unix-users", user(5, "alice"), "unix-users/1", id="username"),
        pytest.param("fpm-pools", pool(5, 2, "alice-web"), "fpm-pools/1", id="pool-name"),
        pytest.param(
            "virtual-hosts",
            vhost(5, 1, "alice.example.org", "/home/alice/x"),
            "virtual-hosts/1",
            id="domain",
        ),
        pytest.param("crons", cron(5, 1), "crons/3", id="cron-name-per-user"),
        pytest.param("mail-accounts", mail(5), "mail-accounts/1", id="mail-address"),
    ],
)
def test_duplicate_unique_values_are_refused(
    seeded: ObjectStore, type_name: str, raw: dict[str, Any], holder: str
) -> None:
    before = stored_state(seeded)
    with pytest.raises(ValidationFailed) as refused:
        seeded.put(type_name, [raw])
    assert f"{type_name}/5" in str(refused.value)
    assert f"already used by {holder}" in str(refused.value)
    assert stored_state(seeded) == before


def test_uniqueness_counts_the_objects_of_the_same_put(store: ObjectStore) -> None:
    with pytest.raises(ValidationFailed, match="'alice' is already used by unix-users/2"):
        store.put("unix-users", [user(1, "alice"), user(2, "alice")])
    assert stored_state(store) == {}
    # A put may move a unique value between the objects it writes.
    store.put("unix-users", [user(1, "alice")])
    store.put("fpm-pools", [pool(1, 1, "one"), pool(2, 1, "two")])
    store.put("fpm-pools", [pool(1, 1, "two"), pool(2, 1, "one")])
    assert {p.id: p.name for p in store.list("fpm-pools")} == {1: "two", 2: "one"}  # type: ignore[attr-defined]


def test_a_username_cannot_change(store: ObjectStore) -> None:
    """The account, its uid and its home are the user's identity on every node."""
    store.put("unix-users", [user(1, "alice"), user(2, "bob")])
    before = stored_state(store)
    with pytest.raises(ValidationFailed, match="unix-users/1: username: cannot change"):
        store.put("unix-users", [user(1, "bob"), user(2, "alice")])
    assert stored_state(store) == before


def test_a_rewrite_that_breaks_a_referrer_is_refused(seeded: ObjectStore) -> None:
    """Renaming alice moves her home away from her vhost's document root."""
    before = stored_state(seeded)
    with pytest.raises(ValidationFailed, match=r"virtual-hosts/1: document_root.*/home/alicia/"):
        seeded.put("unix-users", [user(1, "alicia")])
    with pytest.raises(ValidationFailed, match="virtual-hosts/1: fpm_pool_id"):
        seeded.put("fpm-pools", [pool(1, 2, "alice-web")])  # the pool moves to bob
    assert stored_state(seeded) == before
    seeded.put("unix-users", [user(1, "alice", shell="/bin/sh")])  # harmless change


def test_php_versions_must_stay_installed(store: ObjectStore) -> None:
    store.put("unix-users", [user(1, "alice")])
    store.put("clusters", [{"id": 1, "php_versions": ["8.2"]}, {"id": 2, "php_versions": ["8.3"]}])
    with pytest.raises(ValidationFailed, match="8.1 is not installed"):
        store.put("fpm-pools", [pool(1, 1, "a", php_version="8.1")])
    store.put("fpm-pools", [pool(1, 1, "a", php_version="8.3")])
    with pytest.raises(ValidationFailed, match="fpm-pools/1: php_version: 8.3 is not installed"):
        store.put("clusters", [{"id": 2, "php_versions": ["8.4"]}])
    before = stored_state(store)
    with pytest.raises(ValidationFailed, match="fpm-pools/1: php_version: 8.3 is not installed"):
        store.delete("clusters", 2)
    assert stored_state(store) == before
    store.delete("clusters", 1)  # 8.2 is unused


# -- deletes -------------------------------------------------------------------------------


def test_delete_refuses_while_referenced_and_names_every_referrer(seeded: ObjectStore) -> None:
    seeded.put("crons", [cron(12, 1, "cleanup")])
    before = stored_state(seeded)
    with pytest.raises(ReferencedObject) as refused:
        seeded.delete("unix-users", 1)
    assert refused.value.referrers == ["crons/3", "crons/12", "fpm-pools/1", "virtual-hosts/1"]
    assert "unix-users/1" in str(refused.value)
    with pytest.raises(ReferencedObject, match="virtual-hosts/1"):
        seeded.delete("fpm-pools", 1)
    assert stored_state(seeded) == before


def test_delete_of_a_missing_object(seeded: ObjectStore) -> None:
    before = stored_state(seeded)
    with pytest.raises(ObjectNotFound, match="crons/404 does not exist"):
        seeded.delete("crons", 404)
    with pytest.raises(ValidationFailed, match="unknown object type"):
        seeded.delete("widgets", 1)
    assert stored_state(seeded) == before


def test_delete_removes_the_object_and_bumps_the_event(seeded: ObjectStore) -> None:
    revision = seeded.delete("crons", 3)
    with pytest.raises(ObjectNotFound):
        seeded.get("crons", 3)
    assert seeded.event_revisions()["crons"] == revision
    seeded.delete("virtual-hosts", 1)
    seeded.delete("fpm-pools", 1)
    assert [u.id for u in seeded.list("unix-users")] == [1, 2]
    seeded.delete("unix-users", 1)
    assert [u.id for u in seeded.list("unix-users")] == [2]


# -- snapshots and event revisions ---------------------------------------------------------


def test_snapshot_holds_every_type_at_one_revision(seeded: ObjectStore) -> None:
    snapshot = seeded.snapshot()
    assert snapshot.revision == seeded.client.current_revision()
    assert [u.username for u in snapshot.all(UnixUser)] == ["alice", "bob"]
    assert [c.id for c in snapshot.all(Cron)] == [3]
    assert snapshot.get(VirtualHost, 1) is not None
    assert len(list(snapshot)) == 8

    seeded.put("unix-users", [user(3, "carol")])
    assert len(seeded.snapshot().all(UnixUser)) == 3
    old = seeded.snapshot(revision=snapshot.revision)
    assert old == snapshot


def test_snapshots_never_see_half_a_write(store: ObjectStore) -> None:
    """A writer rewrites 150 users per put; each snapshot sees one generation only."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        generation = 0
        try:
            while not stop.is_set():
                generation += 1
                email = f"gen{generation}@example.org"
                store.put("unix-users", [user(i, f"u{i}", email=email) for i in range(1, 151)])
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        generations: set[str | None] = set()
        snapshots = 0
        deadline = time.monotonic() + 10
        while (snapshots < 40 or len(generations) < 3) and time.monotonic() < deadline:
            users = store.snapshot().all(UnixUser)
            emails = {u.email for u in users}
            assert len(emails) <= 1, f"a snapshot mixed generations {sorted(map(str, emails))}"
            generations |= emails
            snapshots += 1
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert len(generations) > 1  # the writer really ran during the snapshots


def test_snapshot_refuses_a_stored_value_that_no_longer_validates(
    seeded: ObjectStore, etcd_client: EtcdClient
) -> None:
    key = seeded.object_key("unix-users", 7)
    etcd_client.put(key, json.dumps(user(7, "root")).encode())
    snapshot = seeded.snapshot()  # types are parsed on first use
    assert snapshot.all(Cron), "other types still read"
    with pytest.raises(InvalidStoredObject, match=f"{key}.*reserved") as refused:
        snapshot.all(UnixUser)
    assert refused.value.key == key
    etcd_client.put(key, b"{not json")
    with pytest.raises(InvalidStoredObject, match="not JSON"):
        seeded.list("unix-users")
    etcd_client.put(key, json.dumps(user(8, "eve")).encode())
    with pytest.raises(InvalidStoredObject, match="holds id 8"):
        seeded.get("unix-users", 7)


def test_snapshot_skips_types_it_does_not_know(
    seeded: ObjectStore, etcd_client: EtcdClient
) -> None:
    etcd_client.put(seeded.objects_prefix + "dns-zones/1", b'{"id": 1}')
    assert len(list(seeded.snapshot())) == 8


def test_a_snapshot_reuses_what_an_earlier_one_parsed_unless_its_key_changed(
    seeded: ObjectStore, etcd_client: EtcdClient
) -> None:
    """Unchanged keys give the very object the last snapshot parsed (no validation
    again); a changed, added or deleted key is seen as it is now, and a stored value
    that no longer validates is still refused, however often it was read before.
    (The daemon's store; a one-shot process's parses every snapshot afresh.)"""
    assert seeded.snapshot().all(UnixUser)[0] is not seeded.snapshot().all(UnixUser)[0]
    seeded.reuse_parsed = True
    first = seeded.snapshot()
    alice, bob = first.all(UnixUser)
    cron_before = first.get(Cron, 3)
    seeded.put("unix-users", [user(2, "bob", email="bob@example.org"), user(3, "carol")])
    second = seeded.snapshot()
    users = {u.id: u for u in second.all(UnixUser)}
    assert users[1] is alice  # unchanged: not parsed again
    assert users[2] is not bob and users[2].email == "bob@example.org"
    assert users[3].username == "carol"
    assert second.get(Cron, 3) is cron_before
    seeded.delete("crons", 3)
    assert seeded.snapshot().get(Cron, 3) is None
    # an older revision's snapshot reads that revision's objects, not the cached ones
    old = {u.id: u for u in seeded.snapshot(revision=first.revision).all(UnixUser)}
    assert old[2].email == bob.email and set(old) == {1, 2}
    assert {u.id: u for u in seeded.snapshot().all(UnixUser)}[2].email == "bob@example.org"
    etcd_client.put(seeded.object_key("unix-users", 1), json.dumps(user(1, "root")).encode())
    with pytest.raises(InvalidStoredObject, match="reserved"):
        seeded.snapshot().all(UnixUser)


def test_event_revisions_follow_the_writes(store: ObjectStore) -> None:
    assert store.event_revisions() == {}
    users = store.put("unix-users", [user(1, "alice")])
    crons = store.put("crons", [cron(1, 1)])
    assert store.event_revisions() == {"unix-users": users, "crons": crons}
    deleted = store.delete("crons", 1)
    assert store.event_revisions() == {"unix-users": users, "crons": deleted}
    with pytest.raises(ValidationFailed):
        store.put("crons", [cron(2, 1, schedule="never")])
    assert store.event_revisions() == {"unix-users": users, "crons": deleted}


# -- concurrency ---------------------------------------------------------------------------


def test_a_concurrent_write_between_read_and_commit_is_seen_on_retry(
    store: ObjectStore, etcd_client: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer takes the username after this put read the state: it must retry,
    see it, and refuse, instead of committing a duplicate."""
    other = ObjectStore(etcd_client, store.prefix, writer="other")

    def race(reads: int) -> None:
        if reads == 1:
            other.put("unix-users", [user(2, "alice")])

    racing = race_after_read(monkeypatch, store, race)
    with pytest.raises(ValidationFailed, match="already used by unix-users/2"):
        store.put("unix-users", [user(1, "alice")])
    assert racing.reads == 2
    assert [u.id for u in store.list("unix-users")] == [2]


def test_a_reference_deleted_between_read_and_commit(
    store: ObjectStore, etcd_client: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("unix-users", [user(1, "alice")])
    other = ObjectStore(etcd_client, store.prefix, writer="other")

    def race(reads: int) -> None:
        if reads == 1:
            other.delete("unix-users", 1)

    racing = race_after_read(monkeypatch, store, race)
    with pytest.raises(DanglingReference, match="unix-users/1"):
        store.put("crons", [cron(1, 1)])
    assert racing.reads == 2
    assert store.list("crons") == []


def test_a_write_that_keeps_losing_races_gives_up(
    store: ObjectStore, etcd_client: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = ObjectStore(etcd_client, store.prefix, writer="other")

    def race(reads: int) -> None:
        n = 100 + reads
        other.put("unix-users", [user(n, f"u{n}")])

    race_after_read(monkeypatch, store, race)
    with pytest.raises(StoreError, match="30 times in a row; nothing was stored"):
        store.put("unix-users", [user(1, "alice")])
    assert 1 not in {u.id for u in store.list("unix-users")}


def test_racing_writers_cannot_both_take_a_username(store: ObjectStore) -> None:
    results: list[object] = []
    barrier = threading.Barrier(6)

    def claim(user_id: int) -> None:
        barrier.wait()
        try:
            results.append(store.put("unix-users", [user(user_id, "contested")]))
        except (ValidationFailed, StoreError) as error:
            results.append(error)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([r for r in results if isinstance(r, int)]) == 1
    assert len(store.list("unix-users")) == 1


def test_an_invalid_stored_object_can_be_repaired_by_put_or_delete(
    seeded: ObjectStore, etcd_client: EtcdClient
) -> None:
    """Writes that depend on it refuse; replacing or deleting it is how it is fixed."""
    broken = seeded.object_key("unix-users", 7)
    etcd_client.put(broken, json.dumps(user(7, "dovecot")).encode())
    with pytest.raises(InvalidStoredObject, match="reserved"):
        seeded.put("unix-users", [user(8, "eve")])  # uniqueness needs every user
    seeded.put("unix-users", [user(7, "dove")])
    assert seeded.get("unix-users", 7) == UnixUser(id=7, username="dove")

    etcd_client.put(broken, b"garbage")
    seeded.delete("unix-users", 7)
    assert [u.id for u in seeded.list("unix-users")] == [1, 2]


def test_a_vhost_cannot_serve_a_name_another_vhost_serves(store: ObjectStore) -> None:
    store.put("unix-users", [user(1, "alice"), user(2, "bob")])
    store.put(
        "virtual-hosts",
        [
            vhost(
                1,
                1,
                "alice.example.com",
                "/home/alice/www",
                server_aliases=["www.alice.example.com"],
            )
        ],
    )
    before = stored_state(store)
    hijack = vhost(
        2, 2, "bob.example.com", "/home/bob/www", server_aliases=["www.alice.example.com"]
    )
    with pytest.raises(
        ValidationFailed, match="www.alice.example.com already served by virtual-hosts/1"
    ):
        store.put("virtual-hosts", [hijack])
    twice = vhost(2, 2, "bob.example.com", "/home/bob/www", server_aliases=["bob.example.com"])
    with pytest.raises(ValidationFailed, match="bob.example.com given twice"):
        store.put("virtual-hosts", [twice])
    assert stored_state(store) == before
