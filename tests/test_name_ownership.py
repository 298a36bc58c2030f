"""Wildcard carve-outs (issue 15, finding 4): no owner takes another owner's names.

nginx serves a ``Host`` by its exact name first, then by the longest ``*.`` wildcard. So
bob's ``*.bob.example.net`` loses ``x.bob.example.net`` to alice if alice may list it,
and alice's ``*.example.net`` takes every name below it that nobody lists. The writer
refuses, both ways and against a real etcd, a name another owner's wildcard covers and a
wildcard that covers another owner's name; the same owner may overlap with itself. A
wildcard directly under a public suffix (``*.co.uk``) is refused on its own. Each
refusal names the object and the field and stores nothing.
"""

from __future__ import annotations

from itertools import product
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_store import stored_state, user, vhost

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed
from ccm.models import parse_object
from ccm.models.names import ServedNames, ServerName, canonical, is_public_suffix, overlap
from configurations.virtual_hosts import VirtualHost

ALICE, BOB = 1, 2


@pytest.fixture
def bob(store: ObjectStore) -> ObjectStore:
    """alice and bob; bob serves bob.example.net with the alias *.bob.example.net."""
    store.put("unix-users", [user(ALICE, "alice"), user(BOB, "bob")])
    store.put("virtual-hosts", [site(1, BOB, "bob.example.net", "*.bob.example.net")])
    return store


def site(id: int, owner: int, domain: str, *aliases: str) -> dict[str, Any]:
    home = "/home/alice" if owner == ALICE else "/home/bob"
    return vhost(id, owner, domain, f"{home}/www{id}", server_aliases=list(aliases))


def refused(store: ObjectStore, *objects: dict[str, Any]) -> str:
    """The put is refused, stores nothing; its message."""
    before = stored_state(store)
    with pytest.raises(ValidationFailed) as caught:
        store.put("virtual-hosts", list(objects))
    assert stored_state(store) == before
    return str(caught.value)


# -- the finding: a name below another owner's wildcard ------------------------------------


@pytest.mark.parametrize(
    ("domain", "aliases", "field"),
    [
        ("x.bob.example.net", (), "domain"),
        ("a.b.bob.example.net", (), "domain"),  # any depth: nginx's * spans labels
        ("alice.example.org", ("x.bob.example.net",), "server_aliases"),
        ("alice.example.org", ("*.x.bob.example.net",), "server_aliases"),  # longer wildcard
    ],
)
def test_a_name_inside_another_owners_wildcard_is_refused(
    bob: ObjectStore, domain: str, aliases: tuple[str, ...], field: str
) -> None:
    message = refused(bob, site(2, ALICE, domain, *aliases))
    assert f"virtual-hosts/2: {field}: " in message
    assert "is covered by *.bob.example.net, served by virtual-hosts/1" in message
    assert "(unix-users/2)" in message


@pytest.mark.parametrize(
    ("wildcard", "covered"),
    [
        ("*.bob.example.net", "x.bob.example.net"),
        ("*.example.net", "x.bob.example.net"),  # two levels up
        ("*.bob.example.net", "*.x.bob.example.net"),  # a wildcard over a longer one
    ],
)
def test_a_wildcard_over_another_owners_name_is_refused(
    store: ObjectStore, wildcard: str, covered: str
) -> None:
    """The other direction: the name exists first, then the wildcard is written."""
    store.put("unix-users", [user(ALICE, "alice"), user(BOB, "bob")])
    store.put("virtual-hosts", [site(1, ALICE, "alice.example.org", covered)])
    message = refused(store, site(2, BOB, "bob.example.net", wildcard))
    assert f"virtual-hosts/2: server_aliases: {wildcard} covers {covered}" in message
    assert "served by virtual-hosts/1 (alice.example.org)" in message


def test_a_wildcard_over_another_owners_domain_is_refused(bob: ObjectStore) -> None:
    message = refused(bob, site(2, ALICE, "alice.example.org", "*.example.net"))
    assert "server_aliases: *.example.net covers bob.example.net" in message
    assert "server_aliases: *.example.net covers *.bob.example.net" in message


def test_giving_a_vhost_to_another_owner_is_checked_too(bob: ObjectStore) -> None:
    bob.put("virtual-hosts", [site(2, BOB, "x.bob.example.net")])  # bob's own: fine
    moved = vhost(2, ALICE, "x.bob.example.net", "/home/alice/www")
    assert "domain: x.bob.example.net is covered by" in refused(bob, moved)


def test_one_put_of_both_is_refused(store: ObjectStore) -> None:
    """Written together, in one put, each sees the other."""
    store.put("unix-users", [user(ALICE, "alice"), user(BOB, "bob")])
    message = refused(
        store,
        site(1, BOB, "bob.example.net", "*.bob.example.net"),
        site(2, ALICE, "x.bob.example.net"),
    )
    assert "virtual-hosts/1: server_aliases: *.bob.example.net covers x.bob.example.net" in message
    assert "virtual-hosts/2: domain: x.bob.example.net is covered by" in message


# -- what stays allowed -------------------------------------------------------------------


def test_the_same_owner_may_overlap_with_itself(bob: ObjectStore) -> None:
    bob.put(
        "virtual-hosts",
        [
            site(2, BOB, "x.bob.example.net"),
            site(3, BOB, "shop.example.org", "*.x.bob.example.net"),
            site(4, BOB, "bob.example.org", "*.example.net"),
        ],
    )
    assert [v.id for v in bob.list("virtual-hosts")] == [1, 2, 3, 4]


