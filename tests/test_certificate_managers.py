"""``certificate-managers``: only names a server block of the same owner serves, checked
when the manager is written and again when a vhost or redirect is (both ways). The
ordering itself, against a real ACME server: ``tests/test_acme*.py``."""

from __future__ import annotations

from typing import Any

import pytest

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed
from ccm.models import parse_object


def vhost(id: int, domain: str, user: int = 1, **extra: Any) -> dict[str, Any]:
    home = {1: "alice", 2: "bob"}[user]
    return {
        "id": id,
        "domain": domain,
        "unix_user_id": user,
        "document_root": f"/home/{home}/www",
        **extra,
    }


def manager(*names: str, id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": id, "common_names": list(names), **extra}


@pytest.fixture
def sites(store: ObjectStore) -> ObjectStore:
    store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    store.put(
        "virtual-hosts",
        [
            vhost(1, "alice.example.com", server_aliases=["www.alice.example.com"]),
            vhost(2, "shop.example.com", server_aliases=["*.shop.example.com"]),
            vhost(3, "bob.example.net", user=2),
        ],
    )
    store.put(
        "url-redirects",
        [
            {
                "id": 1,
                "domain": "go.alice.example.com",
                "unix_user_id": 1,
                "destination_url": "https://alice.example.com/",
            }
        ],
    )
    return store


def refusal(store: ObjectStore, type_name: str, objects: Any) -> str:
    with pytest.raises(ValidationFailed) as refused:
        store.put(type_name, objects if isinstance(objects, list) else [objects])
    return "\n".join(refused.value.problems)


def test_names_an_owner_serves_through_vhosts_redirects_and_wildcards(sites: ObjectStore) -> None:
    names = ("alice.example.com", "www.alice.example.com", "go.alice.example.com")
    sites.put("certificate-managers", [manager(*names, "a.shop.example.com", unix_user_id=1)])
    sites.put("certificate-managers", [manager("bob.example.net", id=2)])  # no owner given
    stored = {m.id: m for m in sites.list("certificate-managers")}
    assert stored[1].common_names == [*names, "a.shop.example.com"]


def test_a_name_nobody_serves_is_refused_and_nothing_stored(sites: ObjectStore) -> None:
    problem = refusal(
        sites, "certificate-managers", manager("alice.example.com", "mail.alice.example.com")
    )
    assert problem.startswith("certificate-managers/1: common_names: mail.alice.example.com ")
    assert "served by no virtual host or redirect" in problem
    assert sites.list("certificate-managers") == []


def test_another_owners_name_is_refused(sites: ObjectStore) -> None:
    problem = refusal(
        sites,
        "certificate-managers",
        manager("alice.example.com", "bob.example.net", unix_user_id=1),
    )
    assert problem == (
        "certificate-managers/1: common_names: bob.example.net is served by "
        "virtual-hosts/3 of unix-users/2, not of this manager's owner unix-users/1"
    )


def test_without_an_owner_the_names_must_share_one(sites: ObjectStore) -> None:
    problem = refusal(
        sites, "certificate-managers", manager("alice.example.com", "bob.example.net")
    )
    assert "the names belong to more than one owner" in problem
    assert "unix-users/1: alice.example.com; unix-users/2: bob.example.net" in problem


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["*.alice.example.com"], "common_names.0"),
        (["alice.example.com", "ALICE.example.com"], "common_names.1"),
        (["alice.example.com", "alice.example.com"], "given twice"),
        ([], "at least 1 item"),
        ([f"n{i}.alice.example.com" for i in range(101)], "at most 100 items"),
        (["alice.example.com\n"], "common_names.0"),
    ],
)
def test_bad_names_are_refused_naming_the_field(names: list[str], reason: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("certificate-managers", manager(*names))
    problems = "\n".join(refused.value.problems)
    assert problems.startswith("certificate-managers/1: common_names"), problems
    assert reason in problems


def test_a_vhost_cannot_drop_or_lose_a_managed_name(sites: ObjectStore) -> None:
    """Both ways: the manager's rule runs when a vhost or redirect is written."""
    sites.put("certificate-managers", [manager("www.alice.example.com", "go.alice.example.com")])
    problem = refusal(sites, "virtual-hosts", vhost(1, "alice.example.com"))  # alias dropped
    assert "certificate-managers/1: common_names: www.alice.example.com is served by no" in problem
    with pytest.raises(ValidationFailed) as refused:
        sites.delete("url-redirects", 1)
    assert "certificate-managers/1: common_names: go.alice.example.com" in "\n".join(
        refused.value.problems
    )
    assert {r.id for r in sites.list("url-redirects")} == {1}  # nothing changed
