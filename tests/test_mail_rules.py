"""The mail types' write-time rules against a real etcd: ownership of a domain's web name,
an address held by an alias and an account at once, forwarding loops inside the
cluster, password hashes and hostile addresses. Every refusal names the object, the
field and the reason, echoes no hash, and stores nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed

SHA512 = "{SHA512-CRYPT}$6$saltsalt$" + "A" * 86
BLF = "{BLF-CRYPT}$2y$10$" + "b" * 53
ARGON = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0$" + "h" * 43


def domain(id: int, name: str, owner: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": id, "domain": name, "unix_user_id": owner, **extra}


def account(id: int, local_part: str, domain_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "local_part": local_part,
        "mail_domain_id": domain_id,
        "password_hash": SHA512,
        **extra,
    }


def alias(id: int, local_part: str, targets: list[str], domain_id: int = 1) -> dict[str, Any]:
    return {
        "id": id,
        "local_part": local_part,
        "mail_domain_id": domain_id,
        "forward_addresses": targets,
    }


def stored(store: ObjectStore) -> dict[str, int]:
    kvs, _ = store.client.get_prefix(store.prefix + "/")
    return {kv.key: kv.mod_revision for kv in kvs}


def refused(store: ObjectStore, type_name: str, raw: dict[str, Any], *reasons: str) -> str:
    """Put ``raw``: it must be refused for each reason, and nothing stored."""
    before = stored(store)
    with pytest.raises(ValidationFailed) as caught:
        store.put(type_name, [raw])
    text = "\n".join(caught.value.problems)
    for reason in reasons:
        assert reason in text, text
    assert stored(store) == before
    return text


@pytest.fixture
def mail_store(store: ObjectStore) -> ObjectStore:
    store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    store.put("mail-domains", [domain(1, "example.com"), domain(2, "example.net", owner=2)])
    return store


def test_an_alias_cannot_take_an_accounts_address_nor_the_reverse(mail_store: ObjectStore) -> None:
    mail_store.put("mail-accounts", [account(1, "info")])
    refused(
        mail_store,
        "mail-aliases",
        alias(1, "info", ["x@example.org"]),
        "mail-aliases/1: local_part: info@example.com is already the address of mail-accounts/1",
    )
    mail_store.put("mail-aliases", [alias(2, "sales", ["x@example.org"])])
    refused(
        mail_store,
        "mail-accounts",
        account(2, "sales"),
        "mail-accounts/2: local_part: sales@example.com is already the address of mail-aliases/2",
    )
    # the same local part in another domain is another address
    mail_store.put("mail-accounts", [account(3, "sales", domain_id=2)])


def test_two_accounts_or_aliases_never_share_an_address(mail_store: ObjectStore) -> None:
    mail_store.put("mail-accounts", [account(1, "info")])
    refused(mail_store, "mail-accounts", account(2, "info"), "address")
    mail_store.put("mail-aliases", [alias(1, "sales", ["x@example.org"])])
    refused(mail_store, "mail-aliases", alias(2, "sales", ["y@example.org"]), "address")


def test_a_forwarding_loop_between_aliases_is_refused(mail_store: ObjectStore) -> None:
    mail_store.put("mail-aliases", [alias(1, "a", ["b@example.net"])])
    refused(
        mail_store,
        "mail-aliases",
        alias(2, "b", ["x@example.org", "A@example.com"], 2),
        "mail-aliases/2: forward_addresses: forwarding loop inside the cluster: "
        "b@example.net -> a@example.com -> b@example.net",
    )
    refused(mail_store, "mail-aliases", alias(3, "self", ["self@example.com"]), "forwarding loop")
    # ending in a mailbox or outside the cluster is no loop
    mail_store.put("mail-accounts", [account(1, "box", domain_id=2)])
    mail_store.put("mail-aliases", [alias(2, "b", ["box@example.net", "a@example.org"], 2)])


def test_catch_all_loops_are_refused_both_ways(mail_store: ObjectStore) -> None:
    mail_store.put("mail-accounts", [account(1, "info")])
    # example.com's catch-all goes to its own mailbox: no loop while the account exists
    mail_store.put(
        "mail-domains", [domain(1, "example.com", catch_all_forward_addresses=["info@example.com"])]
    )
    before = stored(mail_store)
    with pytest.raises(ValidationFailed) as caught:  # without it, the catch-all catches itself
        mail_store.delete("mail-accounts", 1)
    assert "mail-domains/1: catch_all_forward_addresses: forwarding loop" in str(caught.value)
    assert "catch-all @example.com" in str(caught.value)
    assert stored(mail_store) == before
    # two catch-alls that send unknown addresses to each other's unknown addresses
    mail_store.put(
        "mail-domains",
        [domain(2, "example.net", owner=2, catch_all_forward_addresses=["x@example.com"])],
    )
    refused(
        mail_store,
        "mail-domains",
        domain(1, "example.com", catch_all_forward_addresses=["nobody@example.net"]),
        "mail-domains/1: catch_all_forward_addresses: forwarding loop inside the cluster: "
        "catch-all @example.com -> catch-all @example.net -> catch-all @example.com",
    )
    # an alias that closes a loop through a catch-all
    refused(
        mail_store,
        "mail-aliases",
        alias(1, "x", ["y@example.net"]),
        "mail-aliases/1: forward_addresses: forwarding loop inside the cluster: "
        "x@example.com -> catch-all @example.net -> x@example.com",
    )


def test_a_domain_that_is_not_local_routes_nothing(mail_store: ObjectStore) -> None:
    mail_store.put("mail-domains", [domain(2, "example.net", owner=2, is_local=False)])
    mail_store.put("mail-aliases", [alias(1, "a", ["b@example.net"])])
    mail_store.put("mail-aliases", [alias(2, "b", ["a@example.com"], 2)])  # leaves for its MX


def test_a_mail_domain_has_the_owner_of_its_web_name_both_ways(mail_store: ObjectStore) -> None:
    mail_store.put(
        "virtual-hosts",
        [
            {
                "id": 1,
                "domain": "shop.example.org",
                "unix_user_id": 1,
                "document_root": "/home/alice/shop",
                "server_aliases": ["*.alice.example.org"],
            }
        ],
    )
    refused(
        mail_store,
        "mail-domains",
        domain(3, "shop.example.org", owner=2),
        "mail-domains/3: domain: shop.example.org is served as shop.example.org by "
        "virtual-hosts/1 of another owner (unix-users/1)",
    )
    refused(
        mail_store,
        "mail-domains",
        domain(3, "mail.alice.example.org", owner=2),
        "served as *.alice.example.org by virtual-hosts/1",
    )
    mail_store.put("mail-domains", [domain(3, "shop.example.org", owner=1)])
    # the other way: a vhost written later may not serve another owner's mail domain
    mail_store.put("mail-domains", [domain(4, "bob.example.org", owner=2)])
    text = refused(
        mail_store,
        "virtual-hosts",
        {
            "id": 2,
            "domain": "bob.example.org",
            "unix_user_id": 1,
            "document_root": "/home/alice/bob",
        },
        "mail-domains/4: domain",
    )
    assert "virtual-hosts/2" in text


@pytest.mark.parametrize(
    "password_hash", [SHA512, BLF, ARGON, "{SHA512-CRYPT}$6$rounds=5000$salt$" + "x" * 86]
)
def test_the_safe_crypt_schemes_are_taken(mail_store: ObjectStore, password_hash: str) -> None:
    mail_store.put("mail-accounts", [account(1, "info", password_hash=password_hash)])


@pytest.mark.parametrize(
    "password_hash",
    [
        "{PLAIN}secret-password",
        "{CLEARTEXT}secret-password",
        "{PLAIN}$1$x$y",  # the old pattern took this
        "$6$saltsalt$" + "A" * 86,  # no scheme: Dovecot's default scheme decides
        "{MD5-CRYPT}$1$saltsalt$" + "A" * 22,
        "{SHA512-CRYPT}$6$saltsalt$" + "A" * 85,
        SHA512 + "\nroot::0:0",
        SHA512 + ":x",
    ],
)
def test_other_hashes_are_refused_without_echoing_them(
    mail_store: ObjectStore, password_hash: str
) -> None:
    text = refused(
        mail_store,
        "mail-accounts",
        account(1, "info", password_hash=password_hash),
        "mail-accounts/1",
        "password_hash",
        "{SHA512-CRYPT}",
    )
    assert password_hash not in text and "secret-password" not in text


@pytest.mark.parametrize(
    ("type_name", "raw", "field"),
    [
        ("mail-aliases", alias(1, "a", ["x@example.org\nroot@example.com"]), "forward_addresses"),
        ("mail-aliases", alias(1, "a", ["x@example.org,y@example.org"]), "forward_addresses"),
        ("mail-aliases", alias(1, "a", ["x y@example.org"]), "forward_addresses"),
        ("mail-aliases", alias(1, "a", ["x@Example.org"]), "forward_addresses"),
        ("mail-aliases", alias(1, "a", []), "forward_addresses"),
        (
            "mail-aliases",
            alias(1, "a", [f"u{i}@example.org" for i in range(51)]),
            "forward_addresses",
        ),
        ("mail-aliases", alias(1, "a" * 65, ["x@example.org"]), "local_part"),
        ("mail-aliases", alias(1, "Info", ["x@example.org"]), "local_part"),
        ("mail-aliases", alias(1, "a\n", ["x@example.org"]), "local_part"),
        ("mail-accounts", account(1, "info@x"), "local_part"),
        ("mail-accounts", account(1, "in:fo"), "local_part"),
        ("mail-domains", domain(3, "example.org\n"), "domain"),
        (
            "mail-domains",
            domain(3, "example.org", catch_all_forward_addresses=["@example.com"]),
            "catch_all_forward_addresses",
        ),
        ("mail-domains", domain(3, "example.org", is_local="yes"), "is_local"),
    ],
)
def test_hostile_addresses_are_refused(
    mail_store: ObjectStore, type_name: str, raw: dict[str, Any], field: str
) -> None:
    refused(mail_store, type_name, raw, field)


def test_a_mail_domain_keeps_its_name(mail_store: ObjectStore) -> None:
    refused(mail_store, "mail-domains", domain(1, "example.org"), "domain: cannot change")


def test_a_mail_domain_has_the_owner_of_a_redirects_name_both_ways(
    mail_store: ObjectStore,
) -> None:
    redirect = {
        "id": 1,
        "domain": "go.example.org",
        "unix_user_id": 1,
        "destination_url": "https://example.com/",
    }
    mail_store.put("url-redirects", [redirect])
    refused(
        mail_store,
        "mail-domains",
        domain(3, "go.example.org", owner=2),
        "mail-domains/3: domain: go.example.org is served as go.example.org by "
        "url-redirects/1 of another owner (unix-users/1)",
    )
    mail_store.put("mail-domains", [domain(4, "bob.example.org", owner=2)])
    refused(
        mail_store,
        "url-redirects",
        {**redirect, "id": 2, "domain": "bob.example.org"},
        "mail-domains/4",
    )