def test_the_name_a_wildcard_stands_on_is_not_covered(store: ObjectStore) -> None:
    """``*.bob.example.net`` does not match ``bob.example.net`` itself (nginx), so the two
    may have different owners; siblings and parents are not covered either."""
    store.put("unix-users", [user(ALICE, "alice"), user(BOB, "bob")])
    store.put("virtual-hosts", [site(1, BOB, "shop.example.org", "*.bob.example.net")])
    store.put(
        "virtual-hosts",
        [
            site(2, ALICE, "bob.example.net"),
            site(3, ALICE, "example.net", "xbob.example.net", "*.ob.example.net"),
        ],
    )
    assert [v.id for v in store.list("virtual-hosts")] == [1, 2, 3]


# -- public suffixes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "wildcard", ["*.co.uk", "*.com.au", "*.github.io", "*.xn--55qx5d.xn--j6w193g"]
)
def test_a_wildcard_directly_under_a_public_suffix_is_refused(wildcard: str) -> None:
    raw = vhost(1, ALICE, "alice.example.org", "/home/alice/www", server_aliases=[wildcard])
    with pytest.raises(ValidationFailed) as caught:
        parse_object("virtual-hosts", raw)
    message = str(caught.value)
    assert "virtual-hosts/1: server_aliases.0: " in message
    assert f"directly under the public suffix {wildcard[2:]!r}" in message


@pytest.mark.parametrize("wildcard", ["*.shop.co.uk", "*.alice.github.io", "*.example.net"])
def test_a_wildcard_below_a_registered_domain_is_allowed(wildcard: str) -> None:
    raw = vhost(1, ALICE, "alice.example.org", "/home/alice/www", server_aliases=[wildcard])
    assert isinstance(parse_object("virtual-hosts", raw), VirtualHost)


def test_the_public_suffix_list_is_the_bundled_one() -> None:
    """No network: the list in the installed package answers, ICANN and private parts."""
    assert is_public_suffix("co.uk") and is_public_suffix("github.io")
    assert is_public_suffix("CO.UK.")  # compared as nginx compares names
    assert not is_public_suffix("example.co.uk") and not is_public_suffix("example.net")


# -- comparing as nginx does --------------------------------------------------------------


def test_case_and_a_trailing_dot_do_not_make_another_name() -> None:
    """The models refuse both spellings; the comparison holds without them too."""
    for spelling in ("X.Bob.example.net", "x.bob.example.net."):
        with pytest.raises(ValidationFailed):
            parse_object("virtual-hosts", vhost(2, ALICE, spelling, "/home/alice/www"))
    assert canonical("X.Bob.Example.NET.") == "x.bob.example.net"
    assert overlap("X.BOB.example.net.", "*.Bob.Example.Net")
    assert overlap("*.EXAMPLE.net.", "a.b.example.net")


@pytest.mark.parametrize(
    ("one", "other", "shared"),
    [
        ("x.example.net", "*.example.net", True),
        ("a.b.example.net", "*.example.net", True),
        ("example.net", "*.example.net", False),
        ("xexample.net", "*.example.net", False),
        ("*.a.example.net", "*.example.net", True),
        ("*.example.net", "*.example.net", True),
        ("*.example.org", "*.example.net", False),
        ("x.example.net", "y.example.net", False),
        ("x.example.net", "x.example.net", True),
        # nginx's ".example.net": the name and everything below it
        (".example.net", "example.net", True),
        (".example.net", "a.example.net", True),
        (".example.net", "*.a.example.net", True),
        (".a.example.net", "*.example.net", True),
        (".example.net", "example.org", False),
    ],
)
def test_overlap_follows_nginx(one: str, other: str, shared: bool) -> None:
    assert overlap(one, other) is shared
    assert overlap(other, one) is shared


def test_a_server_name_knows_what_it_matches() -> None:
    wildcard = ServerName.parse("*.example.net")
    assert wildcard.matches("a.example.net") and wildcard.matches("a.b.example.net")
    assert not wildcard.matches("example.net") and not wildcard.matches("aexample.net")
    both = ServerName.parse(".example.net")
    assert both.matches("example.net") and both.matches("a.example.net")
    assert ServerName.parse("example.net").matches("example.net")
    assert not ServerName.parse("example.net").matches("a.example.net")


# -- the index agrees with the pairwise rule, and the rule with brute force ----------------

_DOMAINS = [".".join(labels) + ".t" for n in (1, 2, 3) for labels in product("ab", repeat=n)]
_NAMES = [*_DOMAINS, *("*." + d for d in _DOMAINS), *("." + d for d in _DOMAINS)]
#: every host up to one label deeper than the deepest name
_HOSTS = [".".join(labels) + ".t" for n in (1, 2, 3, 4) for labels in product("ab", repeat=n)]


def _nginx_matches(name: str, host: str) -> bool:
    if name.startswith("*."):
        return host.endswith(name[1:])
    if name.startswith("."):
        return host == name[1:] or host.endswith(name)
    return host == name


@pytest.mark.parametrize("one", _NAMES)
def test_overlap_is_a_shared_host(one: str) -> None:
    for other in _NAMES:
        shared = any(_nginx_matches(one, h) and _nginx_matches(other, h) for h in _HOSTS)
        assert overlap(one, other) is shared, (one, other)


@settings(max_examples=300, deadline=None)
@given(
    mine=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3),
    theirs=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3),
)
def test_the_index_agrees_with_every_pair(mine: list[str], theirs: list[str]) -> None:
    pairwise = any(overlap(a, b) for a in mine for b in theirs)
    assert ServedNames(mine).overlaps(ServedNames(theirs)) is pairwise
